// @ts-check
/**
 * Slot types that depend on the graph rather than on one node (ComfyUI's frontend rules):
 * - a Reroute carries the type of what feeds it, followed up through chains of reroutes; when
 *   nothing feeds it, the type of what it feeds (so a lone reroute still refuses wrong links);
 * - a PrimitiveNode takes the type and the widget of the first widget input it is linked to, and
 *   goes back to "*" when its last link goes.
 * Explicit loops with a visited set: long or looping reroute chains cost no recursion.
 */

import { hasControl } from "./widgets_values.js";
import { ANY_TYPE, declaredInputs } from "./types.js";
import { PRIMITIVE_TYPE, PRIMITIVE_UNLINKED, REROUTE_TYPES } from "./virtual.js";

/**
 * @typedef {import("./model.js").Graph} Graph
 * @typedef {import("./model.js").Node} Node
 */

/** @type {WeakMap<Graph, {version: number, types: Map<number, string>}>} */
const memo = new WeakMap();

/** @param {unknown} type a type that says something (not "*", not empty) */
function concrete(type) {
  return typeof type === "string" && type !== "" && type !== ANY_TYPE;
}

/**
 * The type flowing through a Reroute ("*" when neither side tells). Cached per graph version:
 * links are drawn every frame.
 * @param {Graph} graph
 * @param {number} nodeId
 * @returns {string}
 */
export function rerouteType(graph, nodeId) {
  let cache = memo.get(graph);
  if (!cache || cache.version !== graph.version) {
    cache = { version: graph.version, types: new Map() };
    memo.set(graph, cache);
  }
  let type = cache.types.get(nodeId);
  if (type === undefined) {
    type = upstreamType(graph, nodeId) ?? downstreamType(graph, nodeId);
    cache.types.set(nodeId, type);
  }
  return type;
}

/**
 * The type of the first non-reroute output feeding a reroute chain, or null.
 * @param {Graph} graph
 * @param {number} nodeId
 * @returns {string | null}
 */
function upstreamType(graph, nodeId) {
  const seen = new Set();
  let node = graph.nodes.get(nodeId);
  while (node && REROUTE_TYPES.has(node.type) && !seen.has(node.id)) {
    seen.add(node.id);
    const inp = node.inputs[0];
    const link = inp && inp.link !== null ? graph.links.get(inp.link) : undefined;
    node = link ? graph.nodes.get(link.origin_id) : undefined;
    if (node && link && !REROUTE_TYPES.has(node.type)) {
      const out = node.outputs[link.origin_slot];
      return out && concrete(out.type) ? String(out.type) : null;
    }
  }
  return null;
}

/**
 * The type of the first typed input a reroute feeds (through further reroutes), else "*".
 * @param {Graph} graph
 * @param {number} nodeId
 * @returns {string}
 */
export function downstreamType(graph, nodeId) {
  const seen = new Set([nodeId]);
  const queue = [nodeId];
  for (let at = 0; at < queue.length; at++) {
    const node = graph.nodes.get(queue[at]);
    for (const out of (node && node.outputs) || []) {
      for (const linkId of out.links) {
        const link = graph.links.get(linkId);
        const target = link && graph.nodes.get(link.target_id);
        if (!link || !target) continue;
        if (REROUTE_TYPES.has(target.type)) {
          if (!seen.has(target.id)) {
            seen.add(target.id);
            queue.push(target.id);
          }
          continue;
        }
        const inp = target.inputs[link.target_slot];
        if (inp && concrete(inp.type)) return String(inp.type);
      }
    }
  }
  return ANY_TYPE;
}

/**
 * The type a slot really has: a reroute's output carries what flows in, its input accepts what
 * its outputs feed; other slots have their declared type.
 * @param {Graph} graph
 * @param {Node} node
 * @param {"input"|"output"} direction
 * @param {number} slot
 * @returns {any}
 */
export function slotType(graph, node, direction, slot) {
  if (REROUTE_TYPES.has(node.type)) {
    return direction === "output" ? rerouteType(graph, node.id) : downstreamType(graph, node.id);
  }
  const socket = direction === "output" ? node.outputs[slot] : node.inputs[slot];
  return socket ? socket.type : undefined;
}

/**
 * The colour type of a link: its origin's effective type.
 * @param {Graph} graph
 * @param {import("./model.js").Link} link
 */
export function linkType(graph, link) {
  const origin = graph.nodes.get(link.origin_id);
  if (origin && REROUTE_TYPES.has(origin.type)) return rerouteType(graph, origin.id);
  return link.type ?? (origin && origin.outputs[link.origin_slot] ? origin.outputs[link.origin_slot].type : null);
}

/**
 * Why `origin` output may not feed `target` input beyond types, or null. A PrimitiveNode only
 * feeds widgets (inputs converted from a widget), as in ComfyUI.
 * @param {Node} origin
 * @param {import("./model.js").NodeInput} inp
 * @returns {string | null}
 */
export function linkRefusal(origin, inp) {
  if (origin.type === PRIMITIVE_TYPE && !inp.widget) return "a Primitive node can only feed widget inputs";
  return null;
}

/**
 * A PrimitiveNode that was just linked to a widget input takes that widget's type (ComfyUI's
 * output type, name and widget fields), if it had none yet.
 * @param {Node} origin
 * @param {import("./model.js").NodeInput} inp the input it now feeds
 */
export function adoptPrimitiveType(origin, inp) {
  if (origin.type !== PRIMITIVE_TYPE) return;
  const out = origin.outputs[0];
  if (!out || (concrete(out.type) && out.widget)) return;
  out.type = inp.type;
  out.name = String(inp.type);
  out.widget = { name: inp.widget ? inp.widget.name : inp.name };
}

/**
 * A PrimitiveNode whose last link went forgets its type and value (ComfyUI removes its widget).
 * @param {Node | undefined} origin
 */
export function releasePrimitive(origin) {
  if (!origin || origin.type !== PRIMITIVE_TYPE) return;
  const out = origin.outputs[0];
  if (!out || out.links.length) return;
  out.type = ANY_TYPE;
  out.name = PRIMITIVE_UNLINKED;
  delete out.widget;
  origin.widgets_values = [];
}

/**
 * The widget declaration a PrimitiveNode mirrors: that of the first widget input it feeds.
 * @param {Graph} graph
 * @param {Node} node
 * @param {Record<string, any>} objectInfo
 * @returns {{decl: import("./types.js").InputDecl, targetId: number} | null}
 */
export function primitiveTarget(graph, node, objectInfo) {
  const out = node.outputs[0];
  if (!out) return null;
  for (const linkId of out.links) {
    const link = graph.links.get(linkId);
    const target = link && graph.nodes.get(link.target_id);
    const inp = link && target && target.inputs[link.target_slot];
    if (!target || !inp) continue;
    const name = inp.widget ? inp.widget.name : inp.name;
    const decl = declaredInputs(objectInfo[target.type]).find((candidate) => candidate.name === name);
    if (decl) return { decl, targetId: target.id };
  }
  return null;
}

/**
 * Does a PrimitiveNode mirroring `decl` show a control_after_generate row? ComfyUI gives every
 * number and combo primitive one (and combos a filter after it), not only seeds.
 * @param {import("./types.js").InputDecl} decl
 */
export function primitiveHasControl(decl) {
  return hasControl(decl) || decl.choices !== null || decl.type === "INT" || decl.type === "FLOAT";
}

/**
 * A PrimitiveNode without a value yet takes the value of the widget it was just linked to (and
 * its control mode, "fixed" by default; combos also get an empty filter), so the prompt it feeds
 * stays what it was. `graph.setWidgetValue` fires the change.
 * @param {Graph} graph
 * @param {number} primitiveId
 * @param {Record<string, any>} objectInfo
 */
export function seedPrimitive(graph, primitiveId, objectInfo) {
  const node = graph.nodes.get(primitiveId);
  if (!node || node.type !== PRIMITIVE_TYPE || !Array.isArray(node.widgets_values) || node.widgets_values.length) return;
  const found = primitiveTarget(graph, node, objectInfo);
  if (!found) return;
  const { decl, targetId } = found;
  /** @type {any[]} */
  const values = [graph.getWidget(targetId, decl.name, objectInfo)];
  if (primitiveHasControl(decl)) {
    values.push(hasControl(decl) ? (graph.getWidget(targetId, decl.name, objectInfo, "control") ?? "fixed") : "fixed");
    if (decl.choices !== null) values.push("");
  }
  values.forEach((value, index) => graph.setWidgetValue(primitiveId, index, value));
}
