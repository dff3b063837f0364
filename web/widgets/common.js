// @ts-check
/**
 * Shared pieces of the widget modules: the context a widget gets, drawing helpers for the usual
 * "label ..... value" row with optional arrows, and the DOM text input laid over the canvas for
 * typing a value.
 */

import { FONT_SMALL, theme } from "../canvas/theme.js";

/**
 * @typedef {import("../canvas/layout.js").WidgetRow} WidgetRow
 * @typedef {object} DrawOpts
 * @property {boolean} text draw text (false when zoomed far out)
 * @property {boolean} disabled greyed: fed by a link, or the node is muted
 * @property {boolean} linked fed by a link (the value is not used)
 * @property {number} scale viewport zoom
 * @property {boolean} [covered] another node lies over this node (no DOM editor overlay is shown)
 * @typedef {object} WidgetContext what a widget may use when the user acts on it
 * @property {import("../graph/model.js").Node} node
 * @property {WidgetRow} row
 * @property {any} value the current value
 * @property {any[]} values all widget values of the node (full layout)
 * @property {(value: any, label?: string) => void} set records an undo checkpoint, then writes the value
 * @property {(value: any) => void} setLive writes without a checkpoint (drags after the first change)
 * @property {WidgetRow[]} rows all widget rows of the node
 * @property {(row: WidgetRow, value: any, label?: string) => void} setRow checkpoint, then write another row
 * @property {() => {x: number, y: number, w: number, h: number}} screenRect the row on screen (CSS px, canvas-relative)
 * @property {HTMLElement} overlay container for DOM editors (positioned over the canvas)
 * @property {import("../canvas/canvas.js").CanvasEnv} env
 * @property {Record<string, any>} objectInfo
 * @property {number} scale viewport zoom
 * @property {() => void} requestDraw
 * @typedef {object} DragHandler returned by pointerDown to follow the pointer until release
 * @property {(dx: number, dy: number, event: PointerEvent | MouseEvent) => void} [move] total movement since press, graph units
 * @property {(moved: boolean, event: PointerEvent | MouseEvent) => void} [up]
 * @typedef {object} WidgetModule
 * @property {(ctx: CanvasRenderingContext2D, row: WidgetRow, value: any, w: number, opts: DrawOpts) => void} draw
 *   ctx is translated to the row's top-left (graph units); w is the row's width
 * @property {(wctx: WidgetContext, local: number[], event: PointerEvent | MouseEvent) => DragHandler | void} [pointerDown]
 *   local: pointer position relative to the row's top-left, graph units
 */

export const ARROW_W = 16;

/**
 * @param {CanvasRenderingContext2D} ctx
 * @param {number} w
 * @param {number} h
 * @param {boolean} disabled
 */
export function drawBox(ctx, w, h, disabled) {
  ctx.fillStyle = theme.widgetBg;
  ctx.strokeStyle = disabled ? theme.widgetDisabled : theme.widgetBorder;
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.roundRect(0, 0, w, h, h / 2);
  ctx.fill();
  ctx.stroke();
}

/**
 * Label on the left, value on the right, truncated to fit.
 * @param {CanvasRenderingContext2D} ctx
 * @param {string} label
 * @param {string} value
 * @param {number} w
 * @param {number} h
 * @param {number} pad inner padding on both sides (room for arrows)
 * @param {boolean} disabled
 */
export function drawLabelValue(ctx, label, value, w, h, pad, disabled) {
  ctx.font = FONT_SMALL;
  ctx.textBaseline = "middle";
  const y = h / 2 + 1;
  ctx.textAlign = "left";
  ctx.fillStyle = disabled ? theme.widgetDisabled : theme.widgetLabel;
  const inner = w - 2 * pad;
  const valueWidth = ctx.measureText(value).width;
  // The value wins the room it needs up to 60%; the label gets the rest.
  const shownLabel = fit(ctx, label, Math.max(16, inner - Math.min(valueWidth, inner * 0.6) - 10));
  ctx.fillText(shownLabel, pad, y);
  ctx.textAlign = "right";
  ctx.fillStyle = disabled ? theme.widgetDisabled : theme.widgetText;
  const room = Math.max(10, inner - ctx.measureText(shownLabel).width - 10);
  ctx.fillText(fit(ctx, value, room), w - pad, y);
}

/** @type {Map<string, string>} */
const fitted = new Map();

/**
 * `text` shortened with an ellipsis to `room` px (cached: measuring is slow).
 * @param {CanvasRenderingContext2D} ctx
 * @param {string} text
 * @param {number} room
 */
export function fit(ctx, text, room) {
  const key = `${Math.round(room)}\u0000${text}`;
  const hit = fitted.get(key);
  if (hit !== undefined) return hit;
  let result = text;
  if (ctx.measureText(text).width > room) {
    let low = 0;
    let high = text.length;
    while (low < high) {
      const mid = (low + high + 1) >> 1;
      if (ctx.measureText(text.slice(0, mid) + "…").width <= room) low = mid;
      else high = mid - 1;
    }
    result = text.slice(0, low) + "…";
  }
  if (fitted.size > 5000) fitted.clear();
  fitted.set(key, result);
  return result;
}

/**
 * The small triangles of number and combo widgets.
 * @param {CanvasRenderingContext2D} ctx
 * @param {number} w
 * @param {number} h
 * @param {boolean} disabled
 */
export function drawArrows(ctx, w, h, disabled) {
  ctx.fillStyle = disabled ? theme.widgetDisabled : theme.widgetLabel;
  const mid = h / 2;
  ctx.beginPath();
  ctx.moveTo(12, mid - 4);
  ctx.lineTo(6, mid);
  ctx.lineTo(12, mid + 4);
  ctx.moveTo(w - 12, mid - 4);
  ctx.lineTo(w - 6, mid);
  ctx.lineTo(w - 12, mid + 4);
  ctx.fill();
}

/**
 * A DOM text input over a widget row to type a value; Enter or leaving commits, Escape cancels.
 * @param {HTMLElement} overlay
 * @param {{x: number, y: number, w: number, h: number}} rect canvas-relative CSS px
 * @param {string} value
 * @param {(text: string) => void} commit
 * @param {{type?: string}} [opts]
 * @returns {HTMLInputElement}
 */
export function promptInput(overlay, rect, value, commit, opts = {}) {
  const input = document.createElement("input");
  input.type = opts.type || "text";
  input.value = value;
  input.className = "loom-widget-input";
  input.dataset.testid = "widget-input";
  Object.assign(input.style, {
    position: "absolute",
    left: `${rect.x}px`,
    top: `${rect.y}px`,
    width: `${Math.max(60, rect.w)}px`,
    height: `${Math.max(18, rect.h)}px`,
    boxSizing: "border-box",
    font: `${Math.max(11, Math.min(18, rect.h * 0.6))}px system-ui, sans-serif`,
    color: theme.widgetText,
    background: "#15171a",
    border: `1px solid ${theme.progress}`,
    borderRadius: "4px",
    padding: "0 8px",
    zIndex: "20",
    pointerEvents: "auto",
    outline: "none",
  });
  let done = false;
  const finish = (/** @type {boolean} */ apply) => {
    if (done) return;
    done = true;
    input.remove();
    if (apply) commit(input.value);
  };
  input.addEventListener("keydown", (event) => {
    event.stopPropagation();
    if (event.key === "Enter") finish(true);
    else if (event.key === "Escape") finish(false);
  });
  input.addEventListener("blur", () => finish(true));
  overlay.appendChild(input);
  input.focus();
  input.select();
  return input;
}
