// @ts-check
/**
 * INT / FLOAT widget: drag sideways to change, the arrows step, a click types a value. Values
 * follow ComfyUI's rules: `step` from object_info is the arrow/drag step, FLOATs are rounded to
 * `round` (or to the step's precision when `round` is absent; `round: false` turns it off),
 * INTs snap to multiples of `step`, and everything is clamped to [min, max].
 */

import { ARROW_W, drawArrows, drawBox, drawLabelValue, promptInput } from "./common.js";

/** Graph px of horizontal drag per step. */
const DRAG_PX_PER_STEP = 6;

/**
 * Decimal places of a number such as 0.01 -> 2.
 * @param {number} value
 */
export function decimals(value) {
  if (!Number.isFinite(value) || value <= 0 || value >= 1) return 0;
  return Math.max(0, Math.ceil(-Math.log10(value) - 1e-9));
}

/**
 * @param {Record<string, any>} options the input's object_info options
 * @param {boolean} isInt
 */
export function stepOf(options, isInt) {
  const step = Number(options.step);
  if (Number.isFinite(step) && step > 0) return isInt ? Math.max(1, Math.round(step)) : step;
  return isInt ? 1 : 0.01;
}

/**
 * Clamp and round a typed or dragged value the way ComfyUI stores it.
 * @param {number} value
 * @param {Record<string, any>} options
 * @param {boolean} isInt
 * @returns {number}
 */
export function normalizeNumber(value, options, isInt) {
  if (!Number.isFinite(value)) value = Number(options.default ?? 0) || 0;
  const min = typeof options.min === "number" ? options.min : -Infinity;
  const max = typeof options.max === "number" ? options.max : Infinity;
  if (isInt) {
    const step = stepOf(options, true);
    value = Math.round(value);
    if (step > 1) value = Math.round(value / step) * step;
    value = Math.min(max, Math.max(min, value));
    return Math.min(Number.MAX_SAFE_INTEGER, Math.max(Number.MIN_SAFE_INTEGER, value));
  }
  const round = floatRound(options);
  if (round > 0) value = Number((Math.round(value / round) * round).toFixed(decimals(round)));
  return Math.min(max, Math.max(min, value));
}

/**
 * The rounding quantum of a FLOAT input (0 = none).
 * @param {Record<string, any>} options
 */
export function floatRound(options) {
  if (options.round === false) return 0;
  if (typeof options.round === "number" && options.round > 0) return options.round;
  return 10 ** -decimals(stepOf(options, false));
}

/**
 * How a number is shown: FLOATs with the step's precision, more when the value has it.
 * @param {any} value
 * @param {Record<string, any>} options
 * @param {boolean} isInt
 */
export function formatNumber(value, options, isInt) {
  const number = Number(value);
  if (!Number.isFinite(number)) return String(value);
  if (isInt) return String(Math.round(number));
  const shown = Math.max(decimals(stepOf(options, false)), 0);
  const most = Math.max(shown, decimals(floatRound(options) || 1e-6));
  for (let places = shown; places <= most; places++) {
    if (Math.abs(Number(number.toFixed(places)) - number) < 1e-9) return number.toFixed(places);
  }
  return number.toFixed(most);
}

/** @type {import("./common.js").WidgetModule} */
export const numberWidget = {
  draw(ctx, row, value, w, opts) {
    drawBox(ctx, w, row.h, opts.disabled);
    if (!opts.text) return;
    if (!opts.disabled) drawArrows(ctx, w, row.h, false);
    const decl = row.decl;
    const isInt = !decl || decl.type === "INT";
    const shown = opts.linked ? "(linked)" : formatNumber(value, decl ? decl.options : {}, isInt);
    drawLabelValue(ctx, row.name, shown, w, row.h, ARROW_W + 4, opts.disabled);
  },

  pointerDown(wctx, local) {
    const options = wctx.row.decl ? wctx.row.decl.options : {};
    const isInt = !wctx.row.decl || wctx.row.decl.type === "INT";
    const step = stepOf(options, isInt);
    const start = Number(wctx.value) || 0;
    const width = wctx.screenRect().w / wctx.scale;
    if (local[0] < ARROW_W + 4 || local[0] > width - ARROW_W - 4) {
      const direction = local[0] < ARROW_W + 4 ? -1 : 1;
      const next = normalizeNumber(start + direction * step, options, isInt);
      if (next !== start) wctx.set(next, "Change value");
      return;
    }
    let changed = false;
    return {
      move(dx) {
        const next = normalizeNumber(start + Math.trunc(dx / DRAG_PX_PER_STEP) * step, options, isInt);
        if (next === (changed ? wctx.values[wctx.row.index] : start)) return;
        if (changed) wctx.setLive(next);
        else wctx.set(next, "Change value");
        changed = true;
      },
      up(moved) {
        if (moved || changed) return;
        promptInput(wctx.overlay, wctx.screenRect(), formatNumber(start, options, isInt), (text) => {
          const parsed = parseNumber(text);
          if (parsed === null) return;
          const next = normalizeNumber(parsed, options, isInt);
          if (next !== start) wctx.set(next, "Change value");
        });
      },
    };
  },
};

/**
 * A typed number ("1e3", " 12 " and "0x10" as JavaScript reads them); null when it is not one.
 * @param {string} text
 * @returns {number | null}
 */
export function parseNumber(text) {
  const trimmed = text.trim();
  if (trimmed === "") return null;
  const parsed = Number(trimmed);
  return Number.isFinite(parsed) ? parsed : null;
}
