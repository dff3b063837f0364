// @ts-check
/**
 * Graph <-> ComfyUI UI workflow JSON (schema 0.4 written; 0.4 and 1.0 read), and graph -> API
 * prompt with the same rules as the server's execution/workflow.py: widget values named through
 * object_info, links followed through Reroutes, PrimitiveNodes and bypassed nodes (explicit loop,
 * no recursion), muted/bypassed/virtual nodes never emitted, list values wrapped as {__value__}.
 * Subgraph definitions are kept on load and saved back, but not flattened yet.
 */

import { Graph, GraphError, MODE_BYPASS, MODE_NEVER } from "./model.js";
import { ANY_TYPE, declaredInputs, looseCompatible } from "./types.js";
import { namedWidgetValues } from "./widgets_values.js";

export const PRIMITIVE_TYPE = "PrimitiveNode";
export const REROUTE_TYPES = new Set(["Reroute"]);
export const NOTE_TYPES = new Set(["Note", "MarkdownNote"]);
const REMOVED = Symbol("removed");

/** @typedef {import("./model.js").Node} Node */

/**
 * The graph as a UI workflow (schema 0.4: links as arrays).
 * @param {Graph} graph
 * @returns {Record<string, any>}
 */
export function toWorkflow(graph) {
  /** @type {Record<string, any>} */
  const workflow = {
    last_node_id: graph.last_node_id,
    last_link_id: graph.last_link_id,
    nodes: [...graph.nodes.values()].map((node) => structuredClone(node)),
    links: [...graph.links.values()].map((l) => [l.id, l.origin_id, l.origin_slot, l.target_id, l.target_slot, l.type]),
    groups: graph.groups.map((group) => structuredClone(group)),
    config: {},
    extra: structuredClone(graph.extra),
    version: 0.4,
  };
  if (graph.definitions) workflow.definitions = structuredClone(graph.definitions);
  return workflow;
}

/**
 * Load a UI workflow (0.4 or 1.x; links as arrays or objects) into a Graph.
 * @param {Record<string, any>} json
 * @returns {Graph}
 */
export function fromWorkflow(json) {
  if (!json || !Array.isArray(json.nodes)) throw new GraphError("not a UI workflow: it has no 'nodes' list");
  const graph = new Graph();
  for (const raw of json.nodes) {
    const id = Number(raw.id);
    if (!Number.isInteger(id)) throw new GraphError(`node ${JSON.stringify(raw.id)} has no integer id`);
    graph.addNode({ ...structuredClone(raw), id });
  }
  for (const raw of linkList(json.links)) {
    const link = parseLink(raw);
    if (!link) throw new GraphError(`malformed link: ${JSON.stringify(raw)}`);
    graph.links.set(link.id, link);
  }
  for (const raw of json.groups || []) graph.groups.push(structuredClone(raw));
  const state = json.state || {};
  const maxLink = Math.max(0, ...graph.links.keys());
  graph.last_node_id = Math.max(graph.last_node_id, Number(json.last_node_id ?? state.lastNodeId ?? 0));
  graph.last_link_id = Math.max(maxLink, Number(json.last_link_id ?? state.lastLinkId ?? 0));
  graph.extra = structuredClone(json.extra || {});
  if (json.definitions) graph.definitions = structuredClone(json.definitions);
  graph.version = 0;
  return graph;
}

/** @param {any} raw */
function linkList(raw) {
  if (!raw) return [];
  const list = Array.isArray(raw) ? raw : Object.values(raw);
  return list.filter((entry) => entry !== null && entry !== undefined); // old files leave holes
}

/**
 * @param {any} raw
 * @returns {import("./model.js").Link | null}
 */
function parseLink(raw) {
  const f = Array.isArray(raw)
    ? raw
    : [raw.id, raw.origin_id, raw.origin_slot, raw.target_id, raw.target_slot, raw.type];
  const [id, originId, originSlot, targetId, targetSlot] = f.slice(0, 5).map(Number);
  if (![id, originId, originSlot, targetId, targetSlot].every(Number.isInteger)) return null;
  return { id, origin_id: originId, origin_slot: originSlot, target_id: targetId, target_slot: targetSlot, type: f[5] ?? null };
}

/**
 * The API prompt `{id: {inputs, class_type, _meta}}` the server runs for this graph.
 * @param {Graph} graph
 * @param {Record<string, any>} objectInfo
 */
export function toApiPrompt(graph, objectInfo) {
  return workflowToPrompt(toWorkflow(graph), objectInfo);
}

/**
 * Convert a UI workflow (root level) to an API prompt.
 * @param {Record<string, any>} workflow
 * @param {Record<string, any>} objectInfo
 * @returns {Record<string, {inputs: Record<string, any>, class_type: string, _meta: {title: string}}>}
 */
export function workflowToPrompt(workflow, objectInfo) {
  const nodes = orderedNodes(workflow.nodes || []);
  /** @type {Map<string, import("./model.js").Link>} */
  const links = new Map();
  for (const raw of linkList(workflow.links)) {
    const link = parseLink(raw);
    if (link) links.set(String(link.id), link);
  }
  /** @type {Record<string, any>} */
  const prompt = {};
  /** @type {string[]} */
  const unknown = [];
  for (const node of nodes.values()) {
    if (isVirtual(node.type) || node.mode === MODE_NEVER || node.mode === MODE_BYPASS) continue;
    const entry = objectInfo[node.type];
    if (!entry) {
      unknown.push(`'${node.type}' (node ${node.id})`);
      continue;
    }
    prompt[String(node.id)] = emit(node, entry, nodes, links);
  }
  if (unknown.length) throw new GraphError(`the workflow uses node types that are not installed: ${unknown.join("; ")}`);
  return prompt;
}

/** @param {string} type */
function isVirtual(type) {
  return REROUTE_TYPES.has(type) || NOTE_TYPES.has(type) || type === PRIMITIVE_TYPE;
}

/**
 * Nodes by id string, in execution order (saved `order`, then list position).
 * @param {any[]} raw
 * @returns {Map<string, any>}
 */
function orderedNodes(raw) {
  const keyed = raw.map((node, index) => ({ node, index, order: typeof node.order === "number" ? node.order : Infinity }));
  keyed.sort((a, b) => (a.order === b.order ? a.index - b.index : a.order < b.order ? -1 : 1));
  return new Map(keyed.map(({ node }) => [String(node.id), node]));
}

/**
 * @param {any} node
 * @param {any} entry
 * @param {Map<string, any>} nodes
 * @param {Map<string, import("./model.js").Link>} links
 */
function emit(node, entry, nodes, links) {
  /** @type {Record<string, any>} */
  const inputs = {};
  for (const [name, value] of Object.entries(namedWidgetValues(node.widgets_values, entry))) {
    inputs[name] = constant(value);
  }
  const declared = new Map(declaredInputs(entry).map((inp) => [inp.name, inp]));
  (node.inputs || []).forEach((/** @type {any} */ inp, /** @type {number} */ index) => {
    if (inp.link === null || inp.link === undefined || typeof inp.name !== "string") return;
    const decl = declared.get(inp.name);
    const targetType = inp.type || (decl ? decl.type : null);
    const resolved = resolveInput(nodes, links, String(node.id), index, targetType);
    if (resolved === REMOVED) delete inputs[inp.name];
    else if (resolved && "constant" in resolved) inputs[inp.name] = constant(resolved.constant);
    else if (resolved) inputs[inp.name] = [resolved.id, resolved.slot];
  });
  const title = typeof node.title === "string" && node.title ? node.title : entry.display_name || node.type;
  return { inputs, class_type: node.type, _meta: { title } };
}

/** @param {any} value a bare list would read as a link; the backend unwraps {__value__} */
function constant(value) {
  return Array.isArray(value) ? { __value__: value } : value;
}

/**
 * What feeds input `index` of a node: a link {id, slot}, {constant}, REMOVED or null.
 * Follows Reroutes and bypassed nodes in a loop; a repeated step is a cycle.
 * @param {Map<string, any>} nodes
 * @param {Map<string, import("./model.js").Link>} links
 * @param {string} nodeId
 * @param {number} index
 * @param {any} targetType
 * @returns {{id: string, slot: number} | {constant: any} | typeof REMOVED | null}
 */
function resolveInput(nodes, links, nodeId, index, targetType) {
  const seen = new Set();
  let kind = "in";
  let at = nodeId;
  let slot = index;
  for (;;) {
    const key = `${kind}:${at}:${slot}`;
    if (seen.has(key)) {
      throw new GraphError(`node ${nodeId} input ${index}: its links loop back on themselves at node ${at}`);
    }
    seen.add(key);
    const node = nodes.get(at);
    if (kind === "in") {
      const inp = (node.inputs || [])[slot];
      const link = inp && inp.link !== null && inp.link !== undefined ? links.get(String(inp.link)) : undefined;
      if (!link || !nodes.has(String(link.origin_id))) return null;
      [kind, at, slot] = ["out", String(link.origin_id), link.origin_slot];
      continue;
    }
    if (node.type === PRIMITIVE_TYPE) {
      // The frontend copies the primitive's value into every widget it feeds, whatever its mode.
      const values = node.widgets_values;
      return Array.isArray(values) && values.length ? { constant: values[0] } : null;
    }
    if (NOTE_TYPES.has(node.type)) return null;
    if (node.mode === MODE_BYPASS) {
      const through = bypassInputIndex(node, slot, targetType);
      if (through === null) return null;
      [kind, slot] = ["in", through];
      continue;
    }
    if (REROUTE_TYPES.has(node.type)) {
      kind = "in";
      continue;
    }
    if (node.mode === MODE_NEVER) return REMOVED;
    return { id: at, slot };
  }
}

/**
 * Which input of a bypassed node stands in for its output `slot` (frontend rule): the same
 * index when its type fits, else the first input of exactly the consumer's type, else the first
 * compatible one.
 * @param {any} node
 * @param {number} slot
 * @param {any} targetType
 * @returns {number | null}
 */
export function bypassInputIndex(node, slot, targetType) {
  const inputs = node.inputs || [];
  if (!inputs.length) return null;
  if (targetType === null || targetType === undefined || targetType === "" || targetType === ANY_TYPE) {
    return slot < inputs.length ? slot : 0;
  }
  const outputs = node.outputs || [];
  const outputType = slot < outputs.length ? outputs[slot].type : targetType;
  const fits = (/** @type {any} */ inp) => looseCompatible(inp.type, outputType) && looseCompatible(inp.type, targetType);
  if (slot < inputs.length && fits(inputs[slot])) return slot;
  const exact = inputs.findIndex((/** @type {any} */ inp) => inp.type === targetType);
  if (exact >= 0) return exact;
  const loose = inputs.findIndex(fits);
  return loose >= 0 ? loose : null;
}
