// @ts-check
/** STRING (single line) widget: shows the value; a click types a new one in a DOM input. */

import { drawBox, drawLabelValue, promptInput } from "./common.js";

/** @type {import("./common.js").WidgetModule} */
export const textWidget = {
  draw(ctx, row, value, w, opts) {
    drawBox(ctx, w, row.h, opts.disabled);
    if (!opts.text) return;
    drawLabelValue(ctx, row.name, opts.linked ? "(linked)" : String(value ?? ""), w, row.h, 10, opts.disabled);
  },

  pointerDown(wctx) {
    const start = String(wctx.value ?? "");
    return {
      up(moved) {
        if (moved) return;
        promptInput(wctx.overlay, wctx.screenRect(), start, (text) => {
          if (text !== start) wctx.set(text, "Edit text");
        });
      },
    };
  },
};
