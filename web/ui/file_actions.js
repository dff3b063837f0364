// @ts-check
/**
 * The file buttons and what they do: save to the user's workflow folder on the server (Ctrl+S;
 * asks for a name the first time), download, export the API prompt, open (server list or upload),
 * and loading a dropped/uploaded file or JSON into a tab.
 */

import { toApiPrompt } from "../graph/serialize.js";
import { app as extensions } from "../scripts/app.js";
import { askText, toast } from "./dialog.js";
import { downloadJson, graphFromFile, graphFromJson, showOpenDialog, workflowFileName } from "./files.js";

/** @typedef {import("../app.js").App} App */
/** @typedef {import("../graph/model.js").Graph} Graph */

export class FileActions {
  /** @param {App} app */
  constructor(app) {
    this.app = app;
  }

  wire() {
    const click = (/** @type {string} */ id, /** @type {() => any} */ run) => document.getElementById(id)?.addEventListener("click", () => run());
    click("save-button", () => this.save());
    click("download-button", () => this.download());
    click("export-api-button", () => this.exportApi());
    click("load-button", () => this.openDialog());
  }

  get tab() {
    return /** @type {import("./tabs.js").Tab} */ (this.app.tabs.active);
  }

  /** Save to workflows/<name>.json on the server; asks for a name when the tab has none yet. */
  async save() {
    const tab = this.tab;
    let path = tab.path;
    if (!path) {
      const name = await askText("Save workflow as", tab.name === "Unsaved workflow" ? "" : tab.name, "Save");
      if (name === null) return false;
      path = workflowFileName(name);
      if (!path) {
        toast("That name is empty", { error: true });
        return false;
      }
    }
    try {
      await this.app.api.saveUserWorkflow(path, tab.workflow());
    } catch (error) {
      toast(`Saving failed: ${error instanceof Error ? error.message : error}`, { error: true });
      return false;
    }
    tab.path = path;
    tab.name = path.replace(/\.json$/i, "").split("/").pop() || path;
    tab.dirty = false;
    this.app.tabs.render();
    this.app.tabs.persist();
    toast(`Saved workflows/${path}`);
    return true;
  }

  download() {
    downloadJson(`${fileStem(this.tab.name)}.json`, this.tab.workflow());
  }

  exportApi() {
    try {
      downloadJson(`${fileStem(this.tab.name)}_api.json`, toApiPrompt(this.tab.graph, this.app.objectInfo));
    } catch (error) {
      this.app.errors.showMessage("Cannot export the API prompt", error instanceof Error ? error.message : String(error));
    }
  }

  openDialog() {
    return showOpenDialog({
      list: () => this.app.api.listWorkflows(),
      openServer: (name) => this.openServer(name),
      openFile: (file) => this.openFile(file, { newTab: true }),
    });
  }

  /** @param {string} name relative to workflows/ */
  async openServer(name) {
    const open = this.app.tabs.tabs.find((tab) => tab.path === name);
    if (open) {
      this.app.tabs.activate(open.id);
      return;
    }
    try {
      const json = await this.app.api.loadUserWorkflow(name);
      this.loadJson(json, { newTab: true, name: name.replace(/\.json$/i, "").split("/").pop(), path: name });
    } catch (error) {
      toast(`Cannot open ${name}: ${error instanceof Error ? error.message : error}`, { error: true });
    }
  }

  /**
   * @param {File} file
   * @param {{newTab?: boolean}} options
   */
  async openFile(file, options) {
    try {
      const { graph, name } = await graphFromFile(file, this.app.objectInfo);
      this.loadGraph(graph, { ...options, name });
      toast(`Loaded ${file.name}`);
    } catch (error) {
      this.app.errors.showMessage(`Cannot load ${file.name}`, error instanceof Error ? error.message : String(error));
    }
  }

  /**
   * @param {any} json a UI workflow or an API prompt
   * @param {{newTab?: boolean, name?: string, path?: string | null}} [options]
   */
  loadJson(json, options = {}) {
    return this.loadGraph(graphFromJson(json, this.app.objectInfo), options);
  }

  /**
   * Show a loaded graph: in a new tab, or in place of the current tab's graph (undoable).
   * @param {Graph} graph
   * @param {{newTab?: boolean, name?: string, path?: string | null}} options
   */
  loadGraph(graph, options) {
    const app = this.app;
    const changed = () => graph.changed("node-changed");
    for (const node of graph.nodes.values()) extensions.loadedGraphNode(node, changed);
    if (options.newTab) {
      const tab = app.tabs.add(graph, { name: options.name || "Loaded workflow", path: options.path ?? null });
      return tab;
    }
    const tab = this.tab;
    tab.history.checkpoint("load workflow");
    app.replaceGraph(tab, graph, false);
    if (options.name) tab.name = options.name;
    tab.path = options.path ?? null;
    tab.viewport = null;
    app.tabs.markDirty(tab);
    app.tabs.render();
    requestAnimationFrame(() => {
      const ds = graph.extra && graph.extra.ds;
      if (ds && Array.isArray(ds.offset) && typeof ds.scale === "number") app.canvas.setViewport({ offset: ds.offset, scale: ds.scale });
      else app.canvas.fitView();
    });
    return tab;
  }
}

/** @param {string} name */
function fileStem(name) {
  return name.replace(/[\\/:*?"<>|]+/g, "_").trim() || "workflow";
}
