// @ts-check
/**
 * control_after_generate: the row under a seed (stored in widgets_values right after it) choosing
 * what happens to the value after each queued prompt -- fixed, increment, decrement, randomize.
 * Applying the mode after a queue is the app's job (web/ui/controls.js).
 */

import { ARROW_W, drawArrows, drawBox, drawLabelValue } from "./common.js";
import { pickChoice } from "./combo.js";

export const MODES = ["fixed", "increment", "decrement", "randomize"];

/** @type {import("./common.js").WidgetModule} */
export const seedControlWidget = {
  draw(ctx, row, value, w, opts) {
    drawBox(ctx, w, row.h, opts.disabled);
    if (!opts.text) return;
    if (!opts.disabled) drawArrows(ctx, w, row.h, false);
    drawLabelValue(ctx, "control after generate", String(value ?? "fixed"), w, row.h, ARROW_W + 4, opts.disabled);
  },

  pointerDown(wctx, local) {
    return pickChoice(wctx, local, MODES, "Change control mode");
  },
};
