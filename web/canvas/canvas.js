// @ts-check
/**
 * GraphCanvas: renders a Graph on a <canvas> and lets the user edit it (the contract in the
 * editor brief). Drawing is in render.js, geometry in layout.js, hit testing in hit.js, pointer
 * handling in interaction.js, widgets in ../widgets/. Redraws happen on requestAnimationFrame,
 * only when something changed.
 */

import { Graph } from "../graph/model.js";
import { MultilineOverlays } from "../widgets/multiline.js";
import { imagePreviewUrl } from "../widgets/image_upload.js";
import { ImageCache } from "./images.js";
import { Interaction } from "./interaction.js";
import { computeLayout, nodeBounds, sameKey } from "./layout.js";
import { drawFrame } from "./render.js";
import { GROUP_TITLE_H } from "./theme.js";
import { Viewport } from "./viewport.js";
import { writeWidget } from "./widget_bridge.js";

/**
 * @typedef {object} CanvasEnv
 * @property {() => Record<string, any>} objectInfo /object_info
 * @property {(label: string) => void} checkpoint called BEFORE every user-made graph mutation (undo)
 * @property {(opts: {screen: number[], graphPos: number[], filter?: {type: string, direction: "input"|"output"},
 *   connectFrom?: {nodeId: number, slot: number, direction: "input"|"output"}}) => void} openSearch
 *   filter.direction is the direction of the slot the new node needs (an "input" when the link
 *   was dragged from an output); connectFrom is the slot the link was dragged from
 * @property {(nodeId: number | null, screen: number[], graphPos: number[], target?: {linkId?: number, groupId?: number}) => void} openContextMenu
 *   the 4th argument tells a click on a link's centre or a group's title apart from empty canvas
 * @property {(file: File) => Promise<string>} uploadImage
 * @property {(name: string, type?: string) => string} viewUrl
 * @property {HTMLElement} overlay positioned container over the canvas for DOM editors
 * @property {(ids: Set<number>) => void} [onSelectionChanged]
 * @property {(nodeId: number) => void} [openImageEditor] double-click on the picture of a node with
 *   an image upload (the app opens the mask editor)
 * @property {(viewport: {offset: number[], scale: number}) => void} [onViewportChanged]
 */

/** @typedef {import("./render.js").NodeState} NodeState */

export class GraphCanvas {
  /**
   * @param {HTMLCanvasElement} el
   * @param {CanvasEnv} env
   */
  constructor(el, env) {
    this.el = el;
    this.env = env;
    const ctx = el.getContext("2d");
    if (!ctx) throw new Error("this browser gives no 2D canvas context");
    this.ctx = ctx;
    this.viewport = new Viewport();
    this.graph = new Graph();
    /** @type {Set<number>} */
    this.selection = new Set();
    /** @type {Map<number, NodeState>} */
    this.states = new Map();
    /** @type {Set<number>} nodes that showed images keep room for them */
    this.imageNodes = new Set();
    /** @type {Map<number, import("./layout.js").NodeLayout>} */
    this.layouts = new Map();
    /** @type {Map<number, number[]>} */
    this.linkCenters = new Map();
    this.images = new ImageCache(() => this.requestDraw());
    /** @type {import("./hit.js").LinkEnd | null} */
    this.linkDrag = null;
    /** @type {number[] | null} */
    this.linkDragPos = null;
    /** @type {{nodeId: number, direction: "input"|"output", slot: number, widget?: string} | null} */
    this.dropTarget = null;
    /** @type {Map<string, boolean>} node types with an image upload input */
    this.uploadTypes = new Map();
    /** @type {Record<string, any> | null} */
    this.uploadTypesFor = null;
    /** @type {number | null} */
    this.hiddenLink = null;
    /** @type {number[] | null} */
    this.box = null;
    this.width = 0;
    this.height = 0;
    this.dpr = 1;
    this.pending = 0;
    this.stats = { frames: 0, totalMs: 0, maxMs: 0 };
    /** @type {import("../graph/model.js").Node[]} */
    this.ordered = [];
    this.orderVersion = -1;
    this.selectionVersion = 0;
    this.orderSelection = -1;
    /** @type {Set<number>} ids of the nodes the graph had when shown or that were already sized */
    this.known = new Set();
    this.listener = (/** @type {Graph} */ _graph, /** @type {string} */ what) => this.graphChanged(what);
    this.graph.listeners.add(this.listener);
    this.multiline = env.overlay
      ? new MultilineOverlays(
          env.overlay,
          (id, row, value, first) => this.textInput(id, row, value, first),
          (event) => this.interaction.wheel(event),
        )
      : null;
    /** @type {import("./hit.js").Scene} */
    this.scene = {
      graph: this.graph,
      layout: (node) => this.layoutOf(node),
      order: () => this.order(),
      linkCenters: this.linkCenters,
      scale: 1,
    };
    /** @type {import("./render.js").Frame} */
    this.frame = this.makeFrame();
    if (!el.hasAttribute("tabindex")) el.tabIndex = 0;
    el.style.touchAction = "none";
    el.style.outline = "none";
    this.interaction = new Interaction(this);
    this.resizeObserver = typeof ResizeObserver !== "undefined" ? new ResizeObserver(() => this.requestDraw()) : null;
    if (this.resizeObserver) this.resizeObserver.observe(el);
    this.requestDraw();
  }

  /** @returns {import("./render.js").Frame} */
  makeFrame() {
    const canvas = this;
    return {
      ctx: this.ctx,
      width: 0,
      height: 0,
      dpr: 1,
      viewport: this.viewport,
      graph: this.graph,
      layout: (node) => this.layoutOf(node),
      order: () => this.order(),
      selection: this.selection,
      states: this.states,
      linkCenters: this.linkCenters,
      image: (url) => this.image(url),
      uploadPreview: (_node, layout) => imagePreviewUrl(layout, this.env.viewUrl),
      get linkDrag() {
        return canvas.linkDrag;
      },
      get linkDragPos() {
        return canvas.linkDragPos;
      },
      get dropTarget() {
        return canvas.dropTarget;
      },
      get hiddenLink() {
        return canvas.hiddenLink;
      },
      get box() {
        return canvas.box;
      },
      multiline: this.multiline,
    };
  }

  /** @param {Graph} graph */
  setGraph(graph) {
    this.graph.listeners.delete(this.listener);
    this.graph = graph;
    graph.listeners.add(this.listener);
    this.known = new Set(graph.nodes.keys());
    this.scene.graph = graph;
    this.frame.graph = graph;
    this.selection.clear();
    this.selectionVersion += 1;
    this.states.clear();
    this.imageNodes.clear();
    this.layouts.clear();
    this.orderVersion = -1;
    this.interaction.cancel();
    if (this.env.onSelectionChanged) this.env.onSelectionChanged(this.selection);
    this.requestDraw();
  }

  /** @param {string} [what] */
  graphChanged(what) {
    if (what === "node-added") this.sizeNewNodes();
    for (const id of this.selection) {
      if (!this.graph.nodes.has(id)) {
        this.selection.delete(id);
        this.selectionVersion += 1;
      }
    }
    if (this.layouts.size > this.graph.nodes.size) {
      for (const id of this.layouts.keys()) if (!this.graph.nodes.has(id)) this.layouts.delete(id);
      for (const id of this.states.keys()) if (!this.graph.nodes.has(id)) this.states.delete(id);
    }
    this.requestDraw();
  }

  /**
   * A node added while shown gets the size its content needs, as ComfyUI does on creation, so
   * node.size matches what is drawn (loaded workflows keep their sizes as saved).
   */
  sizeNewNodes() {
    for (const node of this.graph.nodes.values()) {
      if (this.known.has(node.id)) continue;
      this.known.add(node.id);
      const layout = this.layoutOf(node);
      if (layout.collapsed || layout.reroute) continue;
      if (layout.w > node.size[0] || layout.h > node.size[1]) {
        node.size = [Math.max(node.size[0], Math.ceil(layout.w)), Math.max(node.size[1], Math.ceil(layout.h))];
      }
    }
  }

  /** @param {import("../graph/model.js").Node} node */
  layoutOf(node) {
    const hasImage = this.hasImage(node);
    const cached = this.layouts.get(node.id);
    if (cached && sameKey(cached.key, node, hasImage)) return cached;
    const layout = computeLayout(node, this.env.objectInfo(), this.graph, hasImage);
    this.layouts.set(node.id, layout);
    return layout;
  }

  /** @param {import("../graph/model.js").Node} node */
  hasImage(node) {
    if (this.imageNodes.has(node.id)) return true;
    const objectInfo = this.env.objectInfo();
    if (this.uploadTypesFor !== objectInfo) {
      this.uploadTypes.clear();
      this.uploadTypesFor = objectInfo;
    }
    let upload = this.uploadTypes.get(node.type);
    if (upload === undefined) {
      const entry = objectInfo[node.type];
      const required = (entry && entry.input && entry.input.required) || {};
      upload = Object.values(required).some((spec) => Array.isArray(spec) && spec[1] && spec[1].image_upload);
      this.uploadTypes.set(node.type, upload);
    }
    return upload;
  }

  /** Nodes in drawing order: graph order, the selected ones last (on top). */
  order() {
    if (this.orderVersion !== this.graph.version || this.orderSelection !== this.selectionVersion || this.ordered.length !== this.graph.nodes.size) {
      /** @type {import("../graph/model.js").Node[]} */
      const rest = [];
      /** @type {import("../graph/model.js").Node[]} */
      const top = [];
      for (const node of this.graph.nodes.values()) (this.selection.has(node.id) ? top : rest).push(node);
      this.ordered = rest.concat(top);
      this.orderVersion = this.graph.version;
      this.orderSelection = this.selectionVersion;
    }
    return this.ordered;
  }

  getViewport() {
    return this.viewport.get();
  }

  /** @param {{offset?: number[], scale?: number}} state */
  setViewport(state) {
    this.viewport.set(state);
    this.requestDraw();
  }

  viewportChanged() {
    if (this.env.onViewportChanged) this.env.onViewportChanged(this.viewport.get());
  }

  /** Fit all nodes (and groups) into the view. */
  fitView() {
    this.measure();
    const box = this.contentBounds();
    if (!box) this.viewport.set({ offset: [0, 0], scale: 1 });
    else this.viewport.fit(box, this.width || 800, this.height || 600);
    this.requestDraw();
    this.viewportChanged();
  }

  /**
   * Graph-space bounds [x, y, w, h] of the given nodes (all nodes and groups by default).
   * @param {Iterable<number>} [ids]
   * @returns {number[] | null}
   */
  contentBounds(ids) {
    let x0 = Infinity;
    let y0 = Infinity;
    let x1 = -Infinity;
    let y1 = -Infinity;
    const rect = [0, 0, 0, 0];
    const nodes = ids ? [...ids].map((id) => this.graph.nodes.get(id)) : this.graph.nodes.values();
    for (const node of nodes) {
      if (!node) continue;
      nodeBounds(node, this.layoutOf(node), rect);
      x0 = Math.min(x0, rect[0]);
      y0 = Math.min(y0, rect[1]);
      x1 = Math.max(x1, rect[0] + rect[2]);
      y1 = Math.max(y1, rect[1] + rect[3]);
    }
    if (!ids) {
      for (const group of this.graph.groups) {
        const [gx, gy, gw, gh] = group.bounding;
        x0 = Math.min(x0, gx);
        y0 = Math.min(y0, gy);
        x1 = Math.max(x1, gx + gw);
        y1 = Math.max(y1, gy + gh);
      }
    }
    return x0 === Infinity ? null : [x0, y0, x1 - x0, y1 - y0];
  }

  /** @param {number[]} screen */
  toGraph(screen) {
    return this.viewport.toGraph(screen);
  }

  /** @param {number[]} pos */
  toScreen(pos) {
    return this.viewport.toScreen(pos);
  }

  /**
   * @param {Iterable<number>} ids
   * @param {boolean} [additive]
   */
  select(ids, additive = false) {
    if (!additive) this.selection.clear();
    for (const id of ids) if (this.graph.nodes.has(id)) this.selection.add(id);
    this.selectionChanged();
  }

  selectAll() {
    this.select(this.graph.nodes.keys());
  }

  clearSelection() {
    if (!this.selection.size) return;
    this.selection.clear();
    this.selectionChanged();
  }

  selectionChanged() {
    this.selectionVersion += 1;
    if (this.env.onSelectionChanged) this.env.onSelectionChanged(this.selection);
    this.requestDraw();
  }

  deleteSelection() {
    const ids = [...this.selection].filter((id) => this.graph.nodes.has(id));
    if (!ids.length) return;
    this.env.checkpoint(ids.length > 1 ? "Delete nodes" : "Delete node");
    for (const id of ids) this.graph.removeNode(id);
    this.clearSelection();
  }

  /**
   * A group around the selected nodes; null when nothing is selected.
   * @param {string} [title]
   */
  groupSelection(title = "Group") {
    const box = this.contentBounds(this.selection);
    if (!this.selection.size || !box) return null;
    const pad = 10;
    this.env.checkpoint("Group");
    return this.graph.addGroup(title, [box[0] - pad, box[1] - pad - GROUP_TITLE_H, box[2] + 2 * pad, box[3] + 2 * pad + GROUP_TITLE_H]);
  }

  /**
   * Put the selected nodes in `mode` (4 bypass, 2 mute), or back to 0 if all already are.
   * @param {number} mode
   */
  setModeOfSelection(mode) {
    const ids = [...this.selection].filter((id) => this.graph.nodes.has(id));
    if (!ids.length) return;
    const all = ids.every((id) => this.graph.node(id).mode === mode);
    this.env.checkpoint(mode === 4 ? "Bypass" : mode === 2 ? "Mute" : "Mode");
    for (const id of ids) this.graph.setMode(id, all ? 0 : mode);
  }

  /**
   * Merge run state into a node's (null clears a key).
   * @param {number} id
   * @param {Partial<Record<keyof NodeState, any>>} state
   */
  setNodeState(id, state) {
    const current = /** @type {Record<string, any>} */ (this.states.get(id) || {});
    for (const [key, value] of Object.entries(state)) {
      if (value === null || value === undefined) delete current[key];
      else current[key] = value;
    }
    if (current.preview || (current.images && current.images.length)) this.imageNodes.add(id);
    if (Object.keys(current).length) this.states.set(id, current);
    else this.states.delete(id);
    this.requestDraw();
  }

  /**
   * Clear some keys (all state by default) of every node.
   * @param {string[]} [keys]
   */
  clearNodeStates(keys) {
    if (!keys) this.states.clear();
    else {
      for (const [id, state] of this.states) {
        const record = /** @type {Record<string, any>} */ (state);
        for (const key of keys) delete record[key];
        if (!Object.keys(record).length) this.states.delete(id);
      }
    }
    this.requestDraw();
  }

  /**
   * A loaded image for `url`, or null while it loads (a redraw follows).
   * @param {string} url
   */
  image(url) {
    return this.images.get(url);
  }

  requestDraw() {
    if (this.pending) return;
    this.pending = requestAnimationFrame(() => {
      this.pending = 0;
      this.draw();
    });
  }

  /** Size the backing store to the element's CSS size times devicePixelRatio. */
  measure() {
    const dpr = window.devicePixelRatio || 1;
    const width = this.el.clientWidth;
    const height = this.el.clientHeight;
    if (width !== this.width || height !== this.height || dpr !== this.dpr) {
      this.width = width;
      this.height = height;
      this.dpr = dpr;
      this.el.width = Math.max(1, Math.round(width * dpr));
      this.el.height = Math.max(1, Math.round(height * dpr));
    }
  }

  draw() {
    const start = performance.now();
    this.measure();
    if (!this.width || !this.height) return;
    const frame = this.frame;
    frame.width = this.width;
    frame.height = this.height;
    frame.dpr = this.dpr;
    this.scene.scale = this.viewport.scale;
    drawFrame(frame);
    const ms = performance.now() - start;
    this.stats.frames += 1;
    this.stats.totalMs += ms;
    this.stats.maxMs = Math.max(this.stats.maxMs, ms);
  }

  frameStats() {
    const { frames, totalMs, maxMs } = this.stats;
    return { frames, avgMs: frames ? totalMs / frames : 0, maxMs };
  }

  resetFrameStats() {
    this.stats = { frames: 0, totalMs: 0, maxMs: 0 };
  }

  /**
   * A point on the node's title bar (screen, canvas-relative CSS px).
   * @param {number} id
   */
  nodeTitlePos(id) {
    const node = this.graph.node(id);
    const layout = this.layoutOf(node);
    if (layout.reroute) return this.toScreen([node.pos[0] + layout.w / 2, node.pos[1] + layout.h / 2]);
    return this.toScreen([node.pos[0] + Math.max(layout.w / 2, 30), node.pos[1] - layout.titleH / 2]);
  }

  /**
   * @param {number} id
   * @param {"input"|"output"} direction
   * @param {number} slot
   */
  slotPos(id, direction, slot) {
    const node = this.graph.node(id);
    const place = (direction === "input" ? this.layoutOf(node).inputs : this.layoutOf(node).outputs)[slot];
    if (!place) throw new Error(`node ${id} (${node.type}) has no ${direction} ${slot}`);
    return this.toScreen([node.pos[0] + place.x, node.pos[1] + place.y]);
  }

  /**
   * The screen rectangle of a widget row ("control_after_generate" and "upload" name the
   * companion rows).
   * @param {number} id
   * @param {string} name
   */
  widgetRect(id, name) {
    const node = this.graph.node(id);
    const layout = this.layoutOf(node);
    const row = layout.widgets.find((candidate) => candidate.name === name && candidate.slotKind === "value") || layout.widgets.find((candidate) => candidate.name === name);
    if (!row) throw new Error(`node ${id} (${node.type}) shows no widget '${name}'`);
    return this.rowRect(node, layout, row);
  }

  /**
   * @param {import("../graph/model.js").Node} node
   * @param {import("./layout.js").NodeLayout} layout
   * @param {import("./layout.js").WidgetRow} row
   */
  rowRect(node, layout, row) {
    const [x, y] = this.toScreen([node.pos[0] + 10, node.pos[1] + row.y]);
    const s = this.viewport.scale;
    return { x, y, w: (layout.w - 20) * s, h: row.h * s };
  }

  /**
   * @param {number} nodeId
   * @param {import("./layout.js").WidgetRow} row
   * @param {string} value
   * @param {boolean} first
   */
  textInput(nodeId, row, value, first) {
    writeWidget(this, nodeId, row, value, first ? "Edit text" : null);
  }

  destroy() {
    if (this.pending) cancelAnimationFrame(this.pending);
    this.pending = 0;
    this.interaction.detach();
    if (this.resizeObserver) this.resizeObserver.disconnect();
    if (this.multiline) this.multiline.destroy();
    this.graph.listeners.delete(this.listener);
  }
}
