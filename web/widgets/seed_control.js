// @ts-check
/**
 * control_after_generate: the row under a seed (stored in widgets_values right after it) choosing
 * what happens to the value after each queued prompt -- fixed, increment, decrement, randomize.
 * Applying the mode after a queue is the app's job (web/ui/controls.js).
 */

import { ARROW_W, drawArrows, drawBox, drawLabelValue } from "./common.js";
import { openChoiceList, stepChoice } from "./combo.js";

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
    const width = wctx.screenRect().w / wctx.scale;
    if (local[0] < ARROW_W + 4 || local[0] > width - ARROW_W - 4) {
      wctx.set(stepChoice(MODES, wctx.value, local[0] < ARROW_W + 4 ? -1 : 1), "Change control mode");
      return;
    }
    return {
      up(moved) {
        if (moved) return;
        openChoiceList(wctx.overlay, wctx.screenRect(), MODES, wctx.value, (mode) => {
          if (mode !== wctx.value) wctx.set(mode, "Change control mode");
        });
      },
    };
  },
};
