// @ts-check
/**
 * The frontend-only node types of ComfyUI's editor (never sent to the server: the prompt
 * conversion follows or skips them) and how the editor creates them, since /object_info does
 * not describe them. The search lists them through VIRTUAL_INFO.
 */

export const PRIMITIVE_TYPE = "PrimitiveNode";
export const REROUTE_TYPES = new Set(["Reroute"]);
export const NOTE_TYPES = new Set(["Note", "MarkdownNote"]);
/** The output name ComfyUI gives a PrimitiveNode that feeds nothing yet. */
export const PRIMITIVE_UNLINKED = "connect to widget input";

/** @param {string} type */
export function isVirtualType(type) {
  return type === PRIMITIVE_TYPE || REROUTE_TYPES.has(type) || NOTE_TYPES.has(type);
}

/**
 * Search entries shaped like /object_info ones, so the node search can offer the frontend-only
 * nodes next to the server's (never merged into the app's object_info: nothing else may treat
 * them as server nodes).
 * @type {Record<string, any>}
 */
export const VIRTUAL_INFO = {
  PrimitiveNode: {
    name: PRIMITIVE_TYPE,
    display_name: "Primitive",
    category: "utils",
    description: "One value that feeds widget inputs of other nodes (connect it to a widget)",
    input: { required: {} },
    output: ["*"],
    output_name: [PRIMITIVE_UNLINKED],
    virtual: true,
  },
  Reroute: {
    name: "Reroute",
    display_name: "Reroute",
    category: "utils",
    description: "A point a link passes through, to tidy the graph",
    input: { required: { "": ["*"] } },
    output: ["*"],
    output_name: [""],
    virtual: true,
  },
  Note: {
    name: "Note",
    display_name: "Note",
    category: "utils",
    description: "A text note on the canvas",
    input: { required: {} },
    output: [],
    output_name: [],
    virtual: true,
  },
};

/**
 * The UI-format data of a new frontend-only node (what ComfyUI saves for a fresh one), for
 * Graph.addNode.
 * @param {string} type
 * @param {number[]} pos
 * @returns {Partial<import("./model.js").Node> & {type: string}}
 */
export function virtualNodeData(type, pos) {
  const at = [Math.round(pos[0]), Math.round(pos[1])];
  if (type === PRIMITIVE_TYPE) {
    return {
      type,
      pos: at,
      size: [210, 60],
      inputs: [],
      outputs: [{ name: PRIMITIVE_UNLINKED, type: "*", links: [] }],
      properties: { "Run widget replace on values": false },
      widgets_values: [],
    };
  }
  if (REROUTE_TYPES.has(type)) {
    return {
      type,
      pos: at,
      size: [75, 26],
      inputs: [{ name: "", type: "*", link: null }],
      outputs: [{ name: "", type: "*", links: [] }],
      properties: { showOutputText: false, horizontal: false },
    };
  }
  if (NOTE_TYPES.has(type)) {
    return { type, pos: at, size: [400, 200], properties: {}, widgets_values: [""] };
  }
  throw new Error(`'${type}' is not a frontend-only node type`);
}
