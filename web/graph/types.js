// @ts-check
/**
 * Socket type compatibility, as ComfyUI's link rule (spec §4.2, non-strict mode), and the
 * widget/socket split of object_info inputs. Pure functions, no DOM.
 */

export const ANY_TYPE = "*";

/** Types the editor shows as widgets (constants) rather than sockets. */
export const WIDGET_TYPES = new Set(["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"]);

/**
 * The members of a comma union ("IMAGE,MASK"), trimmed.
 * @param {string} type
 * @returns {Set<string>}
 */
export function splitTypes(type) {
  return new Set(
    type
      .split(",")
      .map((part) => part.trim())
      .filter((part) => part !== ""),
  );
}

/**
 * Can an output of type `received` feed an input of type `expected`?
 * Equal names, `*` on either side, a list (combo output) into COMBO, or intersecting comma unions.
 * @param {unknown} received
 * @param {unknown} expected
 * @returns {boolean}
 */
export function typesCompatible(received, expected) {
  if (received === expected) return true;
  if (received === ANY_TYPE || expected === ANY_TYPE) return true;
  if (Array.isArray(received)) return expected === "COMBO";
  if (typeof received !== "string" || typeof expected !== "string") return false;
  const wanted = splitTypes(expected);
  for (const member of splitTypes(received)) {
    if (wanted.has(member)) return true;
  }
  return false;
}

/**
 * litegraph's looser rule used for bypass routing: an empty or missing type acts like `*`,
 * and either direction may match.
 * @param {unknown} a
 * @param {unknown} b
 * @returns {boolean}
 */
export function looseCompatible(a, b) {
  if (a === undefined || a === null || a === "" || a === 0) return true;
  if (b === undefined || b === null || b === "" || b === 0) return true;
  return typesCompatible(a, b) || typesCompatible(b, a);
}

/**
 * @typedef {object} InputDecl
 * @property {string} name
 * @property {string} section "required" | "optional"
 * @property {string} type the socket type ("COMBO" for a list of choices)
 * @property {string[] | null} choices
 * @property {Record<string, any>} options
 * @property {boolean} isWidget
 */

/**
 * The declared, linkable inputs of an object_info entry in INPUT_TYPES order (hidden ones are
 * filled by the executor and never shown).
 * @param {any} entry one value of /object_info
 * @returns {InputDecl[]}
 */
export function declaredInputs(entry) {
  /** @type {InputDecl[]} */
  const result = [];
  const input = (entry && entry.input) || {};
  const order = (entry && entry.input_order) || {};
  for (const section of ["required", "optional"]) {
    const block = input[section] || {};
    const names = Array.isArray(order[section]) ? order[section] : Object.keys(block);
    for (const name of names) {
      if (!(name in block)) continue;
      result.push(makeDecl(name, section, block[name]));
    }
  }
  return result;
}

/**
 * @param {string} name
 * @param {string} section
 * @param {any} raw `[TYPE, {options}]` or `[[choices], {options}]`
 * @returns {InputDecl}
 */
function makeDecl(name, section, raw) {
  const head = Array.isArray(raw) ? raw[0] : raw;
  const options = (Array.isArray(raw) && raw[1] && typeof raw[1] === "object" ? raw[1] : {}) || {};
  /** @type {string[] | null} */
  let choices = null;
  let type = typeof head === "string" ? head : ANY_TYPE;
  if (Array.isArray(head)) {
    choices = head;
    type = "COMBO";
  } else if (head === "COMBO") {
    choices = Array.isArray(options.options) ? options.options : [];
  }
  const isWidget = !options.forceInput && (choices !== null || WIDGET_TYPES.has(type));
  return { name, section, type, choices, options, isWidget };
}

/**
 * The outputs of an object_info entry: `{name, type, isList}` per slot.
 * @param {any} entry
 * @returns {{name: string, type: string, isList: boolean}[]}
 */
export function declaredOutputs(entry) {
  const types = (entry && entry.output) || [];
  const names = (entry && entry.output_name) || [];
  const lists = (entry && entry.output_is_list) || [];
  return types.map((/** @type {any} */ type, /** @type {number} */ index) => ({
    name: typeof names[index] === "string" ? names[index] : String(type),
    type: Array.isArray(type) ? "COMBO" : String(type),
    isList: Boolean(lists[index]),
  }));
}
