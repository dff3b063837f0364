// @ts-check
/**
 * Drawing the graph on a 2D context: grid, groups, links (batched per colour into one path),
 * nodes (render_node.js), the link being dragged and the selection box.
 * Offscreen nodes and links are culled; zoomed out, text and then detail are dropped.
 */

import { linkType, rerouteType } from "../graph/effective_types.js";
import { REROUTE_TYPES } from "../graph/virtual.js";
import { nodeBounds } from "./layout.js";
import { drawNode } from "./render_node.js";
import { FONT_GROUP, GROUP_TITLE_H, LOD_BOXES, SLOT_R, theme, typeColor } from "./theme.js";
import { overlaps } from "./viewport.js";
import { TEXTAREA_MIN_SCALE } from "../widgets/multiline.js";

/**
 * @typedef {import("../graph/model.js").Node} Node
 * @typedef {import("./layout.js").NodeLayout} NodeLayout
 * @typedef {{running?: boolean, progress?: {value: number, max: number} | null, preview?: CanvasImageSource | null,
 *   images?: {url: string}[] | null, error?: {message: string, inputs?: string[]} | null}} NodeState
 * @typedef {object} Frame what a frame needs from the canvas
 * @property {CanvasRenderingContext2D} ctx
 * @property {number} width CSS px
 * @property {number} height
 * @property {number} dpr
 * @property {import("./viewport.js").Viewport} viewport
 * @property {import("../graph/model.js").Graph} graph
 * @property {(node: Node) => NodeLayout} layout
 * @property {() => Node[]} order
 * @property {Set<number>} selection
 * @property {Map<number, NodeState>} states
 * @property {Map<number, number[]>} linkCenters filled while drawing links
 * @property {(url: string) => HTMLImageElement | null} image a loaded image, or null (loading starts)
 * @property {(node: Node, layout: NodeLayout) => string | null} uploadPreview
 * @property {import("./hit.js").LinkEnd | null} linkDrag
 * @property {number[] | null} linkDragPos graph space
 * @property {{nodeId: number, direction: "input"|"output", slot: number, widget?: string} | null} dropTarget where the dragged link would land
 * @property {number | null} hiddenLink a link being detached
 * @property {number[] | null} box selection box, graph space [x, y, w, h]
 * @property {import("../widgets/multiline.js").MultilineOverlays | null} multiline
 * @property {Set<number>} [covered] nodes whose multiline rows another node drawn later overlaps:
 *   they get no DOM textarea this frame (it would float above the covering node)
 */

const visible = [0, 0, 0, 0];
const bounds = [0, 0, 0, 0];
/** @type {Node[]} */
const shown = [];
/** @type {Set<number>} */
const covered = new Set();

/** @param {Frame} f */
export function drawFrame(f) {
  const { ctx, viewport, dpr } = f;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = theme.background;
  ctx.fillRect(0, 0, f.width, f.height);
  drawGrid(f);
  const s = viewport.scale * dpr;
  ctx.setTransform(s, 0, 0, s, viewport.offset[0] * s, viewport.offset[1] * s);
  viewport.visibleRect(f.width, f.height, visible);
  drawGroups(f);
  drawLinks(f);
  if (f.multiline) f.multiline.begin();
  shown.length = 0;
  for (const node of f.order()) {
    if (overlaps(nodeBounds(node, f.layout(node), bounds), visible)) shown.push(node);
  }
  f.covered = coveredTextNodes(f, shown);
  for (const node of shown) drawNode(f, node, f.layout(node));
  shown.length = 0;
  if (f.multiline) f.multiline.end();
  drawDraggedLink(f);
  drawBox(f);
}

/**
 * The nodes among `nodes` (drawing order) whose multiline rows a later node overlaps. Only done
 * when textareas are shown at all; a few comparisons per textarea node otherwise.
 * @param {Frame} f
 * @param {Node[]} nodes
 */
function coveredTextNodes(f, nodes) {
  covered.clear();
  if (!f.multiline || f.viewport.scale < TEXTAREA_MIN_SCALE) return covered;
  const rows = [0, 0, 0, 0];
  const other = [0, 0, 0, 0];
  for (let i = 0; i < nodes.length - 1; i++) {
    const node = nodes[i];
    const layout = f.layout(node);
    if (layout.collapsed || !multilineRect(node, layout, rows)) continue;
    for (let j = i + 1; j < nodes.length; j++) {
      if (overlaps(nodeBounds(nodes[j], f.layout(nodes[j]), other), rows)) {
        covered.add(node.id);
        break;
      }
    }
  }
  return covered;
}

/**
 * The box around a node's multiline rows (graph space) into `out`; false when it has none.
 * @param {Node} node
 * @param {NodeLayout} layout
 * @param {number[]} out
 */
function multilineRect(node, layout, out) {
  let top = Infinity;
  let bottom = -Infinity;
  for (const row of layout.widgets) {
    if (row.kind !== "multiline") continue;
    top = Math.min(top, row.y);
    bottom = Math.max(bottom, row.y + row.h);
  }
  if (top === Infinity) return false;
  out[0] = node.pos[0] + 10;
  out[1] = node.pos[1] + top;
  out[2] = layout.w - 20;
  out[3] = bottom - top;
  return true;
}

/** @param {Frame} f */
function drawGrid(f) {
  const { ctx, viewport } = f;
  const step = 100 * viewport.scale;
  if (step < 24) return;
  ctx.strokeStyle = theme.grid;
  ctx.lineWidth = 1;
  ctx.beginPath();
  const x0 = (((viewport.offset[0] * viewport.scale) % step) + step) % step;
  const y0 = (((viewport.offset[1] * viewport.scale) % step) + step) % step;
  for (let x = x0; x < f.width; x += step) {
    ctx.moveTo(Math.round(x) + 0.5, 0);
    ctx.lineTo(Math.round(x) + 0.5, f.height);
  }
  for (let y = y0; y < f.height; y += step) {
    ctx.moveTo(0, Math.round(y) + 0.5);
    ctx.lineTo(f.width, Math.round(y) + 0.5);
  }
  ctx.stroke();
}

/** @param {Frame} f */
function drawGroups(f) {
  const { ctx } = f;
  const text = f.viewport.scale >= LOD_BOXES;
  for (const group of f.graph.groups) {
    const b = group.bounding;
    if (!overlaps(b, visible)) continue;
    const color = group.color || theme.groupColor;
    ctx.globalAlpha = 0.22;
    ctx.fillStyle = color;
    ctx.fillRect(b[0], b[1], b[2], b[3]);
    ctx.globalAlpha = 0.5;
    ctx.fillRect(b[0], b[1], b[2], GROUP_TITLE_H);
    ctx.globalAlpha = 1;
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.5 / f.viewport.scale;
    ctx.strokeRect(b[0], b[1], b[2], b[3]);
    if (text) {
      ctx.font = FONT_GROUP;
      ctx.fillStyle = theme.nodeText;
      ctx.textAlign = "left";
      ctx.textBaseline = "middle";
      ctx.fillText(group.title || "Group", b[0] + 10, b[1] + GROUP_TITLE_H / 2 + 1, b[2] - 20);
    }
  }
}

/** @param {Frame} f */
function drawLinks(f) {
  const { ctx, graph } = f;
  /** @type {Map<string, Path2D>} */
  const paths = new Map();
  const centers = f.linkCenters;
  centers.clear();
  const showCenters = f.viewport.scale >= 0.6;
  for (const link of graph.links.values()) {
    if (link.id === f.hiddenLink) continue;
    const origin = graph.nodes.get(link.origin_id);
    const target = graph.nodes.get(link.target_id);
    if (!origin || !target) continue;
    const out = f.layout(origin).outputs[link.origin_slot];
    const inp = f.layout(target).inputs[link.target_slot];
    if (!out || !inp) continue;
    const x1 = origin.pos[0] + out.x;
    const y1 = origin.pos[1] + out.y;
    const x2 = target.pos[0] + inp.x;
    const y2 = target.pos[1] + inp.y;
    const d = Math.max(Math.abs(x2 - x1) * 0.5, 40);
    const minX = Math.min(x1, x2 - d);
    const minY = Math.min(y1, y2);
    bounds[0] = minX;
    bounds[1] = minY;
    bounds[2] = Math.max(x1 + d, x2) - minX;
    bounds[3] = Math.max(y1, y2) - minY + 1;
    if (!overlaps(bounds, visible)) continue;
    const color = typeColor(REROUTE_TYPES.has(origin.type) ? rerouteType(graph, origin.id) : (link.type ?? out.type));
    let path = paths.get(color);
    if (!path) paths.set(color, (path = new Path2D()));
    path.moveTo(x1, y1);
    path.bezierCurveTo(x1 + d, y1, x2 - d, y2, x2, y2);
    if (showCenters) {
      const cx = (x1 + 3 * (x1 + d) + 3 * (x2 - d) + x2) / 8;
      const cy = (y1 + y2) / 2;
      let center = centers.get(link.id);
      if (!center) center = [0, 0];
      center[0] = cx;
      center[1] = cy;
      centers.set(link.id, center);
    }
  }
  ctx.lineWidth = Math.max(3, 1.5 / f.viewport.scale);
  ctx.lineCap = "round";
  for (const [color, path] of paths) {
    ctx.strokeStyle = color;
    ctx.stroke(path);
  }
  if (!showCenters) return;
  for (const [linkId, center] of centers) {
    const link = graph.links.get(linkId);
    ctx.fillStyle = typeColor(link ? linkType(graph, link) : null);
    ctx.beginPath();
    ctx.arc(center[0], center[1], 4.5, 0, Math.PI * 2);
    ctx.fill();
  }
}

/** @param {Frame} f */
function drawDraggedLink(f) {
  const drag = f.linkDrag;
  const pos = f.linkDragPos;
  if (!drag || !pos) return;
  const node = f.graph.nodes.get(drag.nodeId);
  if (!node) return;
  const layout = f.layout(node);
  const place = (drag.direction === "output" ? layout.outputs : layout.inputs)[drag.slot];
  if (!place) return;
  const { ctx } = f;
  let x1 = node.pos[0] + place.x;
  let y1 = node.pos[1] + place.y;
  let [x2, y2] = pos;
  const snap = dropPoint(f);
  if (snap) {
    // Snap to the slot it would connect to, and ring it.
    [x2, y2] = snap;
    ctx.strokeStyle = theme.selected;
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.arc(x2, y2, SLOT_R + 4, 0, Math.PI * 2);
    ctx.stroke();
  }
  if (drag.direction === "input") [x1, y1, x2, y2] = [x2, y2, x1, y1];
  const d = Math.max(Math.abs(x2 - x1) * 0.5, 40);
  ctx.strokeStyle = typeColor(drag.type);
  ctx.lineWidth = Math.max(3, 1.5 / f.viewport.scale);
  ctx.beginPath();
  ctx.moveTo(x1, y1);
  ctx.bezierCurveTo(x1 + d, y1, x2 - d, y2, x2, y2);
  ctx.stroke();
}

/**
 * Graph position of the drop target's slot (a widget row's left edge when it would be converted).
 * @param {Frame} f
 * @returns {number[] | null}
 */
function dropPoint(f) {
  const target = f.dropTarget;
  const node = target && f.graph.nodes.get(target.nodeId);
  if (!target || !node) return null;
  const layout = f.layout(node);
  if (target.widget) {
    const row = layout.widgets.find((candidate) => candidate.name === target.widget && candidate.slotKind === "value");
    return row ? [node.pos[0], node.pos[1] + row.y + row.h / 2] : null;
  }
  const place = (target.direction === "input" ? layout.inputs : layout.outputs)[target.slot];
  return place ? [node.pos[0] + place.x, node.pos[1] + place.y] : null;
}

/** @param {Frame} f */
function drawBox(f) {
  if (!f.box) return;
  const { ctx } = f;
  const [x, y, w, h] = f.box;
  ctx.fillStyle = theme.boxSelectFill;
  ctx.fillRect(x, y, w, h);
  ctx.strokeStyle = theme.boxSelect;
  ctx.lineWidth = 1 / f.viewport.scale;
  ctx.strokeRect(x, y, w, h);
}
