// @ts-check
/**
 * The graph side of workflow -> prompt conversion, with the same rules as the server's
 * execution/workflow_graph.py: every graph level (root workflow and subgraph definitions) parsed
 * once, and one question answered: what feeds input k of node n in scope s? The walk follows
 * Reroutes, bypassed nodes, PrimitiveNodes and subgraph boundaries in an explicit loop (never
 * recursion), so deep nesting and long chains resolve like short ones.
 */

import { GraphError, MODE_BYPASS, MODE_NEVER } from "./model.js";
import { ANY_TYPE, looseCompatible } from "./types.js";
import { NOTE_TYPES, PRIMITIVE_TYPE, REROUTE_TYPES } from "./virtual.js";

export { NOTE_TYPES, PRIMITIVE_TYPE, REROUTE_TYPES };
export const SUBGRAPH_INPUT_ID = "-10";
export const SUBGRAPH_OUTPUT_ID = "-20";
export const REMOVED = Symbol("removed");

/**
 * @typedef {{id: number, origin_id: string, origin_slot: number, target_id: string, target_slot: number}} UiLink
 * @typedef {object} UiGraph one graph level
 * @property {string} label how messages name it
 * @property {Map<string, any>} nodes by id string, in execution order
 * @property {Map<number, UiLink>} links
 * @property {any[]} inputs subgraph inputs (definitions only)
 * @property {any[]} outputs
 * @property {string} inputNodeId
 * @property {string} outputNodeId
 * @property {number[]} promoted subgraph input slots that feed an inner widget, in order
 * @typedef {object} Scope a graph level plus the chain of instances leading to it
 * @property {UiGraph} graph
 * @property {string[]} path instance ids from the root
 * @property {Scope | null} parent
 * @property {any} instance
 * @property {Map<string, Record<string, any>>} overrides proxyWidgets values: inner id -> name -> value
 * @property {string[]} entered definition ids entered so far
 * @typedef {{id: string, slot: number} | {constant: any} | typeof REMOVED | null} Resolved
 * @typedef {["in" | "out", Scope, string, number] | null} Step the next socket to follow while
 *   resolving an input: "in" = what feeds input `slot` of a node, "out" = output `slot` of a node
 */

/** @param {any} value @returns {number | null} */
function asInt(value) {
  if (typeof value === "boolean" || value === null || value === undefined) return null;
  if (typeof value === "string" && !value.trim()) return null;
  const number = typeof value === "number" ? value : typeof value === "string" ? Number(value.trim()) : NaN;
  return Number.isInteger(number) ? number : null;
}

/** A node id as the prompt spells it. @param {any} value @returns {string | null} */
export function nodeIdStr(value) {
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : null;
  if (typeof value === "string" && value) return value;
  return null;
}

/** @param {any} entry @returns {number | null} */
export function inputLinkId(entry) {
  return entry && entry.link !== null && entry.link !== undefined ? asInt(entry.link) : null;
}

/** @param {any} node */
export function nodeMode(node) {
  return node.mode || 0;
}

/** @param {any} raw @returns {UiLink | null} */
function parseLink(raw) {
  const f = Array.isArray(raw)
    ? raw
    : raw && typeof raw === "object"
      ? [raw.id, raw.origin_id, raw.origin_slot, raw.target_id, raw.target_slot]
      : null;
  if (!f || f.length < 5) return null;
  const [id, originSlot, targetSlot] = [asInt(f[0]), asInt(f[2]), asInt(f[4])];
  const [origin, target] = [nodeIdStr(f[1]), nodeIdStr(f[3])];
  if (id === null || originSlot === null || targetSlot === null || origin === null || target === null) return null;
  return { id, origin_id: origin, origin_slot: originSlot, target_id: target, target_slot: targetSlot };
}

/** @param {any} raw @param {string} label @param {string[]} problems */
function parseLinks(raw, label, problems) {
  /** @type {Map<number, UiLink>} */
  const links = new Map();
  if (raw === null || raw === undefined) return links;
  const list = Array.isArray(raw) ? raw : typeof raw === "object" ? Object.values(raw) : null;
  if (!list) {
    problems.push(`${label}: 'links' must be a list`);
    return links;
  }
  list.forEach((entry, index) => {
    if (entry === null || entry === undefined) return; // old files leave holes
    const link = parseLink(entry);
    if (link) links.set(link.id, link);
    else problems.push(`${label}: link #${index} is malformed: ${JSON.stringify(entry)}`);
  });
  return links;
}

/** Nodes by id string, in execution order (saved `order`, then list position). */
/** @param {any} raw @param {string} label @param {string[]} problems @returns {Map<string, any>} */
function parseNodes(raw, label, problems) {
  if (!Array.isArray(raw)) {
    problems.push(`${label}: 'nodes' must be a list`);
    return new Map();
  }
  const keyed = [];
  const seen = new Set();
  for (const [index, node] of raw.entries()) {
    const id = node && typeof node === "object" ? nodeIdStr(node.id) : null;
    if (id === null) problems.push(`${label}: node #${index} has no usable 'id'`);
    else if (typeof node.type !== "string" || !node.type) problems.push(`${label}: node ${id} has no 'type'`);
    else if (seen.has(id)) problems.push(`${label}: node ${id}: the id is used by more than one node`);
    else {
      seen.add(id);
      const order = typeof node.order === "number" ? node.order : Infinity;
      keyed.push({ id, node, index, order });
    }
  }
  keyed.sort((a, b) => (a.order === b.order ? a.index - b.index : a.order < b.order ? -1 : 1));
  return new Map(keyed.map(({ id, node }) => [id, node]));
}

/**
 * @param {any} workflow
 * @param {string[]} problems
 * @returns {UiGraph}
 */
export function parseRoot(workflow, problems) {
  return {
    label: "workflow",
    nodes: parseNodes(workflow.nodes, "workflow", problems),
    links: parseLinks(workflow.links, "workflow", problems),
    inputs: [],
    outputs: [],
    inputNodeId: SUBGRAPH_INPUT_ID,
    outputNodeId: SUBGRAPH_OUTPUT_ID,
    promoted: [],
  };
}

/**
 * Every subgraph definition by id, including ones nested in other definitions (breadth first).
 * @param {any} workflow
 * @param {string[]} problems
 * @returns {Map<string, UiGraph>}
 */
export function parseDefinitions(workflow, problems) {
  /** @type {Map<string, UiGraph>} */
  const definitions = new Map();
  const pending = definitionList(workflow, "workflow", problems);
  for (let at = 0; at < pending.length; at += 1) {
    const raw = pending[at];
    const id = raw.id;
    if (typeof id !== "string" || !id) {
      problems.push(`subgraph definition ${JSON.stringify(raw.name ?? null)} has no 'id'`);
      continue;
    }
    const label = `subgraph '${raw.name || id}' (${id})`;
    if (definitions.has(id)) continue; // the first definition wins, as on the server
    definitions.set(id, parseDefinition(raw, label, problems));
    pending.push(...definitionList(raw, label, problems));
  }
  return definitions;
}

/** @param {any} container @param {string} label @param {string[]} problems @returns {any[]} */
function definitionList(container, label, problems) {
  const block = container.definitions;
  if (block === null || block === undefined) return [];
  const raw = !Array.isArray(block) && typeof block === "object" ? block.subgraphs : block;
  if (raw === null || raw === undefined) return [];
  if (!Array.isArray(raw) || !raw.every((item) => item && typeof item === "object" && !Array.isArray(item))) {
    problems.push(`${label}: 'definitions.subgraphs' must be a list of objects`);
    return [];
  }
  return raw;
}

/** @param {any} raw @param {string} label @param {string[]} problems @returns {UiGraph} */
function parseDefinition(raw, label, problems) {
  const io = ["inputs", "outputs"].map((key) => {
    const value = raw[key] || [];
    if (!Array.isArray(value) || !value.every((item) => item && typeof item === "object")) {
      problems.push(`${label}: '${key}' must be a list of objects`);
      return [];
    }
    return value;
  });
  /** @type {UiGraph} */
  const graph = {
    label,
    nodes: parseNodes(raw.nodes, label, problems),
    links: parseLinks(raw.links, label, problems),
    inputs: io[0],
    outputs: io[1],
    inputNodeId: ioNodeId(raw.inputNode, SUBGRAPH_INPUT_ID),
    outputNodeId: ioNodeId(raw.outputNode, SUBGRAPH_OUTPUT_ID),
    promoted: [],
  };
  graph.promoted = promotedInputs(graph);
  return graph;
}

/** @param {any} raw @param {string} fallback */
function ioNodeId(raw, fallback) {
  const id = raw && typeof raw === "object" ? nodeIdStr(raw.id) : null;
  return id || fallback;
}

/** Subgraph inputs that feed a widget input inside: each becomes a widget on the instance. */
/** @param {UiGraph} graph @returns {number[]} */
function promotedInputs(graph) {
  const promoted = [];
  for (let slot = 0; slot < graph.inputs.length; slot += 1) {
    for (const link of graph.links.values()) {
      if (link.origin_id !== graph.inputNodeId || link.origin_slot !== slot) continue;
      const target = graph.nodes.get(link.target_id);
      const entries = (target && target.inputs) || [];
      if (entries.some((/** @type {any} */ entry) => inputLinkId(entry) === link.id && entry.widget)) {
        promoted.push(slot);
        break;
      }
    }
  }
  return promoted;
}

/** The inner link that feeds subgraph output `slot`. @param {UiGraph} graph @param {number} slot */
function outputLink(graph, slot) {
  if (slot >= 0 && slot < graph.outputs.length) {
    for (const rawId of graph.outputs[slot].linkIds || []) {
      const id = asInt(rawId);
      const link = id === null ? undefined : graph.links.get(id);
      if (link) return link;
    }
  }
  for (const link of graph.links.values()) {
    if (link.target_id === graph.outputNodeId && link.target_slot === slot) return link;
  }
  return null;
}

/** The node's id in the API prompt. @param {Scope} scope @param {string} nodeId */
export function execId(scope, nodeId) {
  return [...scope.path, nodeId].join(":");
}

export class Workspace {
  /**
   * @param {UiGraph} root
   * @param {Map<string, UiGraph>} definitions
   * @param {Set<string>} [passthroughTypes]
   */
  constructor(root, definitions, passthroughTypes = REROUTE_TYPES) {
    /** @type {Scope} */
    this.root = { graph: root, path: [], parent: null, instance: null, overrides: new Map(), entered: [] };
    this.definitions = definitions;
    this.passthroughTypes = passthroughTypes;
    /** @type {Map<string, Scope>} */
    this.children = new Map();
  }

  /**
   * The scope inside a subgraph instance, or null when the node is not an instance.
   * @param {Scope} scope
   * @param {string} nodeId
   * @returns {Scope | null}
   */
  childScope(scope, nodeId) {
    const node = scope.graph.nodes.get(nodeId);
    const definition = this.definitions.get(node.type);
    if (!definition) return null;
    const path = [...scope.path, nodeId];
    const key = path.join(":");
    const cached = this.children.get(key);
    if (cached) return cached;
    if (scope.entered.includes(node.type)) {
      throw new GraphError(`node ${execId(scope, nodeId)}: ${definition.label} contains an instance of itself`);
    }
    /** @type {Scope} */
    const child = { graph: definition, path, parent: scope, instance: node, overrides: proxyOverrides(node), entered: [...scope.entered, node.type] };
    this.children.set(key, child);
    return child;
  }

  /**
   * Every node that becomes a prompt entry, in execution order, subgraphs flattened in place.
   * An explicit stack of graph levels: nesting depth is whatever the file says.
   * @param {(type: string) => boolean} isVirtual
   * @returns {Generator<[Scope, string]>}
   */
  *executableNodes(isVirtual) {
    /** @type {[Scope, Iterator<string>][]} */
    const stack = [[this.root, [...this.root.graph.nodes.keys()][Symbol.iterator]()]];
    while (stack.length) {
      const [scope, remaining] = stack[stack.length - 1];
      const next = remaining.next();
      if (next.done) {
        stack.pop();
        continue;
      }
      const node = scope.graph.nodes.get(next.value);
      const mode = nodeMode(node);
      // A muted or bypassed subgraph instance drops everything inside it too.
      if (isVirtual(node.type) || mode === MODE_NEVER || mode === MODE_BYPASS) continue;
      const child = this.childScope(scope, next.value);
      if (child) stack.push([child, [...child.graph.nodes.keys()][Symbol.iterator]()]);
      else yield [scope, next.value];
    }
  }

  /**
   * What feeds input `index` of a node: a link {id, slot}, {constant}, REMOVED or null.
   * @param {Scope} scope
   * @param {string} nodeId
   * @param {number} index
   * @param {any} targetType
   * @returns {Resolved}
   */
  resolveInput(scope, nodeId, index, targetType) {
    const visited = new Set();
    /** @type {Step} */
    let state = ["in", scope, nodeId, index];
    /** @type {Resolved} */
    let result = null;
    while (state) {
      const [kind, atScope, atNode, slot] = /** @type {NonNullable<Step>} */ (state);
      const key = `${kind}|${atScope.path.join(":")}|${atNode}|${slot}`;
      if (visited.has(key)) {
        const name = ((scope.graph.nodes.get(nodeId).inputs || [])[index] || {}).name;
        throw new GraphError(
          `node ${execId(scope, nodeId)} input '${name}': its links loop back on themselves at node ` +
            `${execId(atScope, atNode)} (through reroutes, bypassed nodes or subgraph boundaries)`,
        );
      }
      visited.add(key);
      [result, state] = kind === "in" ? this.stepIn(atScope, atNode, slot) : this.stepOut(atScope, atNode, slot, targetType);
    }
    return result;
  }

  /** @param {Scope} scope @param {string} nodeId @param {number} slot @returns {[Resolved, Step]} */
  stepIn(scope, nodeId, slot) {
    const inputs = scope.graph.nodes.get(nodeId).inputs || [];
    if (slot >= inputs.length) return [null, null];
    const linkId = inputLinkId(inputs[slot]);
    const link = linkId === null ? undefined : scope.graph.links.get(linkId);
    return link ? this.follow(scope, link) : [null, null];
  }

  /** @param {Scope} scope @param {UiLink} link @returns {[Resolved, Step]} */
  follow(scope, link) {
    if (scope.instance && link.origin_id === scope.graph.inputNodeId) return this.leaveSubgraph(scope, link.origin_slot);
    if (!scope.graph.nodes.has(link.origin_id)) return [null, null];
    return [null, ["out", scope, link.origin_id, link.origin_slot]];
  }

  /** A link from the subgraph's input node: continue with what feeds the instance. */
  /** @param {Scope} scope @param {number} slot @returns {[Resolved, Step]} */
  leaveSubgraph(scope, slot) {
    const instanceId = scope.path[scope.path.length - 1];
    const index = instanceInputIndex(scope.graph, scope.instance, slot);
    const inputs = scope.instance.inputs || [];
    if (index !== null && inputLinkId(inputs[index]) !== null) return [null, ["in", /** @type {Scope} */ (scope.parent), instanceId, index]];
    return [instanceWidgetValue(scope.graph, scope.instance, slot), null];
  }

  /** @param {Scope} scope @param {string} nodeId @param {number} slot @param {any} targetType @returns {[Resolved, Step]} */
  stepOut(scope, nodeId, slot, targetType) {
    const node = scope.graph.nodes.get(nodeId);
    if (node.type === PRIMITIVE_TYPE) {
      // The frontend copies the primitive's value into every widget it feeds, whatever its mode.
      const values = node.widgets_values;
      return [Array.isArray(values) && values.length ? { constant: values[0] } : null, null];
    }
    if (NOTE_TYPES.has(node.type)) return [null, null];
    if (nodeMode(node) === MODE_BYPASS) {
      const through = bypassInputIndex(node, slot, targetType);
      return [null, through === null ? null : ["in", scope, nodeId, through]];
    }
    if (this.passthroughTypes.has(node.type)) return [null, ["in", scope, nodeId, slot]];
    if (nodeMode(node) === MODE_NEVER) return [REMOVED, null];
    const child = this.childScope(scope, nodeId);
    if (child) {
      const link = outputLink(child.graph, slot);
      return link ? this.follow(child, link) : [null, null];
    }
    return [{ id: execId(scope, nodeId), slot }, null];
  }
}

/**
 * The instance input matching subgraph input `slot` (by name: saved instances may omit unlinked
 * widget inputs, so positions are not reliable).
 * @param {UiGraph} definition
 * @param {any} instance
 * @param {number} slot
 * @returns {number | null}
 */
export function instanceInputIndex(definition, instance, slot) {
  const inputs = instance.inputs || [];
  const name = slot < definition.inputs.length ? definition.inputs[slot].name : undefined;
  if (name !== null && name !== undefined) {
    const index = inputs.findIndex((/** @type {any} */ entry) => entry.name === name);
    return index >= 0 ? index : null;
  }
  return slot < inputs.length ? slot : null;
}

/**
 * The value an instance's promoted widget gives subgraph input `slot`, if it has one.
 * @param {UiGraph} definition
 * @param {any} instance
 * @param {number} slot
 * @returns {{constant: any} | null}
 */
export function instanceWidgetValue(definition, instance, slot) {
  const values = instance.widgets_values;
  const name = slot < definition.inputs.length ? definition.inputs[slot].name : undefined;
  if (values && typeof values === "object" && !Array.isArray(values)) {
    return typeof name === "string" && Object.hasOwn(values, name) ? { constant: values[name] } : null;
  }
  if (!Array.isArray(values)) return null;
  const proxies = proxyEntries(instance);
  if (proxies) {
    // proxyWidgets entries ["-1", name] stand for promoted subgraph inputs.
    const index = proxies.findIndex(([target, widget]) => target === "-1" && widget === name);
    return index >= 0 && index < values.length ? { constant: values[index] } : null;
  }
  const position = definition.promoted.indexOf(slot);
  return position >= 0 && position < values.length ? { constant: values[position] } : null;
}

/** @param {any} instance @returns {[string, string][] | null} */
function proxyEntries(instance) {
  const properties = instance.properties;
  const raw = properties && typeof properties === "object" ? properties.proxyWidgets : undefined;
  if (!Array.isArray(raw)) return null;
  // Malformed entries keep their place so positions stay aligned with widgets_values.
  return raw.map((entry) =>
    Array.isArray(entry) && entry.length >= 2 && typeof entry[1] === "string" ? [nodeIdStr(entry[0]) || "", entry[1]] : ["", ""],
  );
}

/**
 * Inner widget values an instance overrides through `properties.proxyWidgets` (frontend 1.2x+).
 * @param {any} instance
 * @returns {Map<string, Record<string, any>>}
 */
function proxyOverrides(instance) {
  /** @type {Map<string, Record<string, any>>} */
  const overrides = new Map();
  const proxies = proxyEntries(instance);
  const values = instance.widgets_values;
  if (!proxies || !Array.isArray(values)) return overrides;
  const count = Math.min(proxies.length, values.length);
  for (let index = 0; index < count; index += 1) {
    const [target, widget] = proxies[index];
    if (!target || target === "-1" || !widget) continue;
    if (!overrides.has(target)) overrides.set(target, {});
    /** @type {Record<string, any>} */ (overrides.get(target))[widget] = values[index];
  }
  return overrides;
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
