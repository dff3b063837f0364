// @ts-check
/**
 * STRING multiline widget: a DOM textarea laid over the node that follows pan and zoom (scaled
 * with a CSS transform so its text wraps the same at every zoom), hidden when zoomed far out or
 * the node is collapsed or off screen; the canvas then draws the first lines itself.
 */

import { FONT_SMALL, theme } from "../canvas/theme.js";

/** Below this zoom the textareas are hidden (too small to edit). */
export const TEXTAREA_MIN_SCALE = 0.5;

/** Keys a textarea keeps for itself (text editing), even with Ctrl/Cmd held. */
const EDITING_KEYS = new Set(["a", "c", "v", "x", "z", "y", "ArrowLeft", "ArrowRight", "Home", "End", "Backspace", "Delete"]);

/** @type {import("./common.js").WidgetModule} */
export const multilineWidget = {
  draw(ctx, row, value, w, opts) {
    ctx.fillStyle = theme.widgetBg;
    ctx.strokeStyle = opts.disabled ? theme.widgetDisabled : theme.widgetBorder;
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.roundRect(0, 0, w, row.h, 4);
    ctx.fill();
    ctx.stroke();
    if (!opts.text || (opts.scale >= TEXTAREA_MIN_SCALE && !opts.linked && !opts.covered)) return;
    // Zoomed out or under another node: no textarea, so show the start of the text.
    ctx.font = FONT_SMALL;
    ctx.textAlign = "left";
    ctx.textBaseline = "top";
    ctx.fillStyle = opts.disabled ? theme.widgetDisabled : theme.widgetText;
    const lines = String(opts.linked ? "(linked)" : value ?? "").split("\n", 3);
    lines.forEach((line, index) => {
      if ((index + 1) * 16 < row.h) ctx.fillText(line, 6, 5 + index * 16, w - 12);
    });
  },
};

/**
 * @typedef {{area: HTMLTextAreaElement, seen: boolean, edited: boolean, nodeId: number, index: number, row: import("../canvas/layout.js").WidgetRow}} Entry
 * @typedef {(nodeId: number, row: import("../canvas/layout.js").WidgetRow, value: string, first: boolean) => void} OnInput
 */

/** The textareas of the visible multiline widgets, placed after each draw. */
export class MultilineOverlays {
  /**
   * @param {HTMLElement} overlay
   * @param {OnInput} onInput first = the first change since the textarea got focus (undo checkpoint)
   * @param {(event: WheelEvent) => void} [onWheel] wheel events the textarea does not need (zoom the canvas)
   */
  constructor(overlay, onInput, onWheel) {
    this.overlay = overlay;
    this.onInput = onInput;
    this.onWheel = onWheel;
    /** @type {Map<string, Entry>} */
    this.entries = new Map();
  }

  begin() {
    for (const entry of this.entries.values()) entry.seen = false;
  }

  /**
   * Show (create or reuse) the textarea of one row at a screen position.
   * @param {number} nodeId
   * @param {import("../canvas/layout.js").WidgetRow} row
   * @param {any} value
   * @param {number} x screen left (CSS px, canvas-relative)
   * @param {number} y
   * @param {number} w width in graph units
   * @param {number} scale
   * @param {boolean} disabled
   */
  place(nodeId, row, value, x, y, w, scale, disabled) {
    const key = `${nodeId}:${row.index}`;
    let entry = this.entries.get(key);
    if (!entry) {
      entry = this.create(nodeId, row);
      this.entries.set(key, entry);
    }
    entry.seen = true;
    entry.row = row;
    const area = entry.area;
    const text = String(value ?? "");
    if (document.activeElement !== area && area.value !== text) area.value = text;
    area.disabled = disabled;
    const style = area.style;
    style.display = "block";
    style.transform = `translate(${x}px, ${y}px) scale(${scale})`;
    style.width = `${w}px`;
    style.height = `${row.h}px`;
  }

  /** Hide the textareas not placed since begin(); drop those of removed nodes. */
  end() {
    for (const [key, entry] of this.entries) {
      if (entry.seen) continue;
      if (document.activeElement === entry.area) entry.area.blur();
      entry.area.remove();
      this.entries.delete(key);
    }
  }

  /**
   * @param {number} nodeId
   * @param {import("../canvas/layout.js").WidgetRow} row
   * @returns {Entry}
   */
  create(nodeId, row) {
    const area = document.createElement("textarea");
    area.className = "loom-multiline";
    area.dataset.testid = "widget-textarea";
    area.dataset.nodeId = String(nodeId);
    area.dataset.widget = row.name;
    area.spellcheck = false;
    Object.assign(area.style, {
      position: "absolute",
      left: "0",
      top: "0",
      transformOrigin: "0 0",
      boxSizing: "border-box",
      resize: "none",
      margin: "0",
      padding: "4px 6px",
      font: "12px/1.35 system-ui, sans-serif",
      color: theme.widgetText,
      background: theme.widgetBg,
      border: `1px solid ${theme.widgetBorder}`,
      borderRadius: "4px",
      outline: "none",
      pointerEvents: "auto",
      zIndex: "5",
    });
    const entry = { area, seen: true, edited: false, nodeId, index: row.index, row };
    area.addEventListener("focus", () => (entry.edited = false));
    area.addEventListener("input", () => {
      this.onInput(entry.nodeId, entry.row, area.value, !entry.edited);
      entry.edited = true;
    });
    area.addEventListener("keydown", (event) => {
      const plain = !event.ctrlKey && !event.metaKey;
      if (plain || EDITING_KEYS.has(event.key)) event.stopPropagation();
      if (event.key === "Escape") area.blur();
    });
    area.addEventListener("pointerdown", (event) => event.stopPropagation());
    area.addEventListener(
      "wheel",
      (event) => {
        // Scroll the text when it overflows; otherwise the wheel zooms/pans the canvas as anywhere else.
        const scrollable = area.scrollHeight > area.clientHeight + 1;
        if (this.onWheel && (event.ctrlKey || event.metaKey || !scrollable)) this.onWheel(event);
      },
      { passive: false },
    );
    this.overlay.appendChild(area);
    return entry;
  }

  destroy() {
    for (const entry of this.entries.values()) entry.area.remove();
    this.entries.clear();
  }
}
