// @ts-check
/**
 * Graph <-> ComfyUI UI workflow JSON (schema 0.4 written; 0.4 and 1.0 read), and graph -> API
 * prompt with the same rules as the server's execution/workflow.py: widget values named through
 * object_info, links followed through Reroutes, PrimitiveNodes and bypassed nodes (explicit loop,
 * no recursion), muted/bypassed/virtual nodes never emitted, list values wrapped as {__value__}.
 * Subgraph definitions are kept on load and saved back; instances are flattened on conversion
 * (subgraphs.js): inner nodes get "<instance>:<inner>" ids, boundary links are followed through.
 */

import { Graph, GraphError } from "./model.js";
import {
  NOTE_TYPES,
  PRIMITIVE_TYPE,
  REMOVED,
  REROUTE_TYPES,
  Workspace,
  execId,
  inputLinkId,
  parseDefinitions,
  parseRoot,
} from "./subgraphs.js";
import { declaredInputs } from "./types.js";
import { namedWidgetValues } from "./widgets_values.js";

export { NOTE_TYPES, PRIMITIVE_TYPE, REROUTE_TYPES, bypassInputIndex } from "./subgraphs.js";

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
 * Convert a UI workflow (schema 0.4 or 1.x, subgraphs flattened to "<instance>:<inner>" ids).
 * @param {Record<string, any>} workflow
 * @param {Record<string, any>} objectInfo
 * @returns {Record<string, {inputs: Record<string, any>, class_type: string, _meta: {title: string}}>}
 */
export function workflowToPrompt(workflow, objectInfo) {
  if (!workflow || !Array.isArray(workflow.nodes)) throw new GraphError("not a UI workflow: it has no 'nodes' list");
  /** @type {string[]} */
  const problems = [];
  const root = parseRoot(workflow, problems);
  const definitions = parseDefinitions(workflow, problems);
  if (problems.length) throw new GraphError(`the workflow is malformed:\n  - ${problems.join("\n  - ")}`);
  const workspace = new Workspace(root, definitions);
  /** @type {Record<string, any>} */
  const prompt = {};
  /** @type {Map<string, string[]>} */
  const unknown = new Map();
  for (const [scope, nodeId] of workspace.executableNodes(isVirtual)) {
    const node = scope.graph.nodes.get(nodeId);
    const entry = objectInfo[node.type];
    if (!entry) {
      if (!unknown.has(node.type)) unknown.set(node.type, []);
      /** @type {string[]} */ (unknown.get(node.type)).push(execId(scope, nodeId));
      continue;
    }
    prompt[execId(scope, nodeId)] = emit(workspace, scope, nodeId, entry);
  }
  if (unknown.size) throw new GraphError(unknownMessage(unknown, groupNodeTypes(workflow)));
  return prompt;
}

/** @param {string} type */
function isVirtual(type) {
  return REROUTE_TYPES.has(type) || NOTE_TYPES.has(type) || type === PRIMITIVE_TYPE;
}

/**
 * @param {Map<string, string[]>} unknown
 * @param {Set<string>} groupNodes
 */
function unknownMessage(unknown, groupNodes) {
  const parts = [...unknown.keys()].sort().map((type) => {
    const ids = /** @type {string[]} */ (unknown.get(type)).join(", ");
    if (!groupNodes.has(type)) return `'${type}' (node ${ids})`;
    return `'${type}' (node ${ids}) is a legacy group node, which is not supported: convert it to a subgraph in the editor`;
  });
  return `the workflow uses node types that are not installed: ${parts.join("; ")}`;
}

/** Type names of legacy group nodes ("workflow>Name"), defined in extra.groupNodes. @param {any} workflow */
function groupNodeTypes(workflow) {
  const groups = workflow.extra && typeof workflow.extra === "object" ? workflow.extra.groupNodes : undefined;
  if (!groups || typeof groups !== "object" || Array.isArray(groups)) return new Set();
  return new Set(Object.keys(groups).flatMap((name) => [`workflow>${name}`, `workflow/${name}`]));
}

/**
 * @param {Workspace} workspace
 * @param {import("./subgraphs.js").Scope} scope
 * @param {string} nodeId
 * @param {any} entry
 */
function emit(workspace, scope, nodeId, entry) {
  const node = scope.graph.nodes.get(nodeId);
  /** @type {Record<string, any>} */
  const inputs = {};
  for (const [name, value] of Object.entries(namedWidgetValues(node.widgets_values, entry))) {
    inputs[name] = constant(value);
  }
  const declared = new Map(declaredInputs(entry).map((inp) => [inp.name, inp]));
  // Widget values an enclosing instance pushes onto this node through properties.proxyWidgets.
  for (const [name, value] of Object.entries(scope.overrides.get(nodeId) || {})) {
    const decl = declared.get(name);
    if (decl && decl.isWidget) inputs[name] = constant(value);
  }
  const hidden = (entry.input && entry.input.hidden) || {};
  (node.inputs || []).forEach((/** @type {any} */ inp, /** @type {number} */ index) => {
    if (inputLinkId(inp) === null || typeof inp.name !== "string") return;
    if (!declared.has(inp.name) && isInjected(hidden[inp.name])) return;
    const decl = declared.get(inp.name);
    const targetType = inp.type || (decl ? decl.type : null);
    const resolved = workspace.resolveInput(scope, nodeId, index, targetType);
    if (resolved === REMOVED) delete inputs[inp.name];
    else if (resolved && "constant" in resolved) inputs[inp.name] = constant(resolved.constant);
    else if (resolved) inputs[inp.name] = [resolved.id, resolved.slot];
  });
  const title = typeof node.title === "string" && node.title ? node.title : entry.display_name || node.type;
  return { inputs, class_type: node.type, _meta: { title } };
}

/** Hidden inputs declared as a plain kind ("PROMPT", ...) are filled by the executor, never by links. */
const HIDDEN_KINDS = new Set(["PROMPT", "DYNPROMPT", "EXTRA_PNGINFO", "UNIQUE_ID", "AUTH_TOKEN_COMFY_ORG", "API_KEY_COMFY_ORG"]);

/** @param {any} raw one value of object_info's input.hidden */
function isInjected(raw) {
  const head = Array.isArray(raw) ? raw[0] : raw;
  return typeof head === "string" && HIDDEN_KINDS.has(head);
}

/** @param {any} value a bare list would read as a link; the backend unwraps {__value__} */
function constant(value) {
  return Array.isArray(value) ? { __value__: value } : value;
}
