// @ts-check
/**
 * Open workflows as tabs: each with its own graph, undo history and viewport, kept in
 * localStorage (with the active tab) so a reload brings them all back.
 */

import { History } from "../history.js";
import { fromWorkflow, toWorkflow } from "../graph/serialize.js";
import { askConfirm, h } from "./dialog.js";

const STORAGE_KEY = "loom.tabs.v1";

/** @typedef {import("../graph/model.js").Graph} Graph */
/** @typedef {{offset: number[], scale: number}} Viewport */

export class Tab {
  /**
   * @param {string} id
   * @param {string} name
   * @param {Graph} graph
   * @param {string | null} path the server file (relative to workflows/) it was opened from or saved to
   */
  constructor(id, name, graph, path = null) {
    this.id = id;
    this.name = name;
    this.graph = graph;
    this.path = path;
    this.dirty = false;
    /** @type {Viewport | null} */
    this.viewport = viewportOf(graph);
    /** @type {(tab: Tab, graph: Graph) => void} replaces the graph (undo); set by Tabs */
    this.onReplace = () => {};
    this.history = new History(
      () => JSON.stringify(toWorkflow(this.graph)),
      (state) => this.onReplace(this, fromWorkflow(JSON.parse(state))),
    );
  }

  /** The workflow to save, with the tab's viewport in extra.ds as ComfyUI keeps it. */
  workflow() {
    const workflow = toWorkflow(this.graph);
    if (this.viewport) workflow.extra = { ...workflow.extra, ds: { offset: [...this.viewport.offset], scale: this.viewport.scale } };
    return workflow;
  }
}

/** @param {Graph} graph @returns {Viewport | null} */
function viewportOf(graph) {
  const ds = graph.extra && graph.extra.ds;
  if (!ds || !Array.isArray(ds.offset) || typeof ds.scale !== "number") return null;
  return { offset: [Number(ds.offset[0]) || 0, Number(ds.offset[1]) || 0], scale: ds.scale };
}

export class Tabs {
  /**
   * @param {HTMLElement} el the tab strip
   * @param {{onActivate: (tab: Tab, previous: Tab | null) => void, onReplace: (tab: Tab, graph: Graph) => void,
   *          onEmpty: () => void, beforeClose?: (tab: Tab) => Promise<boolean> | boolean}} hooks
   */
  constructor(el, hooks) {
    this.el = el;
    this.hooks = hooks;
    /** @type {Tab[]} */
    this.tabs = [];
    /** @type {Tab | null} */
    this.active = null;
    this.counter = 0;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.saveTimer = null;
  }

  /**
   * @param {Graph} graph
   * @param {{name?: string, path?: string | null, activate?: boolean, id?: string}} [options]
   */
  add(graph, options = {}) {
    const id = options.id || `t${Date.now().toString(36)}${(this.counter++).toString(36)}`;
    const tab = new Tab(id, options.name || "Unsaved workflow", graph, options.path ?? null);
    tab.onReplace = (t, g) => this.hooks.onReplace(t, g);
    this.tabs.push(tab);
    if (options.activate !== false) this.activate(tab.id);
    else this.render();
    this.persistSoon();
    return tab;
  }

  /** @param {string} id */
  activate(id) {
    const tab = this.tabs.find((t) => t.id === id);
    if (!tab || tab === this.active) return;
    const previous = this.active;
    this.active = tab;
    this.hooks.onActivate(tab, previous);
    this.render();
    this.persistSoon();
  }

  /** @param {string} id */
  async close(id) {
    const index = this.tabs.findIndex((t) => t.id === id);
    if (index < 0) return;
    const tab = this.tabs[index];
    if (tab.dirty && !(await askConfirm("Close workflow", `"${tab.name}" has unsaved changes. Close it and lose them?`, "Close without saving"))) return;
    if (this.hooks.beforeClose && !(await this.hooks.beforeClose(tab))) return;
    if (!this.tabs.includes(tab)) return; // closed meanwhile (a second click while asking)
    const at = this.tabs.indexOf(tab);
    this.tabs.splice(at, 1);
    if (this.active === tab) {
      this.active = null;
      const next = this.tabs[Math.min(at, this.tabs.length - 1)];
      if (next) this.activate(next.id);
      else this.hooks.onEmpty();
    }
    this.render();
    this.persist();
  }

  render() {
    const buttons = this.tabs.map((tab) => {
      const close = h("button", { type: "button", className: "tab-close", title: "Close", "aria-label": `Close ${tab.name}`, dataset: { testid: "tab-close" }, textContent: "\u00d7" });
      close.addEventListener("click", (event) => {
        event.stopPropagation();
        this.close(tab.id);
      });
      const el = h(
        "div",
        {
          className: `tab${tab === this.active ? " active" : ""}${tab.dirty ? " dirty" : ""}`,
          role: "tab",
          tabindex: "0",
          title: tab.path ? `workflows/${tab.path}` : tab.name,
          "aria-selected": tab === this.active ? "true" : "false",
          dataset: { testid: "tab", tabId: tab.id },
          onclick: () => this.activate(tab.id),
          onauxclick: (/** @type {MouseEvent} */ event) => {
            if (event.button === 1) this.close(tab.id);
          },
          onkeydown: (/** @type {KeyboardEvent} */ event) => {
            if (event.key === "Enter") this.activate(tab.id);
          },
        },
        [h("span", { className: "tab-name", textContent: tab.name }), close],
      );
      return el;
    });
    const add = h("button", { type: "button", className: "new-tab", title: "New workflow", "aria-label": "New workflow", dataset: { testid: "new-tab" }, textContent: "+" });
    add.addEventListener("click", () => this.el.dispatchEvent(new CustomEvent("new-tab")));
    this.el.replaceChildren(...buttons, add);
  }

  /** @param {Tab} tab */
  markDirty(tab) {
    if (!tab.dirty) {
      tab.dirty = true;
      this.render();
    }
    this.persistSoon();
  }

  persistSoon() {
    if (this.saveTimer) clearTimeout(this.saveTimer);
    this.saveTimer = setTimeout(() => this.persist(), 400);
  }

  /** Write every tab to localStorage now. */
  persist() {
    if (this.saveTimer) clearTimeout(this.saveTimer);
    this.saveTimer = null;
    const data = {
      active: this.active ? this.active.id : null,
      tabs: this.tabs.map((tab) => ({ id: tab.id, name: tab.name, path: tab.path, dirty: tab.dirty, workflow: tab.workflow() })),
    };
    try {
      localStorage.setItem(STORAGE_KEY, JSON.stringify(data));
    } catch (error) {
      console.warn("loom: cannot keep the open tabs in localStorage:", error);
    }
  }

  /**
   * Reopen the tabs of the last session; false when there were none (or they could not be read).
   * @returns {boolean}
   */
  restore() {
    let data;
    try {
      data = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null");
    } catch {
      data = null;
    }
    if (!data || !Array.isArray(data.tabs) || !data.tabs.length) return false;
    for (const saved of data.tabs) {
      try {
        const tab = this.add(fromWorkflow(saved.workflow), { id: saved.id, name: saved.name, path: saved.path, activate: false });
        tab.dirty = Boolean(saved.dirty);
      } catch (error) {
        console.warn(`loom: could not restore the tab '${saved && saved.name}':`, error);
      }
    }
    if (!this.tabs.length) return false;
    const active = this.tabs.find((tab) => tab.id === data.active) || this.tabs[0];
    this.activate(active.id);
    return true;
  }
}
