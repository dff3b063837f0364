// @ts-check
/**
 * The editor's composition: loads /object_info, builds the GraphCanvas, the tabs, the panels,
 * and wires websocket events to node states. Exposed as `window.loom.app` for the browser tests
 * (the hooks in the editor contract). Editing itself lives in the canvas; files, queue, search,
 * menus and errors in web/ui/.
 */

import { Api, ApiError, adoptUrlToken } from "./api.js";
import { GraphCanvas } from "./canvas/canvas.js";
import { copyNodes, loadClip, pasteNodes, storeClip } from "./clipboard.js";
import { defaultGraph } from "./default_workflow.js";
import { toApiPrompt } from "./graph/serialize.js";
import { seedPrimitive, slotType } from "./graph/effective_types.js";
import { declaredInputs, typesCompatible } from "./graph/types.js";
import { PRIMITIVE_TYPE, VIRTUAL_INFO, isVirtualType, virtualNodeData } from "./graph/virtual.js";
import { api as extensionApi } from "./scripts/api.js";
import { app as extensions } from "./scripts/app.js";
import { applyControlAfterGenerate } from "./ui/controls.js";
import { toast } from "./ui/dialog.js";
import { ErrorPanel } from "./ui/errors.js";
import { FileActions } from "./ui/file_actions.js";
import { Gallery } from "./ui/gallery.js";
import { Library } from "./ui/library.js";
import { openMaskEditor } from "./ui/mask_editor.js";
import { ContextMenu } from "./ui/menu.js";
import { canvasMenu, groupMenu, linkMenu, nodeMenu } from "./ui/node_menu.js";
import { QueuePanel } from "./ui/queue_panel.js";
import { RunState, topLevelId } from "./ui/run_state.js";
import { SearchDialog } from "./ui/search.js";
import { Tabs } from "./ui/tabs.js";
import { watchConnection, wireUi } from "./ui/wiring.js";

/** @typedef {import("./graph/model.js").Graph} Graph */
/** @typedef {import("./ui/tabs.js").Tab} Tab */

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

export class App {
  constructor() {
    this.api = new Api({ token: adoptUrlToken() });
    extensionApi.bind(this.api); // before any extension is imported
    /** @type {Record<string, any>} */
    this.objectInfo = {};
    /** @type {string[]} */
    this.checkpoints = [];
    /** @type {Map<string, string>} prompt id -> tab id, so events light the graph they came from */
    this.promptTabs = new Map();
    /** @type {Map<string, Map<number, {url: string}[]>>} tab id -> node id -> output images */
    this.outputs = new Map();
    /** the mouse over the canvas, canvas px (paste lands there) */
    this.mouse = /** @type {number[] | null} */ (null);
    /** @type {(value?: any) => void} */
    this.resolveReady = () => {};
    this.ready = new Promise((resolve) => (this.resolveReady = resolve));
    const canvasEl = /** @type {HTMLCanvasElement} */ ($("graph-canvas"));
    this.canvas = new GraphCanvas(canvasEl, {
      objectInfo: () => this.objectInfo,
      checkpoint: (label) => this.checkpoint(label),
      openSearch: (opts) => this.openSearch(opts),
      openContextMenu: (nodeId, screen, graphPos, target) => this.openContextMenu(nodeId, screen, graphPos, target),
      uploadImage: async (file) => {
        const answer = await this.api.uploadImage(file);
        return answer.subfolder ? `${answer.subfolder}/${answer.name}` : answer.name;
      },
      viewUrl: (name, type = "input") => viewUrlOf(this.api, name, type),
      overlay: $("canvas-overlay"),
      openImageEditor: (nodeId) => void this.openMaskEditor(nodeId),
      onViewportChanged: (viewport) => {
        if (this.tabs.active) this.tabs.active.viewport = viewport;
        this.tabs.persistSoon();
      },
    });
    this.tabs = new Tabs($("tabs"), {
      onActivate: (tab, previous) => this.showTab(tab, previous),
      onReplace: (tab, graph) => this.replaceGraph(tab, graph),
      onEmpty: () => this.newTab(),
    });
    this.errors = new ErrorPanel($("error-panel"), { focusNode: (id) => this.focusNode(id) });
    this.run = new RunState({
      target: () => this.canvas,
      viewUrl: (name, type, subfolder) => this.api.viewUrl(name, type, subfolder),
      accept: (promptId) => !promptId || !this.promptTabs.has(promptId) || this.promptTabs.get(promptId) === this.tabs.active?.id,
    });
    // The search and the library also offer the frontend-only nodes (Primitive, Reroute, Note).
    const withVirtual = () => ({ ...VIRTUAL_INFO, ...this.objectInfo });
    this.search = new SearchDialog(document.body, withVirtual);
    this.menu = new ContextMenu();
    this.queuePanel = new QueuePanel($("queue-panel"), this.api);
    this.gallery = new Gallery($("gallery-panel"), this.api);
    this.library = new Library($("library-panel"), withVirtual, (type) => this.addNodeAtCenter(type));
    this.files = new FileActions(this);
  }

  /** @returns {Graph} */
  get graph() {
    return /** @type {Tab} */ (this.tabs.active).graph;
  }

  get history() {
    return /** @type {Tab} */ (this.tabs.active).history;
  }

  /** @param {string} label */
  checkpoint(label) {
    if (this.tabs.active) this.tabs.active.history.checkpoint(label);
  }

  async start() {
    watchConnection(this);
    try {
      this.objectInfo = await this.api.objectInfo();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) $("needs-token").hidden = false;
      this.errors.showMessage("Cannot load the node list", messageOf(error));
      throw error;
    }
    this.checkpoints = await this.api.models("checkpoints").catch(() => []);
    const note = $("no-checkpoint");
    note.hidden = this.checkpoints.length > 0;
    note.querySelector(".close")?.addEventListener("click", () => (note.hidden = true));
    if (!this.tabs.restore()) this.newTab();
    wireUi(this);
    this.api.connect();
    // An extension whose setup never settles must not hold the editor back.
    await Promise.race([this.startExtensions(), new Promise((resolve) => setTimeout(resolve, 5000))]);
    this.resolveReady(this);
  }

  /** @param {Graph} [graph] */
  newTab(graph, name = "Unsaved workflow") {
    return this.tabs.add(graph || defaultGraph(this.objectInfo, this.checkpoints), { name });
  }

  /** @param {Tab} tab @param {Tab | null} previous */
  showTab(tab, previous) {
    if (previous) previous.viewport = this.canvas.getViewport();
    this.attach(tab, tab.graph);
    this.canvas.setGraph(tab.graph);
    // Images that arrived for this tab (also while another tab was shown).
    for (const [id, images] of this.outputs.get(tab.id) || []) {
      if (tab.graph.nodes.has(id)) this.canvas.setNodeState(id, { images });
    }
    if (tab.viewport) this.canvas.setViewport(tab.viewport);
    else requestAnimationFrame(() => this.canvas.fitView());
    this.errors.hide();
  }

  /**
   * Listen to a tab's graph: every change marks the tab unsaved and persists it.
   * @param {Tab} tab
   * @param {Graph} graph
   */
  attach(tab, graph) {
    tab.graph = graph;
    if (/** @type {any} */ (graph).loomWatched) return;
    /** @type {any} */ (graph).loomWatched = true;
    graph.listeners.add(() => {
      if (tab.graph === graph) this.tabs.markDirty(tab);
    });
  }

  /**
   * Undo/redo put a rebuilt graph in place; the viewport (and, for undo, the run states) stay.
   * @param {Tab} tab
   * @param {Graph} graph
   * @param {boolean} [keepStates]
   */
  replaceGraph(tab, graph, keepStates = true) {
    this.attach(tab, graph);
    this.tabs.markDirty(tab);
    if (tab !== this.tabs.active) return;
    const viewport = this.canvas.getViewport();
    const states = keepStates ? new Map(this.canvas.states) : new Map();
    this.canvas.setGraph(graph);
    this.canvas.setViewport(viewport);
    for (const [id, state] of states) if (graph.nodes.has(id)) this.canvas.setNodeState(id, /** @type {any} */ (state));
  }

  /**
   * Load a workflow (UI format, or an API prompt) into a new tab or over the current one (undoable).
   * @param {any} json
   * @param {{newTab?: boolean, name?: string, path?: string | null}} [options]
   */
  loadWorkflow(json, options = {}) {
    return this.files.loadJson(json, options);
  }

  toWorkflow() {
    return /** @type {Tab} */ (this.tabs.active).workflow();
  }

  toApiPrompt() {
    return toApiPrompt(this.graph, this.objectInfo);
  }

  /** Queue the current graph once; throws (with `node_errors`) when the server refuses it. */
  async queuePrompt() {
    const tab = /** @type {Tab} */ (this.tabs.active);
    let prompt;
    try {
      prompt = toApiPrompt(tab.graph, this.objectInfo);
    } catch (error) {
      this.errors.showMessage("Cannot queue this workflow", messageOf(error));
      throw error;
    }
    this.canvas.clearNodeStates(["error"]);
    this.errors.hide();
    try {
      const answer = await this.api.queuePrompt(prompt, tab.workflow());
      this.promptTabs.set(answer.prompt_id, tab.id);
      if (answer.node_errors && Object.keys(answer.node_errors).length) this.showValidation(answer);
      applyControlAfterGenerate(tab.graph, this.objectInfo);
      return answer;
    } catch (error) {
      if (error instanceof ApiError && error.body && typeof error.body === "object") {
        /** @type {any} */ (error).node_errors = error.body.node_errors || {};
        this.showValidation(error.body);
      } else this.errors.showMessage("Cannot queue this workflow", messageOf(error));
      throw error;
    }
  }

  /** The queue button: the batch count's worth of prompts, each with its own seed. */
  async queueBatch() {
    const input = /** @type {HTMLInputElement} */ ($("batch-count"));
    const count = Math.max(1, Math.min(100, Math.floor(Number(input.value) || 1)));
    for (let i = 0; i < count; i++) {
      try {
        await this.queuePrompt();
      } catch {
        return; // shown in the error panel
      }
    }
    toast(count > 1 ? `Queued ${count} prompts` : "Queued");
    this.queuePanel.refresh();
  }

  /**
   * Keep an `executed` message's images for the tab whose prompt it was, so switching back to
   * that tab shows them.
   * @param {any} data
   */
  rememberOutputs(data) {
    const tabId = data && this.promptTabs.get(data.prompt_id);
    const images = data && data.output && Array.isArray(data.output.images) ? data.output.images : [];
    const id = topLevelId(data && (data.display_node ?? data.node));
    if (!tabId || id === null || !images.length) return;
    if (!this.outputs.has(tabId)) this.outputs.set(tabId, new Map());
    const urls = images
      .filter((/** @type {any} */ image) => image && typeof image.filename === "string")
      .map((/** @type {any} */ image) => ({ url: this.api.viewUrl(image.filename, image.type || "output", image.subfolder || "") }));
    /** @type {Map<number, {url: string}[]>} */ (this.outputs.get(tabId)).set(id, urls);
  }

  /** @param {any} body a POST /prompt answer with node_errors */
  showValidation(body) {
    this.errors.showValidation(body, (id) => this.titleOf(id), (id, error) => this.canvas.setNodeState(id, { error }));
  }

  /** @param {number} id */
  titleOf(id) {
    const node = this.graph.nodes.get(id);
    if (!node) return null;
    return node.title || (this.objectInfo[node.type] && this.objectInfo[node.type].display_name) || node.type;
  }

  /** Select a node and centre the view on it. @param {number} id */
  focusNode(id) {
    const node = this.graph.nodes.get(id);
    if (!node) return;
    const { scale } = this.canvas.getViewport();
    const rect = this.canvas.el.getBoundingClientRect();
    const cx = node.pos[0] + node.size[0] / 2;
    const cy = node.pos[1] + node.size[1] / 2;
    this.canvas.setViewport({ offset: [rect.width / 2 / scale - cx, rect.height / 2 / scale - cy], scale });
    this.canvas.select([id]);
  }

  /**
   * Add a node; connect it to the slot a link was dragged from, if any.
   * @param {string} type
   * @param {number[]} graphPos
   * @param {{nodeId: number, slot: number, direction: "input"|"output"}} [connectFrom]
   */
  addNode(type, graphPos, connectFrom) {
    this.checkpoint("add node");
    const graph = this.graph;
    const pos = [Math.round(graphPos[0]), Math.round(graphPos[1])];
    const node = isVirtualType(type) && !this.objectInfo[type] ? graph.addNode(virtualNodeData(type, pos)) : graph.createNode(type, this.objectInfo, { pos });
    if (connectFrom && graph.nodes.has(connectFrom.nodeId)) {
      try {
        this.connectNew(node.id, connectFrom);
      } catch (error) {
        toast(messageOf(error), { error: true });
      }
    }
    extensions.nodeCreated(node, () => graph.changed("node-changed"));
    this.canvas.select([node.id]);
    return node;
  }

  /**
   * @param {number} id the new node
   * @param {{nodeId: number, slot: number, direction: "input"|"output"}} from
   */
  connectNew(id, from) {
    const graph = this.graph;
    const node = graph.node(id);
    const other = graph.node(from.nodeId);
    if (from.direction === "output") {
      const type = slotType(graph, other, "output", from.slot);
      // A Primitive only feeds widgets: it converts one rather than taking a socket.
      const sockets = other.type === PRIMITIVE_TYPE ? [] : node.inputs;
      let slot = sockets.findIndex((inp) => typesCompatible(type, inp.type));
      if (slot < 0) {
        const widget = declaredInputs(this.objectInfo[node.type]).find((inp) => inp.isWidget && typesCompatible(type, inp.type));
        if (widget) slot = graph.widgetToInput(id, widget.name, this.objectInfo);
      }
      if (slot >= 0) graph.connect(from.nodeId, from.slot, id, slot);
      seedPrimitive(graph, from.nodeId, this.objectInfo);
    } else {
      const type = slotType(graph, other, "input", from.slot);
      const slot = node.outputs.findIndex((out) => typesCompatible(out.type, type));
      if (slot >= 0) graph.connect(id, slot, from.nodeId, from.slot);
    }
  }

  /** @param {string} type */
  addNodeAtCenter(type) {
    const rect = this.canvas.el.getBoundingClientRect();
    const [x, y] = this.canvas.toGraph([rect.width / 2, rect.height / 2]);
    this.addNode(type, [x - 100, y - 50]);
  }

  /**
   * @param {{screen: number[], graphPos: number[], filter?: {type: string, direction: "input"|"output"},
   *          connectFrom?: {nodeId: number, slot: number, direction: "input"|"output"}}} opts
   */
  openSearch(opts) {
    this.menu.close();
    const rect = this.canvas.el.getBoundingClientRect();
    this.search.open({
      screen: [rect.left + opts.screen[0], rect.top + opts.screen[1]],
      filter: opts.filter || null,
      onPick: (type) => this.addNode(type, opts.graphPos, opts.connectFrom),
    });
  }

  /**
   * @param {number | null} nodeId
   * @param {number[]} screen canvas px
   * @param {number[]} graphPos
   * @param {{linkId?: number, groupId?: number}} [target]
   */
  openContextMenu(nodeId, screen, graphPos, target = {}) {
    const rect = this.canvas.el.getBoundingClientRect();
    const at = [rect.left + screen[0], rect.top + screen[1]];
    if (nodeId !== null && this.graph.nodes.has(nodeId)) {
      this.menu.open(at, this.titleOf(nodeId) || "Node", nodeMenu(this, nodeId));
    } else if (target.linkId !== undefined) {
      this.menu.open(at, "Link", linkMenu(this, target.linkId, graphPos));
    } else if (target.groupId !== undefined) {
      this.menu.open(at, "Group", groupMenu(this, target.groupId));
    } else {
      this.menu.open(at, "Canvas", canvasMenu(this, screen, graphPos));
    }
  }

  /** Paint an inpainting mask on a LoadImage node's picture. @param {number} nodeId */
  openMaskEditor(nodeId) {
    this.menu.close();
    return openMaskEditor(this, nodeId);
  }

  copy() {
    const clip = copyNodes(this.graph, this.canvas.selection);
    if (!clip) return false;
    storeClip(clip);
    toast(`Copied ${clip.nodes.length} node${clip.nodes.length === 1 ? "" : "s"}`);
    return true;
  }

  /** @param {boolean} keepExternal */
  paste(keepExternal) {
    const clip = loadClip();
    if (!clip || !clip.nodes.length) return false;
    const rect = this.canvas.el.getBoundingClientRect();
    const at = this.canvas.toGraph(this.mouse || [rect.width / 2, rect.height / 2]);
    this.checkpoint("paste");
    const ids = pasteNodes(this.graph, clip, at, { keepExternal });
    this.canvas.select(ids);
    return true;
  }

  async startExtensions() {
    try {
      const urls = await this.api.getJson("extensions");
      const graphNow = () => this.graph;
      await extensions.start({ graph: graphNow, canvas: () => this.canvas, api: this.api, objectInfo: () => this.objectInfo }, Array.isArray(urls) ? urls : []);
    } catch (error) {
      console.error("loom: extensions could not be loaded:", error);
    }
  }
}

/**
 * A /view URL for a widget value ("sub/name.png [input]" style names included).
 * @param {Api} api
 * @param {string} name
 * @param {string} type
 */
function viewUrlOf(api, name, type) {
  let filename = name;
  let kind = type;
  const tagged = /^(.*) \[(input|output|temp)\]$/.exec(filename);
  if (tagged) [, filename, kind] = tagged;
  const slash = filename.lastIndexOf("/");
  const subfolder = slash >= 0 ? filename.slice(0, slash) : "";
  return api.viewUrl(slash >= 0 ? filename.slice(slash + 1) : filename, kind, subfolder);
}

/** @param {unknown} error */
export function messageOf(error) {
  return error instanceof Error ? error.message : String(error);
}

const app = new App();
/** @type {any} */ (window).loom = { app };
app.start().catch((error) => console.error("loom: the editor failed to start:", error));
