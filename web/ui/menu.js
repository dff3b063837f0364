// @ts-check
/**
 * Context menus. On a node: title, colour, collapse, pin, bypass, mute, convert a widget to an
 * input (and back), remove. On the canvas: add node, add group, fit view (and, inside a group,
 * rename/remove it). Items are buttons (data-testid="menu-item", data-action) so the keyboard
 * works: arrows move, Enter picks, Escape closes.
 */

import { h } from "./dialog.js";

/** ComfyUI's node colour palette, kept with the canvas theme that draws it. */
export { NODE_COLORS } from "../canvas/theme.js";

/**
 * @typedef {{label: string, action: string, shortcut?: string, run: () => void} | {separator: true} |
 *           {swatches: {name: string, color: string, run: () => void}[]}} MenuEntry
 */

export class ContextMenu {
  constructor() {
    /** @type {HTMLElement | null} */
    this.el = null;
    this.onOutside = (/** @type {MouseEvent} */ event) => {
      if (this.el && !this.el.contains(/** @type {Node} */ (event.target))) this.close();
    };
  }

  get isOpen() {
    return this.el !== null;
  }

  /**
   * @param {number[]} at page coordinates
   * @param {string} title
   * @param {MenuEntry[]} entries
   */
  open(at, title, entries) {
    this.close();
    const items = entries.map((entry) => {
      if ("separator" in entry) return h("hr");
      if ("swatches" in entry) {
        return h("div", { className: "swatches" }, entry.swatches.map((swatch) =>
          h("button", { type: "button", className: "swatch", title: swatch.name, "aria-label": `Colour ${swatch.name}`, style: { background: swatch.color }, dataset: { testid: "menu-item", action: `color-${swatch.name}` }, onclick: () => this.pick(swatch.run) }),
        ));
      }
      return h("button", { type: "button", role: "menuitem", dataset: { testid: "menu-item", action: entry.action }, onclick: () => this.pick(entry.run) }, [
        h("span", { textContent: entry.label }),
        entry.shortcut ? h("span", { className: "shortcut", textContent: entry.shortcut }) : null,
      ]);
    });
    const el = h("div", { className: "context-menu", role: "menu", dataset: { testid: "context-menu" } }, [h("div", { className: "menu-title", textContent: title }), ...items]);
    el.addEventListener("keydown", (event) => this.onKey(event));
    el.addEventListener("contextmenu", (event) => event.preventDefault());
    document.body.append(el);
    const box = el.getBoundingClientRect();
    el.style.left = `${Math.max(4, Math.min(at[0], window.innerWidth - box.width - 4))}px`;
    el.style.top = `${Math.max(4, Math.min(at[1], window.innerHeight - box.height - 4))}px`;
    this.el = el;
    const first = /** @type {HTMLElement | null} */ (el.querySelector("button[role=menuitem]"));
    if (first) first.focus({ preventScroll: true });
    setTimeout(() => document.addEventListener("mousedown", this.onOutside, true), 0);
  }

  /** @param {() => void} run */
  pick(run) {
    this.close();
    run();
  }

  close() {
    document.removeEventListener("mousedown", this.onOutside, true);
    if (this.el) this.el.remove();
    this.el = null;
  }

  /** @param {KeyboardEvent} event */
  onKey(event) {
    if (!this.el) return;
    const buttons = /** @type {HTMLElement[]} */ (Array.from(this.el.querySelectorAll("button[role=menuitem]")));
    const index = buttons.indexOf(/** @type {HTMLElement} */ (document.activeElement));
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      const step = event.key === "ArrowDown" ? 1 : buttons.length - 1;
      const next = buttons[(Math.max(index, 0) + (index < 0 ? 0 : step)) % buttons.length];
      if (next) next.focus();
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      this.close();
    }
  }
}
