// @ts-check
/**
 * COMBO widget: the arrows step through the choices, a click opens a searchable list (type to
 * filter, arrow keys and Enter to pick, Escape or a click outside to close).
 */

import { theme } from "../canvas/theme.js";
import { ARROW_W, drawArrows, drawBox, drawLabelValue } from "./common.js";

/**
 * @param {import("../canvas/layout.js").WidgetRow} row
 * @returns {any[]}
 */
export function choicesOf(row) {
  return row.decl && Array.isArray(row.decl.choices) ? row.decl.choices : [];
}

/**
 * The choice `delta` places from `value` (wrapping), or the first one when `value` is unknown.
 * @param {any[]} choices
 * @param {any} value
 * @param {number} delta
 */
export function stepChoice(choices, value, delta) {
  if (!choices.length) return value;
  const index = choices.indexOf(value);
  if (index < 0) return choices[0];
  return choices[(index + delta + choices.length) % choices.length];
}

/**
 * Case-insensitive filter: every space-separated word must occur in the choice.
 * @param {any[]} choices
 * @param {string} query
 */
export function filterChoices(choices, query) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  if (!words.length) return choices;
  return choices.filter((choice) => {
    const text = String(choice).toLowerCase();
    return words.every((word) => text.includes(word));
  });
}

/** @type {HTMLElement | null} */
let openList = null;

/** Close the open choice list, if any. */
export function closeChoiceList() {
  if (openList) openList.remove();
  openList = null;
}

/**
 * The popup's elements: a box under `rect` holding a filter input and a scrolling list.
 * @param {{x: number, y: number, w: number, h: number}} rect
 */
function listElements(rect) {
  const box = document.createElement("div");
  box.className = "loom-combo";
  box.dataset.testid = "combo-list";
  Object.assign(box.style, {
    position: "absolute",
    left: `${rect.x}px`,
    top: `${rect.y + rect.h + 2}px`,
    minWidth: `${Math.max(180, rect.w)}px`,
    maxWidth: "420px",
    background: "#202226",
    border: `1px solid ${theme.widgetBorder}`,
    borderRadius: "6px",
    boxShadow: "0 6px 20px rgba(0,0,0,0.5)",
    zIndex: "30",
    pointerEvents: "auto",
    font: "13px system-ui, sans-serif",
    color: theme.widgetText,
  });
  const search = document.createElement("input");
  search.placeholder = "Filter…";
  search.dataset.testid = "combo-filter";
  Object.assign(search.style, {
    width: "100%",
    boxSizing: "border-box",
    background: "#15171a",
    color: theme.widgetText,
    border: "none",
    borderBottom: `1px solid ${theme.widgetBorder}`,
    padding: "6px 8px",
    outline: "none",
    borderRadius: "6px 6px 0 0",
  });
  const list = document.createElement("div");
  Object.assign(list.style, { maxHeight: "320px", overflowY: "auto" });
  box.append(search, list);
  return { box, search, list };
}

/**
 * Fill the list with (at most 500 of) the shown choices, the active one highlighted.
 * @param {HTMLElement} list
 * @param {any[]} shown
 * @param {number} active
 * @param {any} current
 * @param {(choice: any) => void} finish
 */
function fillList(list, shown, active, current, finish) {
  list.replaceChildren();
  shown.slice(0, 500).forEach((choice, index) => {
    const item = document.createElement("div");
    item.textContent = String(choice);
    item.dataset.testid = "combo-item";
    item.dataset.value = String(choice);
    Object.assign(item.style, {
      padding: "4px 10px",
      cursor: "pointer",
      whiteSpace: "nowrap",
      overflow: "hidden",
      textOverflow: "ellipsis",
      background: index === active ? "#3a5f8a" : choice === current ? "#2c3038" : "transparent",
    });
    item.addEventListener("pointerdown", (event) => {
      event.preventDefault();
      finish(choice);
    });
    list.appendChild(item);
  });
  const activeItem = /** @type {HTMLElement | undefined} */ (list.children[active]);
  if (activeItem) activeItem.scrollIntoView({ block: "nearest" });
}

/**
 * A searchable list of choices under `rect`: type to filter, arrow keys and Enter to pick,
 * Escape or a click outside to close.
 * @param {HTMLElement} overlay
 * @param {{x: number, y: number, w: number, h: number}} rect
 * @param {any[]} choices
 * @param {any} current
 * @param {(choice: any) => void} pick
 */
export function openChoiceList(overlay, rect, choices, current, pick) {
  closeChoiceList();
  const { box, search, list } = listElements(rect);
  let shown = choices;
  let active = Math.max(0, choices.indexOf(current));
  const render = () => fillList(list, shown, active, current, finish);
  const finish = (/** @type {any} */ choice) => {
    closeChoiceList();
    document.removeEventListener("pointerdown", outside, true);
    if (choice !== undefined) pick(choice);
  };
  const outside = (/** @type {Event} */ event) => {
    if (!box.contains(/** @type {Node} */ (event.target))) finish(undefined);
  };
  search.addEventListener("input", () => {
    shown = filterChoices(choices, search.value);
    active = 0;
    render();
  });
  search.addEventListener("keydown", (event) => {
    event.stopPropagation();
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      if (shown.length) active = (active + (event.key === "ArrowDown" ? 1 : -1) + shown.length) % shown.length;
      render();
    } else if (event.key === "Enter") {
      finish(shown[active]);
    } else if (event.key === "Escape") {
      finish(undefined);
    }
  });
  overlay.appendChild(box);
  openList = box;
  render();
  search.focus();
  document.addEventListener("pointerdown", outside, true);
  return box;
}

/**
 * A press on a row of choices: the arrows step to the previous/next choice, a click elsewhere
 * (released without moving) opens the searchable list. Shared by COMBO and the seed control row.
 * @param {import("./common.js").WidgetContext} wctx
 * @param {number[]} local the press in row coordinates
 * @param {any[]} choices
 * @param {string} label the undo label
 * @returns {import("./common.js").DragHandler | undefined}
 */
export function pickChoice(wctx, local, choices, label) {
  const width = wctx.screenRect().w / wctx.scale;
  if (local[0] < ARROW_W + 4 || local[0] > width - ARROW_W - 4) {
    const next = stepChoice(choices, wctx.value, local[0] < ARROW_W + 4 ? -1 : 1);
    if (next !== wctx.value) wctx.set(next, label);
    return;
  }
  return {
    /** @param {boolean} moved */
    up(moved) {
      if (moved) return;
      openChoiceList(wctx.overlay, wctx.screenRect(), choices, wctx.value, (/** @type {any} */ choice) => {
        if (choice !== wctx.value) wctx.set(choice, label);
      });
    },
  };
}

/** @type {import("./common.js").WidgetModule} */
export const comboWidget = {
  draw(ctx, row, value, w, opts) {
    drawBox(ctx, w, row.h, opts.disabled);
    if (!opts.text) return;
    if (!opts.disabled) drawArrows(ctx, w, row.h, false);
    drawLabelValue(ctx, row.name, opts.linked ? "(linked)" : String(value ?? ""), w, row.h, ARROW_W + 4, opts.disabled);
  },

  pointerDown(wctx, local) {
    return pickChoice(wctx, local, choicesOf(wctx.row), "Change value");
  },
};
