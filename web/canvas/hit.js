// @ts-check
/**
 * Hit testing in graph coordinates: which slot, widget, title, node, link centre or group title
 * is under a point, and which slot a dragged link may be dropped on. Pure (no DOM).
 */

import { linkRefusal, slotType } from "../graph/effective_types.js";
import { typesCompatible } from "../graph/types.js";
import { textWidth } from "./layout.js";
import { GROUP_TITLE_H, SLOT_H, WIDGET_H } from "./theme.js";

/**
 * @typedef {import("../graph/model.js").Node} Node
 * @typedef {import("./layout.js").NodeLayout} NodeLayout
 * @typedef {import("./layout.js").WidgetRow} WidgetRow
 * @typedef {object} Scene
 * @property {import("../graph/model.js").Graph} graph
 * @property {(node: Node) => NodeLayout} layout
 * @property {() => Node[]} order nodes in drawing order (the last one is on top)
 * @property {Map<number, number[]>} linkCenters graph-space centre of each drawn link
 * @property {number} scale the viewport's zoom
 * @typedef {{kind: "slot", nodeId: number, direction: "input"|"output", slot: number}
 *   | {kind: "widget", nodeId: number, row: WidgetRow, local: number[]}
 *   | {kind: "collapse" | "title" | "resize" | "node", nodeId: number}
 *   | {kind: "group-title" | "group-resize", group: import("../graph/model.js").Group}
 *   | {kind: "link-center", linkId: number}} Hit
 * @typedef {{nodeId: number, slot: number, direction: "input"|"output", type: any}} LinkEnd
 */

/**
 * @param {Scene} scene
 * @param {number} x graph space
 * @param {number} y
 * @returns {Hit | null}
 */
export function hitTest(scene, x, y) {
  const nodes = scene.order();
  const tolerance = Math.max(8, 6 / scene.scale);
  for (let index = nodes.length - 1; index >= 0; index--) {
    const hit = hitNode(nodes[index], scene.layout(nodes[index]), x, y, tolerance);
    if (hit) return hit;
  }
  const radius = Math.max(8, 6 / scene.scale);
  for (const [linkId, center] of scene.linkCenters) {
    if (Math.abs(center[0] - x) <= radius && Math.abs(center[1] - y) <= radius) return { kind: "link-center", linkId };
  }
  const groups = scene.graph.groups;
  for (let index = groups.length - 1; index >= 0; index--) {
    const group = groups[index];
    const [gx, gy, gw, gh] = group.bounding;
    if (x >= gx + gw - 14 && x <= gx + gw && y >= gy + gh - 14 && y <= gy + gh) return { kind: "group-resize", group };
    if (x >= gx && x <= gx + gw && y >= gy && y <= gy + GROUP_TITLE_H) return { kind: "group-title", group };
  }
  return null;
}

/**
 * @param {Node} node
 * @param {NodeLayout} layout
 * @param {number} x
 * @param {number} y
 * @param {number} tol
 * @returns {Hit | null}
 */
export function hitNode(node, layout, x, y, tol) {
  const lx = x - node.pos[0];
  const ly = y - node.pos[1];
  if (lx < -tol || lx > layout.w + tol || ly < -layout.titleH - 2 || ly > layout.h + 2) return null;
  const nodeId = node.id;
  const slot = hitSlot(layout, lx, ly, tol);
  if (slot) return { kind: "slot", nodeId, ...slot };
  if (lx < 0 || lx > layout.w) return null;
  if (layout.reroute) return { kind: "node", nodeId };
  if (ly < 0) return lx < 24 ? { kind: "collapse", nodeId } : { kind: "title", nodeId };
  if (lx > layout.w - 12 && ly > layout.h - 12) return { kind: "resize", nodeId };
  for (const row of layout.widgets) {
    if (ly >= row.y && ly < row.y + row.h && lx >= 10 && lx <= layout.w - 10) {
      return { kind: "widget", nodeId, row, local: [lx, ly - row.y] };
    }
  }
  return { kind: "node", nodeId };
}

/**
 * @param {NodeLayout} layout
 * @param {number} lx
 * @param {number} ly
 * @param {number} tol
 * @returns {{direction: "input"|"output", slot: number} | null}
 */
function hitSlot(layout, lx, ly, tol) {
  const half = layout.collapsed ? layout.titleH / 2 : Math.max(SLOT_H / 2, tol);
  for (let slot = 0; slot < layout.inputs.length; slot++) {
    const place = layout.inputs[slot];
    if (Math.abs(ly - place.y) > (place.onWidget ? WIDGET_H / 2 : half)) continue;
    const reach = place.onWidget || layout.collapsed ? tol : Math.min(layout.w / 2, textWidth(place.label) + 20);
    if (lx >= -tol && lx <= reach) return { direction: "input", slot };
  }
  for (let slot = 0; slot < layout.outputs.length; slot++) {
    const place = layout.outputs[slot];
    if (Math.abs(ly - place.y) > half) continue;
    const reach = layout.collapsed ? tol : Math.min(layout.w / 2, textWidth(place.label) + 20);
    if (lx >= layout.w - reach && lx <= layout.w + tol) return { direction: "output", slot };
  }
  return null;
}

/**
 * Can a link dragged from `from` end on this slot of `node`? With the graph, reroutes count with
 * the type flowing through them and a PrimitiveNode only feeds widget inputs.
 * @param {LinkEnd} from
 * @param {Node} node
 * @param {"input"|"output"} direction
 * @param {number} slot
 * @param {import("../graph/model.js").Graph} [graph]
 */
export function canLink(from, node, direction, slot, graph) {
  if (node.id === from.nodeId || direction === from.direction) return false;
  const other = graph && graph.nodes.get(from.nodeId);
  if (direction === "input") {
    const inp = node.inputs[slot];
    if (!inp) return false;
    if (other && linkRefusal(other, inp)) return false;
    return typesCompatible(from.type, graph ? slotType(graph, node, "input", slot) : inp.type);
  }
  const out = node.outputs[slot];
  if (!out) return false;
  const inp = other && other.inputs[from.slot];
  if (inp && linkRefusal(node, inp)) return false;
  return typesCompatible(graph ? slotType(graph, node, "output", slot) : out.type, from.type);
}

/**
 * Where a dragged link would land at (x, y): a compatible slot under the point, a compatible
 * widget row (converted to an input on drop), or the first compatible free slot of the node
 * under the point. null when nothing there accepts it.
 * @param {Scene} scene
 * @param {LinkEnd} from
 * @param {number} x
 * @param {number} y
 * @param {Record<string, any>} objectInfo
 * @returns {{nodeId: number, direction: "input"|"output", slot: number, widget?: string} | null}
 */
export function findDropTarget(scene, from, x, y, objectInfo) {
  const hit = hitTest(scene, x, y);
  if (!hit || !("nodeId" in hit)) return null;
  const node = scene.graph.nodes.get(hit.nodeId);
  if (!node || node.id === from.nodeId) return null;
  if (hit.kind === "slot") {
    return canLink(from, node, hit.direction, hit.slot, scene.graph) ? { nodeId: node.id, direction: hit.direction, slot: hit.slot } : null;
  }
  if (hit.kind === "widget" && from.direction === "output" && hit.row.slotKind === "value" && hit.row.decl && !hit.row.direct) {
    if (hit.row.inputSlot >= 0) {
      return canLink(from, node, "input", hit.row.inputSlot, scene.graph) ? { nodeId: node.id, direction: "input", slot: hit.row.inputSlot } : null;
    }
    if (objectInfo[node.type] && typesCompatible(from.type, hit.row.decl.type)) {
      return { nodeId: node.id, direction: "input", slot: -1, widget: hit.row.name };
    }
    return null;
  }
  const want = from.direction === "output" ? "input" : "output";
  const slots = want === "input" ? node.inputs : node.outputs;
  const free = slots.findIndex((s, slot) => canLink(from, node, want, slot, scene.graph) && (want === "output" || /** @type {any} */ (s).link === null));
  const any = free >= 0 ? free : slots.findIndex((_, slot) => canLink(from, node, want, slot, scene.graph));
  return any >= 0 ? { nodeId: node.id, direction: want, slot: any } : null;
}

/**
 * Ids of nodes whose rectangle overlaps the graph-space box [x, y, w, h] (any drag direction).
 * @param {Scene} scene
 * @param {number[]} box
 */
export function nodesInBox(scene, box) {
  const x0 = Math.min(box[0], box[0] + box[2]);
  const y0 = Math.min(box[1], box[1] + box[3]);
  const x1 = Math.max(box[0], box[0] + box[2]);
  const y1 = Math.max(box[1], box[1] + box[3]);
  /** @type {number[]} */
  const ids = [];
  for (const node of scene.order()) {
    const layout = scene.layout(node);
    const top = node.pos[1] - layout.titleH;
    if (node.pos[0] < x1 && node.pos[0] + layout.w > x0 && top < y1 && node.pos[1] + layout.h > y0) ids.push(node.id);
  }
  return ids;
}

/**
 * Ids of the nodes lying entirely inside a group (they move with it).
 * @param {Scene} scene
 * @param {import("../graph/model.js").Group} group
 */
export function nodesInGroup(scene, group) {
  const [gx, gy, gw, gh] = group.bounding;
  /** @type {number[]} */
  const ids = [];
  for (const node of scene.order()) {
    const layout = scene.layout(node);
    const top = node.pos[1] - layout.titleH;
    if (node.pos[0] >= gx && top >= gy && node.pos[0] + layout.w <= gx + gw && node.pos[1] + layout.h <= gy + gh) ids.push(node.id);
  }
  return ids;
}
