// @ts-check
/** BOOLEAN widget: a toggle; a click flips it. */

import { FONT_SMALL, theme } from "../canvas/theme.js";
import { drawBox } from "./common.js";

/** @type {import("./common.js").WidgetModule} */
export const booleanWidget = {
  draw(ctx, row, value, w, opts) {
    drawBox(ctx, w, row.h, opts.disabled);
    const on = Boolean(value);
    const h = row.h;
    ctx.fillStyle = opts.disabled ? theme.widgetDisabled : on ? theme.running : "#5c616b";
    ctx.beginPath();
    ctx.roundRect(w - 40, 4, 30, h - 8, (h - 8) / 2);
    ctx.fill();
    ctx.fillStyle = "#e8e8e8";
    ctx.beginPath();
    ctx.arc(on ? w - 10 - (h - 8) / 2 : w - 40 + (h - 8) / 2, h / 2, (h - 12) / 2, 0, Math.PI * 2);
    ctx.fill();
    if (!opts.text) return;
    ctx.font = FONT_SMALL;
    ctx.textBaseline = "middle";
    ctx.textAlign = "left";
    ctx.fillStyle = opts.disabled ? theme.widgetDisabled : theme.widgetLabel;
    ctx.fillText(row.name, 10, h / 2 + 1, w - 100);
    ctx.textAlign = "right";
    ctx.fillStyle = opts.disabled ? theme.widgetDisabled : theme.widgetText;
    ctx.fillText(opts.linked ? "(linked)" : on ? "true" : "false", w - 46, h / 2 + 1);
  },

  pointerDown(wctx) {
    return {
      up(moved) {
        if (!moved) wctx.set(!wctx.value, "Toggle");
      },
    };
  },
};
