// @ts-check
/**
 * The editor's graph model: nodes, links and groups as plain, serialisable data (the shapes of
 * ComfyUI's UI workflow format), with deterministic operations. No DOM; the canvas renders it.
 * Every change bumps `version` and notifies listeners, which is what undo and redraw hook into.
 */

import { adoptPrimitiveType, linkRefusal, releasePrimitive, slotType } from "./effective_types.js";
import { declaredInputs, declaredOutputs, typesCompatible } from "./types.js";
import { defaultWidgetValues, normalizeWidgetValues, widgetIndex } from "./widgets_values.js";

export const MODE_ALWAYS = 0;
export const MODE_NEVER = 2;
export const MODE_BYPASS = 4;
const MODES = new Set([MODE_ALWAYS, 1, MODE_NEVER, 3, MODE_BYPASS]);

/**
 * @typedef {{name: string, type: string, link: number | null, widget?: {name: string}, label?: string}} NodeInput
 * @typedef {{name: string, type: string, links: number[], slot_index?: number, is_list?: boolean, label?: string,
 *   widget?: {name: string}}} NodeOutput widget: the widget a PrimitiveNode feeds
 * @typedef {object} Node
 * @property {number} id
 * @property {string} type
 * @property {string} [title]
 * @property {string} [color] title bar colour
 * @property {string} [bgcolor] body colour
 * @property {number[]} pos
 * @property {number[]} size
 * @property {Record<string, any>} flags
 * @property {number} order
 * @property {number} mode
 * @property {NodeInput[]} inputs
 * @property {NodeOutput[]} outputs
 * @property {Record<string, any>} properties
 * @property {any[] | Record<string, any>} widgets_values
 * @typedef {{id: number, origin_id: number, origin_slot: number, target_id: number, target_slot: number, type: any}} Link
 * @typedef {{id: number, title: string, bounding: number[], color?: string, font_size?: number, flags?: Record<string, any>}} Group
 */

export class GraphError extends Error {}

export class Graph {
  constructor() {
    /** @type {Map<number, Node>} */
    this.nodes = new Map();
    /** @type {Map<number, Link>} */
    this.links = new Map();
    /** @type {Group[]} */
    this.groups = [];
    this.last_node_id = 0;
    this.last_link_id = 0;
    this.version = 0;
    /** @type {Record<string, any>} */
    this.extra = {};
    /** @type {any} subgraph definitions, kept as loaded; serialize.js flattens them for the API prompt */
    this.definitions = undefined;
    /** @type {Set<(graph: Graph, what: string) => void>} */
    this.listeners = new Set();
  }

  /** @param {string} what */
  changed(what) {
    this.version += 1;
    for (const listener of this.listeners) listener(this, what);
  }

  /**
   * Add a node given as (partial) UI-format data; without an id the next free one is taken.
   * @param {Partial<Node> & {type: string}} data
   * @returns {Node}
   */
  addNode(data) {
    const id = data.id ?? this.last_node_id + 1;
    if (this.nodes.has(id)) throw new GraphError(`node ${id} already exists`);
    /** @type {Node} */
    const node = {
      id,
      type: data.type,
      pos: data.pos ? [...data.pos] : [0, 0],
      size: data.size ? [...data.size] : [200, 100],
      flags: { ...(data.flags || {}) },
      order: data.order ?? this.nodes.size,
      mode: data.mode ?? MODE_ALWAYS,
      inputs: (data.inputs || []).map((inp) => ({ ...inp, link: inp.link ?? null })),
      outputs: (data.outputs || []).map((out, index) => ({ ...out, links: [...(out.links || [])], slot_index: index })),
      properties: { ...(data.properties || {}) },
      widgets_values: Array.isArray(data.widgets_values) ? [...data.widgets_values] : { ...(data.widgets_values || {}) },
    };
    if (data.title !== undefined) node.title = data.title;
    this.nodes.set(id, node);
    this.last_node_id = Math.max(this.last_node_id, id);
    this.changed("node-added");
    return node;
  }

  /**
   * Create a node of `type` from its /object_info entry: sockets for linkable inputs, widget
   * values with their defaults, outputs from output/output_name/output_is_list.
   * @param {string} type
   * @param {Record<string, any>} objectInfo
   * @param {Partial<Node>} [extra] pos, title, ...
   */
  createNode(type, objectInfo, extra = {}) {
    const entry = objectInfo[type];
    if (!entry) throw new GraphError(`unknown node type '${type}': it is not in object_info`);
    const inputs = declaredInputs(entry)
      .filter((inp) => !inp.isWidget)
      .map((inp) => ({ name: inp.name, type: inp.type, link: null }));
    const outputs = declaredOutputs(entry).map((out) => ({
      name: out.name,
      type: out.type,
      links: [],
      ...(out.isList ? { is_list: true } : {}),
    }));
    return this.addNode({
      ...extra,
      type,
      inputs,
      outputs,
      properties: { "Node name for S&R": type, ...(extra.properties || {}) },
      widgets_values: defaultWidgetValues(entry),
    });
  }

  /**
   * @param {number} id
   * @returns {Node}
   */
  node(id) {
    const node = this.nodes.get(id);
    if (!node) throw new GraphError(`node ${id} does not exist`);
    return node;
  }

  /** @param {number} id */
  removeNode(id) {
    const node = this.node(id);
    node.inputs.forEach((inp, slot) => {
      if (inp.link !== null) this.disconnect(id, slot);
    });
    for (const out of node.outputs) {
      for (const linkId of [...out.links]) {
        const link = this.links.get(linkId);
        if (link) this.disconnect(link.target_id, link.target_slot);
      }
    }
    this.nodes.delete(id);
    this.changed("node-removed");
  }

  /**
   * Link output `originSlot` of one node to input `targetSlot` of another, replacing whatever
   * fed that input. Refuses links whose types are incompatible (a Reroute's types are those
   * flowing through it) and a PrimitiveNode feeding a socket that is no widget; a PrimitiveNode
   * takes the type of the first widget it feeds.
   * @returns {Link}
   */
  connect(/** @type {number} */ originId, /** @type {number} */ originSlot, /** @type {number} */ targetId, /** @type {number} */ targetSlot) {
    const origin = this.node(originId);
    const target = this.node(targetId);
    const out = origin.outputs[originSlot];
    const inp = target.inputs[targetSlot];
    if (!out) throw new GraphError(`node ${originId} (${origin.type}) has no output ${originSlot}`);
    if (!inp) throw new GraphError(`node ${targetId} (${target.type}) has no input ${targetSlot}`);
    const outType = slotType(this, origin, "output", originSlot);
    const inType = slotType(this, target, "input", targetSlot);
    if (!typesCompatible(outType, inType)) {
      throw new GraphError(
        `cannot link node ${originId} output '${out.name}' (${outType}) to node ${targetId} input '${inp.name}' (${inType})`,
      );
    }
    const refusal = linkRefusal(origin, inp);
    if (refusal) throw new GraphError(`cannot link node ${originId} to node ${targetId} input '${inp.name}': ${refusal}`);
    if (inp.link !== null) this.disconnect(targetId, targetSlot);
    adoptPrimitiveType(origin, inp);
    const type = slotType(this, origin, "output", originSlot);
    const link = { id: ++this.last_link_id, origin_id: originId, origin_slot: originSlot, target_id: targetId, target_slot: targetSlot, type };
    this.links.set(link.id, link);
    inp.link = link.id;
    out.links.push(link.id);
    this.changed("link-added");
    return link;
  }

  /**
   * Remove the link feeding input `targetSlot` of a node; false when nothing was linked.
   * @param {number} targetId
   * @param {number} targetSlot
   */
  disconnect(targetId, targetSlot) {
    const inp = this.node(targetId).inputs[targetSlot];
    if (!inp || inp.link === null) return false;
    const link = this.links.get(inp.link);
    inp.link = null;
    if (link) {
      this.links.delete(link.id);
      const origin = this.nodes.get(link.origin_id);
      const out = origin && origin.outputs[link.origin_slot];
      if (out) out.links = out.links.filter((linkId) => linkId !== link.id);
      releasePrimitive(origin);
    }
    this.changed("link-removed");
    return true;
  }

  /**
   * Turn widget `name` into a socket (so a link or a PrimitiveNode can feed it).
   * @param {number} id
   * @param {string} name
   * @param {Record<string, any>} objectInfo
   * @returns {number} the new input's slot
   */
  widgetToInput(id, name, objectInfo) {
    const node = this.node(id);
    const decl = declaredInputs(objectInfo[node.type]).find((inp) => inp.name === name && inp.isWidget);
    if (!decl) throw new GraphError(`node ${id} (${node.type}) has no widget '${name}'`);
    const existing = node.inputs.findIndex((inp) => inp.name === name);
    if (existing >= 0) return existing;
    node.inputs.push({ name, type: decl.type, link: null, widget: { name } });
    this.changed("node-changed");
    return node.inputs.length - 1;
  }

  /**
   * Widget value of input `name` (or its control_after_generate mode with kind "control").
   * @param {number} id
   * @param {string} name
   * @param {Record<string, any>} objectInfo
   * @param {"value"|"control"} [kind]
   */
  getWidget(id, name, objectInfo, kind = "value") {
    const node = this.node(id);
    const entry = objectInfo[node.type];
    if (!Array.isArray(node.widgets_values)) return node.widgets_values[name];
    const values = normalizeWidgetValues(node.widgets_values, entry);
    const index = widgetIndex(entry, name, kind);
    return index < 0 ? undefined : values[index];
  }

  /**
   * @param {number} id
   * @param {string} name
   * @param {any} value
   * @param {Record<string, any>} objectInfo
   * @param {"value"|"control"} [kind]
   */
  setWidget(id, name, value, objectInfo, kind = "value") {
    const node = this.node(id);
    const entry = objectInfo[node.type];
    if (!entry) throw new GraphError(`node ${id}: type '${node.type}' is not in object_info`);
    const index = widgetIndex(entry, name, kind);
    if (index < 0) throw new GraphError(`node ${id} (${node.type}) has no widget '${name}'${kind === "control" ? " control" : ""}`);
    const values = normalizeWidgetValues(node.widgets_values, entry);
    values[index] = value;
    node.widgets_values = values;
    this.changed("widget-changed");
  }

  /**
   * Set widgets_values[index] directly (nodes without an object_info entry: Note, PrimitiveNode).
   * @param {number} id
   * @param {number} index
   * @param {any} value
   */
  setWidgetValue(id, index, value) {
    const node = this.node(id);
    if (!Array.isArray(node.widgets_values)) throw new GraphError(`node ${id} (${node.type}) keeps its widget values by name`);
    const values = [...node.widgets_values];
    values[index] = value;
    node.widgets_values = values;
    this.changed("widget-changed");
  }

  /**
   * Set one of a node's flags (collapsed, pinned, ...); undefined removes it.
   * @param {number} id
   * @param {string} flag
   * @param {any} value
   */
  setFlag(id, flag, value) {
    const node = this.node(id);
    if (value === undefined) delete node.flags[flag];
    else node.flags[flag] = value;
    this.changed("node-changed");
  }

  /**
   * @param {number} id
   * @param {number} mode 0 always, 2 never (muted), 4 bypass
   */
  setMode(id, mode) {
    if (!MODES.has(mode)) throw new GraphError(`node ${id}: unknown mode ${mode}`);
    this.node(id).mode = mode;
    this.changed("node-changed");
  }

  /** @param {number} id @param {string} title */
  setTitle(id, title) {
    this.node(id).title = title;
    this.changed("node-changed");
  }

  /** @param {number} id @param {number[]} pos @param {number[]} [size] */
  moveNode(id, pos, size) {
    const node = this.node(id);
    node.pos = [...pos];
    if (size) node.size = [...size];
    this.changed("node-moved");
  }

  /**
   * @param {string} title
   * @param {number[]} bounding [x, y, w, h]
   * @returns {Group}
   */
  addGroup(title, bounding) {
    const id = this.groups.reduce((max, group) => Math.max(max, group.id), 0) + 1;
    const group = { id, title, bounding: [...bounding] };
    this.groups.push(group);
    this.changed("group-added");
    return group;
  }

  /**
   * Move or resize a group (its nodes are moved separately with moveNode).
   * @param {number} id
   * @param {number[]} bounding [x, y, w, h]
   */
  moveGroup(id, bounding) {
    const group = this.groups.find((candidate) => candidate.id === id);
    if (!group) throw new GraphError(`group ${id} does not exist`);
    group.bounding = [...bounding];
    this.changed("group-moved");
  }

  /**
   * @param {number} id
   * @param {string} title
   */
  setGroupTitle(id, title) {
    const group = this.groups.find((candidate) => candidate.id === id);
    if (!group) throw new GraphError(`group ${id} does not exist`);
    group.title = title;
    this.changed("group-changed");
  }

  /** @param {number} id */
  removeGroup(id) {
    this.groups = this.groups.filter((group) => group.id !== id);
    this.changed("group-removed");
  }
}
