// @ts-check
/**
 * widgets_values <-> named inputs, the same rules as the server's execution/workflow_widgets.py.
 *
 * The editor saves widget values positionally, in INPUT_TYPES order (required, then optional),
 * with UI-only companions in between: the control_after_generate mode after seed-like inputs
 * (combos with a control also get a filter string), and the upload button's value after the last
 * required widget of a node with an `image_upload` combo. Old files may lack companions, so when
 * the count does not match the layout, a companion is consumed only when its value looks like one.
 */

import { WIDGET_TYPES, declaredInputs } from "./types.js";

export const CONTROL_MODES = new Set(["fixed", "increment", "decrement", "randomize"]);
const LEGACY_SEED_NAMES = new Set(["seed", "noise_seed"]);
const UPLOAD_OPTIONS = ["image_upload", "video_upload", "audio_upload", "animated_image_upload"];

/** @typedef {import("./types.js").InputDecl} InputDecl */
/** @typedef {{kind: "value"|"control"|"filter"|"upload"|"forced", input: InputDecl}} Slot */

/** @param {InputDecl} inp */
export function hasControl(inp) {
  if (inp.options.control_after_generate) return true;
  return inp.type === "INT" && LEGACY_SEED_NAMES.has(inp.name);
}

/** @param {InputDecl} inp */
function hasUpload(inp) {
  return inp.choices !== null && UPLOAD_OPTIONS.some((option) => Boolean(inp.options[option]));
}

/**
 * The saved layout of widgets_values for an object_info entry.
 * @param {any} entry
 * @param {boolean} [withForced] also keep a place for forceInput widgets (some frontends did)
 * @returns {Slot[]}
 */
export function widgetLayout(entry, withForced = false) {
  /** @type {Slot[]} */
  const slots = [];
  const inputs = declaredInputs(entry);
  for (const section of ["required", "optional"]) {
    for (const inp of inputs.filter((candidate) => candidate.section === section)) {
      slots.push(...inputSlots(inp, withForced));
    }
    const upload = inputs.find((inp) => inp.section === "required" && hasUpload(inp));
    // The upload button is one more required input: its value follows the last required widget.
    if (section === "required" && upload) slots.push({ kind: "upload", input: upload });
  }
  return slots;
}

/**
 * @param {InputDecl} inp
 * @param {boolean} withForced
 * @returns {Slot[]}
 */
function inputSlots(inp, withForced) {
  if (!inp.isWidget) {
    if (withForced && (inp.choices !== null || WIDGET_TYPES.has(inp.type))) {
      /** @type {Slot[]} */
      const forced = [{ kind: "forced", input: inp }];
      if (inp.options.control_after_generate) forced.push({ kind: "control", input: inp });
      return forced;
    }
    return [];
  }
  /** @type {Slot[]} */
  const slots = [{ kind: "value", input: inp }];
  if (hasControl(inp)) {
    slots.push({ kind: "control", input: inp });
    if (inp.choices !== null) slots.push({ kind: "filter", input: inp });
  }
  return slots;
}

/**
 * The value a freshly created widget shows.
 * @param {InputDecl} inp
 * @returns {any} undefined when the widget has no natural default
 */
export function widgetDefault(inp) {
  if ("default" in inp.options) return inp.options.default;
  if (inp.choices !== null) return inp.choices.length ? inp.choices[0] : undefined;
  if (inp.type === "INT" || inp.type === "FLOAT") {
    const { min, max } = inp.options;
    if (typeof min === "number" && 0 < min) return min;
    if (typeof max === "number" && 0 > max) return max;
    return 0;
  }
  if (inp.type === "STRING") return "";
  if (inp.type === "BOOLEAN") return false;
  return undefined;
}

/**
 * A fresh node's widgets_values: defaults, "randomize" for controls, "" for filters, null upload.
 * @param {any} entry
 * @returns {any[]}
 */
export function defaultWidgetValues(entry) {
  return widgetLayout(entry).map((slot) => {
    if (slot.kind === "control") return "randomize";
    if (slot.kind === "filter") return "";
    if (slot.kind === "upload") return null;
    const value = widgetDefault(slot.input);
    return value === undefined ? null : value;
  });
}

/**
 * Input name -> widget value for one node; missing values take the widget's default.
 * @param {any[] | Record<string, any> | null | undefined} raw the node's widgets_values
 * @param {any} entry its object_info entry
 * @returns {Record<string, any>}
 */
export function namedWidgetValues(raw, entry) {
  const widgets = declaredInputs(entry).filter((inp) => inp.isWidget);
  /** @type {Record<string, any>} */
  let assigned = {};
  if (raw && !Array.isArray(raw) && typeof raw === "object") {
    for (const inp of widgets) if (inp.name in raw) assigned[inp.name] = raw[inp.name];
  } else {
    assigned = assignPositional(Array.isArray(raw) ? raw : [], entry);
  }
  for (const inp of widgets) {
    if (inp.name in assigned) continue;
    const value = widgetDefault(inp);
    if (value !== undefined && value !== null) assigned[inp.name] = value;
  }
  return assigned;
}

/**
 * The positional position of widget `name` in a full layout, or -1.
 * @param {any} entry
 * @param {string} name
 * @param {"value"|"control"} [kind]
 */
export function widgetIndex(entry, name, kind = "value") {
  return widgetLayout(entry).findIndex((slot) => slot.kind === kind && slot.input.name === name);
}

/**
 * Rebuild widgets_values in the full current layout from any saved form (keeps control modes).
 * @param {any[] | Record<string, any> | null | undefined} raw
 * @param {any} entry
 * @returns {any[]}
 */
export function normalizeWidgetValues(raw, entry) {
  const named = namedWidgetValues(raw, entry);
  const layout = widgetLayout(entry);
  const values = Array.isArray(raw) ? raw : [];
  const fresh = defaultWidgetValues(entry);
  return layout.map((slot, index) => {
    if (slot.kind === "value") return slot.input.name in named ? named[slot.input.name] : fresh[index];
    // Companions keep their saved value only when the saved list already had this exact layout.
    return values.length === layout.length ? values[index] : fresh[index];
  });
}

/**
 * @param {any[]} values
 * @param {any} entry
 * @returns {Record<string, any>}
 */
function assignPositional(values, entry) {
  const slots = widgetLayout(entry);
  const forced = widgetLayout(entry, true);
  if (values.length === slots.length) return zipSlots(slots, values);
  if (forced.length !== slots.length && values.length === forced.length) return zipSlots(forced, values);
  return walk(slots, values);
}

/**
 * @param {Slot[]} slots
 * @param {any[]} values
 */
function zipSlots(slots, values) {
  /** @type {Record<string, any>} */
  const assigned = {};
  slots.forEach((slot, index) => {
    if (slot.kind === "value") assigned[slot.input.name] = values[index];
  });
  return assigned;
}

/**
 * @param {Slot[]} slots
 * @param {any[]} values
 */
function walk(slots, values) {
  const neededAfter = new Array(slots.length).fill(0);
  let remaining = 0;
  for (let position = slots.length - 1; position >= 0; position--) {
    neededAfter[position] = remaining;
    if (slots[position].kind === "value") remaining += 1;
  }
  /** @type {Record<string, any>} */
  const assigned = {};
  let cursor = 0;
  for (let position = 0; position < slots.length && cursor < values.length; position++) {
    const slot = slots[position];
    const value = values[cursor];
    if (slot.kind === "value") {
      assigned[slot.input.name] = value;
      cursor += 1;
      continue;
    }
    const spare = values.length - cursor - neededAfter[position];
    if (companionFits(slot, value, spare, slots.slice(position + 1))) cursor += 1;
  }
  return assigned;
}

/**
 * @param {Slot} slot
 * @param {any} value
 * @param {number} spare
 * @param {Slot[]} rest
 */
function companionFits(slot, value, spare, rest) {
  if (slot.kind === "control") {
    if (!CONTROL_MODES.has(value)) return false;
    // A declared control is trusted; the legacy name rule only when the value cannot belong to
    // the next widget (a string or combo widget could legitimately hold "fixed").
    return Boolean(slot.input.options.control_after_generate) || spare > 0 || !nextTakesString(rest);
  }
  if (spare <= 0) return false;
  if (slot.kind === "filter") return typeof value === "string";
  return value === null || value === undefined || typeof value === "string";
}

/** @param {Slot[]} rest */
function nextTakesString(rest) {
  const next = rest.find((slot) => slot.kind === "value");
  return next ? next.input.type === "STRING" || next.input.choices !== null : false;
}
