// @ts-check
/**
 * An API prompt (`{id: {class_type, inputs, _meta}}`) turned into an editable graph: nodes created
 * from object_info, constants into widgets, links into sockets (a linked widget becomes an input),
 * laid out in columns by depth (longest path from a source; Kahn's order, no recursion).
 */

import { Graph, GraphError } from "../graph/model.js";
import { declaredInputs } from "../graph/types.js";

const COLUMN_WIDTH = 380;
const ROW_GAP = 40;

/** @param {any} value */
function isLink(value) {
  return Array.isArray(value) && value.length === 2 && (typeof value[0] === "string" || typeof value[0] === "number") && Number.isInteger(value[1]);
}

/** @param {any} prompt */
export function looksLikeApiPrompt(prompt) {
  if (!prompt || typeof prompt !== "object" || Array.isArray(prompt)) return false;
  const values = Object.values(prompt);
  return values.length > 0 && values.every((node) => node && typeof node === "object" && typeof node.class_type === "string");
}

/**
 * @param {Record<string, any>} prompt
 * @param {Record<string, any>} objectInfo
 * @returns {Graph}
 */
export function promptToGraph(prompt, objectInfo) {
  if (!looksLikeApiPrompt(prompt)) throw new GraphError("not an API prompt: every entry needs a class_type");
  const keys = Object.keys(prompt);
  const missing = [...new Set(keys.map((key) => prompt[key].class_type).filter((type) => !objectInfo[type]))];
  if (missing.length) throw new GraphError(`the prompt uses node types that are not installed: ${missing.join(", ")}`);
  const ids = graphIds(keys);
  const graph = new Graph();
  for (const key of keys) {
    const entry = prompt[key];
    const title = entry._meta && typeof entry._meta.title === "string" ? entry._meta.title : undefined;
    const display = objectInfo[entry.class_type].display_name || entry.class_type;
    /** @type {Record<string, any>} */
    const extra = { id: ids.get(key) };
    if (title && title !== display) extra.title = title;
    graph.createNode(entry.class_type, objectInfo, extra);
  }
  for (const key of keys) wireNode(graph, prompt, key, ids, objectInfo);
  layoutColumns(graph, ids);
  graph.version = 0;
  return graph;
}

/** Numeric keys keep their number; others ("5:2", "a") get the next free ids. @param {string[]} keys */
function graphIds(keys) {
  /** @type {Map<string, number>} */
  const ids = new Map();
  const used = new Set();
  for (const key of keys) {
    const number = Number(key);
    if (/^\d+$/.test(key) && number > 0 && !used.has(number)) {
      ids.set(key, number);
      used.add(number);
    }
  }
  let next = Math.max(0, ...used) + 1;
  for (const key of keys) if (!ids.has(key)) ids.set(key, next++);
  return ids;
}

/**
 * @param {Graph} graph
 * @param {Record<string, any>} prompt
 * @param {string} key
 * @param {Map<string, number>} ids
 * @param {Record<string, any>} objectInfo
 */
function wireNode(graph, prompt, key, ids, objectInfo) {
  const entry = prompt[key];
  const id = /** @type {number} */ (ids.get(key));
  const node = graph.node(id);
  const widgets = new Set(declaredInputs(objectInfo[entry.class_type]).filter((i) => i.isWidget).map((i) => i.name));
  for (const [name, raw] of Object.entries(entry.inputs || {})) {
    if (isLink(raw)) {
      const origin = ids.get(String(raw[0]));
      if (origin === undefined) continue; // a link to a node the prompt lacks
      let slot = node.inputs.findIndex((inp) => inp.name === name);
      if (slot < 0 && widgets.has(name)) slot = graph.widgetToInput(id, name, objectInfo);
      if (slot < 0) continue;
      try {
        graph.connect(origin, raw[1], id, slot);
      } catch (error) {
        console.warn(`loom: node ${key} input '${name}':`, error);
      }
    } else if (widgets.has(name)) {
      const value = raw && typeof raw === "object" && "__value__" in raw ? raw.__value__ : raw;
      graph.setWidget(id, name, value, objectInfo);
    }
  }
}

/**
 * @param {Graph} graph
 * @param {Map<string, number>} ids
 */
function layoutColumns(graph, ids) {
  /** @type {Map<number, number[]>} */
  const consumers = new Map();
  /** @type {Map<number, number>} */
  const indegree = new Map();
  for (const id of graph.nodes.keys()) indegree.set(id, 0);
  for (const link of graph.links.values()) {
    if (!consumers.has(link.origin_id)) consumers.set(link.origin_id, []);
    /** @type {number[]} */ (consumers.get(link.origin_id)).push(link.target_id);
    indegree.set(link.target_id, (indegree.get(link.target_id) || 0) + 1);
  }
  /** @type {Map<number, number>} */
  const depth = new Map();
  const order = [...ids.values()];
  const ready = order.filter((id) => indegree.get(id) === 0);
  for (const id of ready) depth.set(id, 0);
  while (ready.length) {
    const id = /** @type {number} */ (ready.shift());
    for (const next of consumers.get(id) || []) {
      depth.set(next, Math.max(depth.get(next) || 0, (depth.get(id) || 0) + 1));
      const left = (indegree.get(next) || 0) - 1;
      indegree.set(next, left);
      if (left === 0) ready.push(next);
    }
  }
  /** @type {Map<number, number>} */
  const columnY = new Map();
  for (const id of order) {
    const node = graph.node(id);
    const column = depth.get(id) ?? 0; // nodes in a cycle stay in the first column
    const y = columnY.get(column) ?? 0;
    const height = 60 + 24 * (node.inputs.length + node.outputs.length + widgetCount(node));
    node.pos = [column * COLUMN_WIDTH, y];
    node.size = [300, height];
    columnY.set(column, y + height + ROW_GAP);
  }
}

/** @param {import("../graph/model.js").Node} node */
function widgetCount(node) {
  return Array.isArray(node.widgets_values) ? node.widgets_values.length : Object.keys(node.widgets_values).length;
}
