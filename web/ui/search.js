// @ts-check
/**
 * The node search: fuzzy matching over display name, class name, category and socket types
 * (pure functions, unit-tested), and the dialog (input + result list, arrow keys, Enter, Escape).
 * Opened from a link dropped on empty canvas, the list only holds nodes with a compatible slot.
 */

import { declaredInputs, declaredOutputs, typesCompatible } from "../graph/types.js";

/**
 * How well `query` matches `text` (both compared lower-case): exact > prefix > substring at a word
 * start > substring > subsequence; -1 when the query's letters do not all appear in order.
 * @param {string} query
 * @param {string} text
 */
export function fuzzyScore(query, text) {
  const q = query.toLowerCase();
  const t = text.toLowerCase();
  if (!q) return 0;
  if (t === q) return 1000;
  if (t.startsWith(q)) return 800 - Math.min(t.length - q.length, 50);
  const at = t.indexOf(q);
  if (at >= 0) return (isBoundary(t, at) ? 600 : 400) - Math.min(at, 50);
  // Subsequence: every letter in order; consecutive runs and word starts score higher.
  let score = 200;
  let position = -1;
  for (const char of q) {
    const next = t.indexOf(char, position + 1);
    if (next < 0) return -1;
    if (next === position + 1) score += 4;
    else score -= Math.min(next - position, 20);
    if (isBoundary(t, next)) score += 6;
    position = next;
  }
  return Math.max(score, 1);
}

/** @param {string} text @param {number} index */
function isBoundary(text, index) {
  if (index === 0) return true;
  const before = text[index - 1];
  return before === " " || before === "_" || before === "/" || before === "-" || before === ".";
}

/**
 * @typedef {{type: string, direction: "input"|"output"}} SlotFilter direction: the side of the NEW
 *   node to match (a link dragged from an output wants a node with a compatible input)
 * @typedef {{type: string, display: string, category: string, score: number}} SearchResult
 */

/**
 * Does this object_info entry have a slot a link of `filter` can connect to?
 * @param {any} entry
 * @param {SlotFilter} filter
 */
export function acceptsFilter(entry, filter) {
  if (filter.direction === "input") return declaredInputs(entry).some((inp) => typesCompatible(filter.type, inp.type));
  return declaredOutputs(entry).some((out) => typesCompatible(out.type, filter.type));
}

/**
 * Is the first socket on the wanted side the compatible one (a node built around that type)?
 * @param {any} entry
 * @param {SlotFilter} filter
 */
function firstSlotMatches(entry, filter) {
  if (filter.direction === "input") {
    const first = declaredInputs(entry).find((inp) => !inp.isWidget);
    return Boolean(first && typesCompatible(filter.type, first.type));
  }
  const first = declaredOutputs(entry)[0];
  return Boolean(first && typesCompatible(first.type, filter.type));
}

/** @param {any} entry */
function typeText(entry) {
  const inputs = declaredInputs(entry).filter((inp) => !inp.isWidget).map((inp) => inp.type);
  const outputs = declaredOutputs(entry).map((out) => out.type);
  return [...new Set([...inputs, ...outputs])].join(" ");
}

/**
 * Nodes matching `query` (every whitespace-separated word must match some field), best first.
 * @param {Record<string, any>} objectInfo
 * @param {string} query
 * @param {{filter?: SlotFilter | null, limit?: number}} [options]
 * @returns {SearchResult[]}
 */
export function searchNodes(objectInfo, query, options = {}) {
  const words = query.trim().split(/\s+/).filter(Boolean);
  /** @type {SearchResult[]} */
  const results = [];
  for (const [type, entry] of Object.entries(objectInfo)) {
    if (entry.deprecated && !words.length) continue;
    // Frontend-only nodes (entry.virtual) are offered to a plain search, not for a dragged link.
    if (options.filter && (entry.virtual || !acceptsFilter(entry, options.filter))) continue;
    const display = String(entry.display_name || type);
    const category = String(entry.category || "");
    const fields = /** @type {[string, number][]} */ ([
      [display, 3],
      [type, 2.5],
      [category, 1],
      [typeText(entry), 1],
    ]);
    let total = words.length ? 0 : 100;
    for (const word of words) {
      let best = -1;
      for (const [text, weight] of fields) {
        const score = fuzzyScore(word, text);
        if (score >= 0) best = Math.max(best, score * weight);
      }
      if (best < 0) {
        total = -1;
        break;
      }
      total += best;
    }
    if (total < 0) continue;
    if (entry.deprecated || entry.experimental || category.startsWith("_")) total *= 0.5;
    if (options.filter && firstSlotMatches(entry, options.filter)) total *= 1.5;
    results.push({ type, display, category, score: total });
  }
  results.sort((a, b) => b.score - a.score || a.category.localeCompare(b.category) || a.display.localeCompare(b.display));
  return results.slice(0, options.limit ?? 60);
}

export class SearchDialog {
  /**
   * @param {HTMLElement} host where the dialog element lives
   * @param {() => Record<string, any>} objectInfo
   */
  constructor(host, objectInfo) {
    this.objectInfo = objectInfo;
    this.el = document.createElement("div");
    this.el.className = "search-dialog";
    this.el.dataset.testid = "search-dialog";
    this.el.hidden = true;
    this.input = document.createElement("input");
    this.input.type = "search";
    this.input.placeholder = "Search nodes by name, category or type";
    this.input.dataset.testid = "search-input";
    this.input.autocomplete = "off";
    this.hint = document.createElement("div");
    this.hint.className = "search-hint";
    this.list = document.createElement("ul");
    this.list.className = "search-results";
    this.el.append(this.input, this.hint, this.list);
    host.append(this.el);
    /** @type {SearchResult[]} */
    this.results = [];
    this.active = 0;
    /** @type {((type: string) => void) | null} */
    this.onPick = null;
    /** @type {SlotFilter | null} */
    this.filter = null;
    this.input.addEventListener("input", () => this.refresh());
    this.input.addEventListener("keydown", (event) => this.onKey(event));
    this.input.addEventListener("blur", () => setTimeout(() => {
      if (!this.el.contains(document.activeElement)) this.close();
    }, 150));
    this.list.addEventListener("mousedown", (event) => event.preventDefault()); // keep the focus in the input
    this.list.addEventListener("click", (event) => {
      const item = /** @type {HTMLElement} */ (event.target).closest("li");
      if (item && item.dataset.index) this.pick(Number(item.dataset.index));
    });
  }

  get isOpen() {
    return !this.el.hidden;
  }

  /**
   * @param {{screen: number[], filter?: SlotFilter | null, onPick: (type: string) => void}} options
   *   screen: page coordinates for the top-left corner
   */
  open(options) {
    this.filter = options.filter || null;
    this.onPick = options.onPick;
    this.el.hidden = false;
    const width = 420;
    const x = Math.max(8, Math.min(options.screen[0], window.innerWidth - width - 8));
    const y = Math.max(8, Math.min(options.screen[1], window.innerHeight - 360));
    this.el.style.left = `${x}px`;
    this.el.style.top = `${y}px`;
    this.hint.textContent = this.filter ? `Nodes with ${this.filter.direction === "input" ? "an input" : "an output"} of type ${this.filter.type}` : "";
    this.hint.hidden = !this.filter;
    this.input.value = "";
    this.refresh();
    this.input.focus();
  }

  close() {
    this.el.hidden = true;
    this.onPick = null;
  }

  refresh() {
    this.results = searchNodes(this.objectInfo(), this.input.value, { filter: this.filter });
    this.active = 0;
    this.list.replaceChildren(
      ...this.results.map((result, index) => {
        const item = document.createElement("li");
        item.dataset.testid = "search-result";
        item.dataset.type = result.type;
        item.dataset.index = String(index);
        const name = document.createElement("span");
        name.className = "name";
        name.textContent = result.display;
        const category = document.createElement("span");
        category.className = "category";
        category.textContent = result.category;
        item.append(name, category);
        return item;
      }),
    );
    if (!this.results.length) {
      const empty = document.createElement("li");
      empty.className = "empty";
      empty.textContent = "No node matches";
      this.list.append(empty);
    }
    this.highlight();
  }

  highlight() {
    this.list.querySelectorAll("li").forEach((item, index) => item.classList.toggle("active", index === this.active));
    const current = this.list.children[this.active];
    if (current) current.scrollIntoView({ block: "nearest" });
  }

  /** @param {KeyboardEvent} event */
  onKey(event) {
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      const count = this.results.length;
      if (!count) return;
      this.active = (this.active + (event.key === "ArrowDown" ? 1 : count - 1)) % count;
      this.highlight();
    } else if (event.key === "Enter") {
      event.preventDefault();
      this.pick(this.active);
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      this.close();
    }
  }

  /** @param {number} index */
  pick(index) {
    const result = this.results[index];
    const onPick = this.onPick;
    this.close();
    if (result && onPick) onPick(result.type);
  }
}
