// @ts-check
/**
 * Node geometry in node-local coordinates (origin = node.pos, the body's top-left; the title bar
 * is above it at y = -TITLE_H, as in litegraph): slot positions, widget rows, image area, the
 * size a node needs. Pure apart from text measuring (a cached 2D context when there is a DOM,
 * an estimate otherwise), so it is unit-tested under node.
 */

import { primitiveHasControl, primitiveTarget } from "../graph/effective_types.js";
import { NOTE_TYPES, PRIMITIVE_TYPE, REROUTE_TYPES, VIRTUAL_INFO } from "../graph/virtual.js";
import { normalizeWidgetValues, widgetLayout } from "../graph/widgets_values.js";
import { COLLAPSED_W, FONT, FONT_SMALL, IMAGE_MIN_H, MULTILINE_MIN_H, SLOT_H, TITLE_H, WIDGET_GAP, WIDGET_H } from "./theme.js";

/**
 * @typedef {"number"|"text"|"multiline"|"boolean"|"combo"|"seed_control"|"image_upload"} WidgetKind
 * @typedef {object} WidgetRow
 * @property {string} name the input's name (the label shown)
 * @property {WidgetKind} kind
 * @property {"value"|"control"|"upload"} slotKind
 * @property {number} index position in `values` (widgets_values layout)
 * @property {import("../graph/types.js").InputDecl | null} decl
 * @property {boolean} direct write by position (Note, PrimitiveNode) instead of by name
 * @property {number} y top of the row, node-local
 * @property {number} h
 * @property {number} inputSlot index in node.inputs when the widget also has a socket, else -1
 * @typedef {{x: number, y: number, label: string, type: any, onWidget: boolean}} SlotPlace
 * @typedef {object} NodeLayout
 * @property {number} w
 * @property {number} h body height (the title is above)
 * @property {number} titleH
 * @property {string} title
 * @property {SlotPlace[]} inputs indexed like node.inputs
 * @property {SlotPlace[]} outputs indexed like node.outputs
 * @property {WidgetRow[]} widgets
 * @property {any[]} values the node's widget values in full layout
 * @property {number[] | null} image [x, y, w, h] where images are drawn
 * @property {boolean} collapsed
 * @property {boolean} reroute
 * @property {boolean} known the type is in object_info (or virtual)
 * @property {any[]} key what the layout was computed from (cache check)
 */

/** @type {CanvasRenderingContext2D | null | undefined} */
let measureCtx;
/** @type {Map<string, number>} */
const widths = new Map();

/**
 * Width of `text` in `font`, cached (text measuring is slow; layouts are cached anyway).
 * @param {string} text
 * @param {string} [font]
 */
export function textWidth(text, font = FONT) {
  const key = font + "\u0000" + text;
  let width = widths.get(key);
  if (width !== undefined) return width;
  if (measureCtx === undefined) {
    measureCtx = typeof document !== "undefined" ? document.createElement("canvas").getContext("2d") : null;
  }
  if (measureCtx) {
    measureCtx.font = font;
    width = measureCtx.measureText(text).width;
  } else {
    width = text.length * 7;
  }
  if (widths.size > 20000) widths.clear();
  widths.set(key, width);
  return width;
}

/**
 * @param {import("../graph/types.js").InputDecl} decl
 * @returns {WidgetKind}
 */
function valueKind(decl) {
  if (decl.choices !== null) return "combo";
  if (decl.type === "INT" || decl.type === "FLOAT") return "number";
  if (decl.type === "BOOLEAN") return "boolean";
  if (decl.type === "STRING") return decl.options.multiline ? "multiline" : "text";
  return "text";
}

/**
 * The widget rows (without positions) and values of a node.
 * @param {import("../graph/model.js").Node} node
 * @param {any} entry its object_info entry, or undefined
 * @param {import("../graph/model.js").Graph | null} graph needed for PrimitiveNode (its target decides the widget)
 * @param {Record<string, any>} objectInfo
 * @returns {{rows: WidgetRow[], values: any[]}}
 */
export function widgetRows(node, entry, graph, objectInfo) {
  /** @type {WidgetRow[]} */
  const rows = [];
  const raw = Array.isArray(node.widgets_values) ? node.widgets_values : [];
  /** @param {Partial<WidgetRow> & {name: string, kind: WidgetKind, index: number}} row */
  const push = (row) => rows.push({ slotKind: "value", decl: null, direct: false, y: 0, h: WIDGET_H, inputSlot: -1, ...row });
  if (NOTE_TYPES.has(node.type)) {
    push({ name: "text", kind: "multiline", index: 0, direct: true });
    return { rows, values: raw.length ? raw : [""] };
  }
  if (node.type === PRIMITIVE_TYPE) {
    const found = graph ? primitiveTarget(graph, node, objectInfo) : null;
    if (!found) return { rows, values: raw };
    const decl = found.decl;
    push({ name: decl.name, kind: valueKind(decl), index: 0, decl, direct: true });
    if (primitiveHasControl(decl)) push({ name: "control_after_generate", kind: "seed_control", slotKind: "control", index: 1, decl, direct: true });
    return { rows, values: raw };
  }
  if (!entry) return { rows, values: raw };
  const values = normalizeWidgetValues(node.widgets_values, entry);
  widgetLayout(entry).forEach((slot, index) => {
    const decl = slot.input;
    if (slot.kind === "value") push({ name: decl.name, kind: valueKind(decl), index, decl });
    else if (slot.kind === "control") push({ name: "control_after_generate", kind: "seed_control", slotKind: "control", index, decl });
    else if (slot.kind === "upload") push({ name: "upload", kind: "image_upload", slotKind: "upload", index, decl });
  });
  for (const row of rows) {
    if (row.slotKind === "value") row.inputSlot = node.inputs.findIndex((inp) => inp.widget && inp.widget.name === row.name);
  }
  return { rows, values };
}

/**
 * Compute a node's layout. `size` in the node is a wish: the layout is never smaller than the
 * content needs (ComfyUI grows nodes the same way), and spare height goes to text areas or images.
 * @param {import("../graph/model.js").Node} node
 * @param {Record<string, any>} objectInfo
 * @param {import("../graph/model.js").Graph | null} [graph]
 * @param {boolean} [hasImage] reserve room for images (outputs, preview, uploaded picture)
 * @returns {NodeLayout}
 */
export function computeLayout(node, objectInfo, graph = null, hasImage = false) {
  const entry = objectInfo[node.type];
  const known = Boolean(entry) || NOTE_TYPES.has(node.type) || REROUTE_TYPES.has(node.type) || node.type === PRIMITIVE_TYPE;
  const title = node.title ?? (entry && entry.display_name) ?? (Object.hasOwn(VIRTUAL_INFO, node.type) ? VIRTUAL_INFO[node.type].display_name : undefined) ?? node.type;
  const key = layoutKey(node, hasImage);
  if (REROUTE_TYPES.has(node.type)) return rerouteLayout(node, title, key);
  const { rows, values } = widgetRows(node, entry, graph, objectInfo);
  const onWidget = new Set(rows.map((row) => row.inputSlot).filter((slot) => slot >= 0));
  const socketInputs = node.inputs.map((_, slot) => slot).filter((slot) => !onWidget.has(slot));
  const slotRows = Math.max(socketInputs.length, node.outputs.length);
  let width = Math.max(textWidth(title) + 48, rows.length ? 240 : 140);
  for (const row of rows) {
    if (row.kind === "multiline") width = Math.max(width, 300);
    else if (row.kind !== "image_upload") width = Math.max(width, textWidth(row.slotKind === "control" ? "control after generate" : row.name, FONT_SMALL) + 150);
  }
  for (let row = 0; row < slotRows; row++) {
    const inp = socketInputs[row] !== undefined ? node.inputs[socketInputs[row]] : null;
    const out = node.outputs[row];
    const left = inp ? textWidth(inp.label || inp.name) : 0;
    const right = out ? textWidth(out.label || out.name || String(out.type)) : 0;
    width = Math.max(width, left + right + 48);
  }
  const widgetsTop = slotRows * SLOT_H + (slotRows ? 8 : 4);
  let y = widgetsTop;
  let flexible = 0;
  for (const row of rows) {
    row.h = row.kind === "multiline" ? MULTILINE_MIN_H : WIDGET_H;
    if (row.kind === "multiline") flexible += 1;
    y += row.h + WIDGET_GAP;
  }
  const minH = y + (hasImage ? IMAGE_MIN_H : 0) + 4;
  const w = Math.max(node.size[0] || 0, width);
  const h = Math.max(node.size[1] || 0, minH);
  const spare = h - minH;
  y = widgetsTop;
  for (const row of rows) {
    if (row.kind === "multiline" && !hasImage) row.h += spare / flexible;
    row.y = y;
    y += row.h + WIDGET_GAP;
  }
  /** @type {SlotPlace[]} */
  const inputs = node.inputs.map((inp) => ({ x: 0, y: 0, label: inp.label || inp.name, type: inp.type, onWidget: false }));
  socketInputs.forEach((slot, row) => (inputs[slot].y = row * SLOT_H + SLOT_H / 2 + 4));
  for (const row of rows) {
    if (row.inputSlot < 0) continue;
    inputs[row.inputSlot].y = row.y + WIDGET_H / 2;
    inputs[row.inputSlot].onWidget = true;
  }
  const outputs = node.outputs.map((out, row) => ({
    x: w,
    y: row * SLOT_H + SLOT_H / 2 + 4,
    label: out.label || out.name || String(out.type),
    type: out.type,
    onWidget: false,
  }));
  const image = hasImage ? [8, y, w - 16, Math.max(h - y - 6, 40)] : null;
  const collapsed = Boolean(node.flags && node.flags.collapsed);
  const layout = { w, h, titleH: TITLE_H, title, inputs, outputs, widgets: rows, values, image, collapsed, reroute: false, known, key };
  if (collapsed) collapse(layout);
  return layout;
}

/** @param {NodeLayout} layout collapsed nodes: a title pill, every slot at its ends */
function collapse(layout) {
  layout.w = Math.max(COLLAPSED_W, textWidth(layout.title) + 44);
  layout.h = 0;
  for (const place of layout.inputs) Object.assign(place, { x: 0, y: -TITLE_H / 2 });
  for (const place of layout.outputs) Object.assign(place, { x: layout.w, y: -TITLE_H / 2 });
  layout.widgets = [];
  layout.image = null;
}

/**
 * @param {import("../graph/model.js").Node} node
 * @param {string} title
 * @param {any[]} key
 * @returns {NodeLayout}
 */
function rerouteLayout(node, title, key) {
  const w = 75;
  const h = 26;
  const place = (/** @type {any} */ slot, /** @type {number} */ x) => ({ x, y: h / 2, label: "", type: slot.type, onWidget: false });
  return {
    w,
    h,
    titleH: 0,
    title,
    inputs: node.inputs.map((inp) => place(inp, 0)),
    outputs: node.outputs.map((out) => place(out, w)),
    widgets: [],
    values: [],
    image: null,
    collapsed: false,
    reroute: true,
    known: true,
    key,
  };
}

/**
 * What a layout depends on, compared without allocating by `sameKey`.
 * @param {import("../graph/model.js").Node} node
 * @param {boolean} hasImage
 */
export function layoutKey(node, hasImage) {
  return [node.widgets_values, node.inputs.length, node.outputs.length, node.size[0], node.size[1], Boolean(node.flags && node.flags.collapsed), node.title, hasImage, node.type, primitiveLinks(node)];
}

/**
 * @param {any[]} key
 * @param {import("../graph/model.js").Node} node
 * @param {boolean} hasImage
 */
export function sameKey(key, node, hasImage) {
  return (
    key[0] === node.widgets_values &&
    key[1] === node.inputs.length &&
    key[2] === node.outputs.length &&
    key[3] === node.size[0] &&
    key[4] === node.size[1] &&
    key[5] === Boolean(node.flags && node.flags.collapsed) &&
    key[6] === node.title &&
    key[7] === hasImage &&
    key[8] === node.type &&
    key[9] === primitiveLinks(node)
  );
}

/**
 * A PrimitiveNode's widget follows what its output feeds, so its link count is part of the key.
 * @param {import("../graph/model.js").Node} node
 */
function primitiveLinks(node) {
  return node.type === PRIMITIVE_TYPE && node.outputs[0] ? node.outputs[0].links.length : 0;
}

/**
 * The node's full rectangle in graph space (title included), written into `out`.
 * @param {import("../graph/model.js").Node} node
 * @param {NodeLayout} layout
 * @param {number[]} [out]
 */
export function nodeBounds(node, layout, out = [0, 0, 0, 0]) {
  out[0] = node.pos[0];
  out[1] = node.pos[1] - layout.titleH;
  out[2] = layout.w;
  out[3] = layout.h + layout.titleH;
  return out;
}
