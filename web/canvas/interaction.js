// @ts-check
/**
 * Pointer, wheel and key handling of the canvas as a small state machine, kept apart from
 * drawing: idle, panning, dragging nodes, box selecting, dragging a link, dragging a widget
 * value, moving/resizing a group, resizing a node.
 *
 * Mouse model (ComfyUI's): plain left-drag on empty canvas pans, Ctrl- or Shift-drag draws a
 * selection box, middle-drag or Space+drag pans anywhere; the wheel zooms at the cursor, Ctrl+wheel
 * (trackpad pinch) zooms, a trackpad's two-finger scroll pans.
 */

import { seedPrimitive, slotType } from "../graph/effective_types.js";
import { closeChoiceList } from "../widgets/combo.js";
import { promptInput } from "../widgets/common.js";
import { widgetModule } from "../widgets/index.js";
import { findDropTarget, hitTest, nodesInBox, nodesInGroup } from "./hit.js";
import { GROUP_TITLE_H } from "./theme.js";
import { widgetContext } from "./widget_bridge.js";

/** Screen px a press may move and still count as a click. */
const CLICK_SLOP = 4;

/**
 * @typedef {import("./hit.js").LinkEnd} LinkEnd
 * @typedef {{kind: "idle"}
 *   | {kind: "panning", last: number[], moved: boolean, clearOnClick: boolean}
 *   | {kind: "dragNodes", ids: number[], start: number[], origin: number[][], moved: boolean, clicked: number, additive: boolean}
 *   | {kind: "box", start: number[], additive: boolean}
 *   | {kind: "dragLink", from: LinkEnd, detach: {nodeId: number, slot: number, linkId: number} | null}
 *   | {kind: "widget", handler: import("../widgets/common.js").DragHandler, start: number[], moved: boolean}
 *   | {kind: "resize", nodeId: number, start: number[], size: number[], moved: boolean}
 *   | {kind: "group", group: import("../graph/model.js").Group, ids: number[], start: number[], origin: number[][], bounding: number[], moved: boolean, resize: boolean}
 *   | {kind: "linkCenter", linkId: number, start: number[]}} State
 */

export class Interaction {
  /** @param {import("./canvas.js").GraphCanvas} canvas */
  constructor(canvas) {
    this.canvas = canvas;
    /** @type {State} */
    this.state = { kind: "idle" };
    this.space = false;
    /** @type {number[]} last pointer position, screen */
    this.pointer = [0, 0];
    /** @type {[string, EventTarget, (event: any) => void, any][]} */
    this.bound = [];
    const el = canvas.el;
    this.on(el, "pointerdown", (e) => this.down(e));
    this.on(el, "pointermove", (e) => this.move(e));
    this.on(el, "pointerup", (e) => this.up(e));
    this.on(el, "pointercancel", () => this.cancel());
    this.on(el, "wheel", (e) => this.wheel(e), { passive: false });
    this.on(el, "dblclick", (e) => this.dblclick(e));
    this.on(el, "contextmenu", (e) => this.contextmenu(e));
    this.on(window, "keydown", (e) => this.key(e, true));
    this.on(window, "keyup", (e) => this.key(e, false));
  }

  /**
   * @param {EventTarget} target
   * @param {string} type
   * @param {(event: any) => void} handler
   * @param {any} [options]
   */
  on(target, type, handler, options) {
    target.addEventListener(type, handler, options);
    this.bound.push([type, target, handler, options]);
  }

  detach() {
    for (const [type, target, handler, options] of this.bound) target.removeEventListener(type, handler, options);
    this.bound = [];
  }

  /** @param {MouseEvent} e @returns {number[]} */
  screen(e) {
    const rect = this.canvas.el.getBoundingClientRect();
    return [e.clientX - rect.left, e.clientY - rect.top];
  }

  /** @param {PointerEvent} e */
  down(e) {
    const c = this.canvas;
    if (this.state.kind !== "idle") return;
    closeChoiceList();
    const screen = this.screen(e);
    this.pointer = screen;
    const graphPos = c.toGraph(screen);
    if (document.activeElement instanceof HTMLElement && document.activeElement !== c.el) document.activeElement.blur();
    c.el.focus({ preventScroll: true });
    if (e.button === 1 || (e.button === 0 && this.space)) {
      this.state = { kind: "panning", last: screen, moved: false, clearOnClick: false };
    } else if (e.button === 0) {
      this.state = this.pressLeft(e, screen, graphPos);
      if (this.state.kind === "dragLink") {
        c.linkDrag = this.state.from;
        c.linkDragPos = graphPos;
      }
    }
    if (this.state.kind !== "idle") {
      c.el.setPointerCapture(e.pointerId);
      e.preventDefault();
    }
    c.requestDraw();
  }

  /**
   * @param {PointerEvent} e
   * @param {number[]} screen
   * @param {number[]} graphPos
   * @returns {State}
   */
  pressLeft(e, screen, graphPos) {
    const c = this.canvas;
    const hit = hitTest(c.scene, graphPos[0], graphPos[1]);
    const additive = e.shiftKey || e.ctrlKey || e.metaKey;
    if (!hit) {
      if (additive) return { kind: "box", start: graphPos, additive: e.shiftKey };
      return { kind: "panning", last: screen, moved: false, clearOnClick: true };
    }
    if (hit.kind === "link-center") return { kind: "linkCenter", linkId: hit.linkId, start: screen };
    if (hit.kind === "group-title" || hit.kind === "group-resize") {
      const ids = hit.kind === "group-title" ? nodesInGroup(c.scene, hit.group) : [];
      const origin = ids.map((id) => [...c.graph.node(id).pos]);
      return { kind: "group", group: hit.group, ids, start: graphPos, origin, bounding: [...hit.group.bounding], moved: false, resize: hit.kind === "group-resize" };
    }
    if (!("nodeId" in hit)) return { kind: "idle" };
    const node = c.graph.node(hit.nodeId);
    if (hit.kind === "slot") return this.startLink(hit.nodeId, hit.direction, hit.slot);
    if (hit.kind === "collapse") {
      c.env.checkpoint(node.flags.collapsed ? "Expand" : "Collapse");
      c.graph.setFlag(node.id, "collapsed", node.flags.collapsed ? undefined : true);
      return { kind: "idle" };
    }
    if (hit.kind === "resize") {
      c.select([node.id], additive);
      const layout = c.layoutOf(node);
      return { kind: "resize", nodeId: node.id, start: graphPos, size: [layout.w, layout.h], moved: false };
    }
    if (hit.kind === "widget") {
      const inp = hit.row.inputSlot >= 0 ? node.inputs[hit.row.inputSlot] : null;
      if (!(inp && inp.link !== null) && node.mode !== 2) {
        if (!c.selection.has(node.id)) c.select([node.id], additive);
        const module = widgetModule(hit.row.kind);
        const handler = module.pointerDown ? module.pointerDown(widgetContext(c, node, hit.row), hit.local, e) : undefined;
        return handler ? { kind: "widget", handler, start: screen, moved: false } : { kind: "idle" };
      }
    }
    return this.startNodeDrag(node.id, graphPos, additive);
  }

  /**
   * @param {number} nodeId
   * @param {number[]} graphPos
   * @param {boolean} additive
   * @returns {State}
   */
  startNodeDrag(nodeId, graphPos, additive) {
    const c = this.canvas;
    const wasSelected = c.selection.has(nodeId);
    if (additive && wasSelected) {
      const rest = [...c.selection].filter((id) => id !== nodeId);
      c.select(rest);
      return { kind: "idle" };
    }
    if (!wasSelected) c.select([nodeId], additive);
    // Pinned nodes stay where they are (ComfyUI's flags.pinned).
    const ids = [...c.selection].filter((id) => !c.graph.node(id).flags.pinned);
    const origin = ids.map((id) => [...c.graph.node(id).pos]);
    return { kind: "dragNodes", ids, start: graphPos, origin, moved: false, clicked: wasSelected && !additive ? nodeId : -1, additive };
  }

  /**
   * @param {number} nodeId
   * @param {"input"|"output"} direction
   * @param {number} slot
   * @returns {State}
   */
  startLink(nodeId, direction, slot) {
    const c = this.canvas;
    const node = c.graph.node(nodeId);
    if (direction === "output") {
      return { kind: "dragLink", from: { nodeId, slot, direction, type: slotType(c.graph, node, "output", slot) }, detach: null };
    }
    const inp = node.inputs[slot];
    const link = inp.link !== null ? c.graph.links.get(inp.link) : undefined;
    if (link && c.graph.nodes.has(link.origin_id)) {
      // Dragging a connected input picks its link up from the input end.
      const origin = c.graph.node(link.origin_id);
      const type = origin.outputs[link.origin_slot] ? slotType(c.graph, origin, "output", link.origin_slot) : link.type;
      c.hiddenLink = link.id;
      return { kind: "dragLink", from: { nodeId: link.origin_id, slot: link.origin_slot, direction: "output", type }, detach: { nodeId, slot, linkId: link.id } };
    }
    return { kind: "dragLink", from: { nodeId, slot, direction, type: slotType(c.graph, node, "input", slot) }, detach: null };
  }

  /** @param {PointerEvent} e */
  move(e) {
    const c = this.canvas;
    const screen = this.screen(e);
    const dxScreen = screen[0] - this.pointer[0];
    const dyScreen = screen[1] - this.pointer[1];
    const graphPos = c.toGraph(screen);
    const s = this.state;
    switch (s.kind) {
      case "idle":
        this.pointer = screen;
        this.hover(graphPos);
        return;
      case "panning":
        c.viewport.panBy(screen[0] - s.last[0], screen[1] - s.last[1]);
        s.last = screen;
        if (Math.hypot(dxScreen, dyScreen) > CLICK_SLOP) s.moved = true;
        c.requestDraw();
        c.viewportChanged();
        return;
      case "dragNodes":
        return this.dragNodes(s, graphPos, dxScreen, dyScreen);
      case "box":
        c.box = [s.start[0], s.start[1], graphPos[0] - s.start[0], graphPos[1] - s.start[1]];
        c.requestDraw();
        return;
      case "dragLink":
        c.linkDragPos = graphPos;
        c.dropTarget = findDropTarget(c.scene, s.from, graphPos[0], graphPos[1], c.env.objectInfo());
        c.requestDraw();
        return;
      case "widget":
        if (Math.hypot(screen[0] - s.start[0], screen[1] - s.start[1]) > CLICK_SLOP) s.moved = true;
        if (s.handler.move) s.handler.move((screen[0] - s.start[0]) / c.viewport.scale, (screen[1] - s.start[1]) / c.viewport.scale, e);
        return;
      case "resize":
        if (!s.moved) c.env.checkpoint("Resize");
        s.moved = true;
        c.graph.moveNode(s.nodeId, c.graph.node(s.nodeId).pos, [Math.max(40, s.size[0] + graphPos[0] - s.start[0]), Math.max(10, s.size[1] + graphPos[1] - s.start[1])]);
        return;
      case "group":
        return this.dragGroup(s, graphPos);
      default:
        return;
    }
  }

  /**
   * @param {Extract<State, {kind: "dragNodes"}>} s
   * @param {number[]} graphPos
   * @param {number} dxScreen
   * @param {number} dyScreen
   */
  dragNodes(s, graphPos, dxScreen, dyScreen) {
    const c = this.canvas;
    if (!s.moved) {
      if (Math.hypot(dxScreen, dyScreen) <= CLICK_SLOP) return;
      c.env.checkpoint(s.ids.length > 1 ? "Move nodes" : "Move node");
      s.moved = true;
    }
    const dx = graphPos[0] - s.start[0];
    const dy = graphPos[1] - s.start[1];
    s.ids.forEach((id, index) => {
      if (c.graph.nodes.has(id)) c.graph.moveNode(id, [Math.round(s.origin[index][0] + dx), Math.round(s.origin[index][1] + dy)]);
    });
  }

  /**
   * @param {Extract<State, {kind: "group"}>} s
   * @param {number[]} graphPos
   */
  dragGroup(s, graphPos) {
    const c = this.canvas;
    const dx = Math.round(graphPos[0] - s.start[0]);
    const dy = Math.round(graphPos[1] - s.start[1]);
    if (!s.moved) {
      if (Math.hypot(dx, dy) * c.viewport.scale <= CLICK_SLOP) return;
      c.env.checkpoint(s.resize ? "Resize group" : "Move group");
      s.moved = true;
    }
    const [x, y, w, h] = s.bounding;
    if (s.resize) {
      c.graph.moveGroup(s.group.id, [x, y, Math.max(80, w + dx), Math.max(60, h + dy)]);
      return;
    }
    c.graph.moveGroup(s.group.id, [x + dx, y + dy, w, h]);
    s.ids.forEach((id, index) => {
      if (c.graph.nodes.has(id)) c.graph.moveNode(id, [s.origin[index][0] + dx, s.origin[index][1] + dy]);
    });
  }

  /** @param {number[]} graphPos */
  hover(graphPos) {
    const c = this.canvas;
    const hit = hitTest(c.scene, graphPos[0], graphPos[1]);
    let cursor = "default";
    if (this.space) cursor = "grab";
    else if (!hit) cursor = "default";
    else if (hit.kind === "slot" || hit.kind === "widget" || hit.kind === "collapse" || hit.kind === "link-center") cursor = "pointer";
    else if (hit.kind === "resize" || hit.kind === "group-resize") cursor = "nwse-resize";
    else cursor = "move";
    if (c.el.style.cursor !== cursor) c.el.style.cursor = cursor;
  }

  /** @param {PointerEvent} e */
  up(e) {
    const c = this.canvas;
    const s = this.state;
    this.state = { kind: "idle" };
    const screen = this.screen(e);
    const graphPos = c.toGraph(screen);
    if (c.el.hasPointerCapture(e.pointerId)) c.el.releasePointerCapture(e.pointerId);
    switch (s.kind) {
      case "panning":
        if (!s.moved && s.clearOnClick) c.clearSelection();
        break;
      case "dragNodes":
        if (!s.moved && s.clicked >= 0 && c.selection.size > 1) c.select([s.clicked]);
        break;
      case "box": {
        const box = [s.start[0], s.start[1], graphPos[0] - s.start[0], graphPos[1] - s.start[1]];
        c.box = null;
        c.select(nodesInBox(c.scene, box), s.additive || e.shiftKey);
        break;
      }
      case "dragLink":
        this.dropLink(s, screen, graphPos);
        break;
      case "widget":
        if (s.handler.up) s.handler.up(s.moved, e);
        break;
      case "linkCenter":
        if (Math.hypot(screen[0] - s.start[0], screen[1] - s.start[1]) <= CLICK_SLOP) {
          c.env.openContextMenu(null, screen, graphPos, { linkId: s.linkId });
        }
        break;
      default:
        break;
    }
    c.requestDraw();
  }

  /**
   * @param {Extract<State, {kind: "dragLink"}>} s
   * @param {number[]} screen
   * @param {number[]} graphPos
   */
  dropLink(s, screen, graphPos) {
    const c = this.canvas;
    c.linkDrag = null;
    c.linkDragPos = null;
    c.dropTarget = null;
    c.hiddenLink = null;
    const target = findDropTarget(c.scene, s.from, graphPos[0], graphPos[1], c.env.objectInfo());
    if (target) {
      if (s.detach && target.nodeId === s.detach.nodeId && target.slot === s.detach.slot) return;
      c.env.checkpoint("Connect");
      let slot = target.slot;
      if (target.widget) slot = c.graph.widgetToInput(target.nodeId, target.widget, c.env.objectInfo());
      if (s.from.direction === "output") c.graph.connect(s.from.nodeId, s.from.slot, target.nodeId, slot);
      else c.graph.connect(target.nodeId, slot, s.from.nodeId, s.from.slot);
      // Detached after the new link exists, so a Primitive moved to another widget keeps its value.
      if (s.detach) c.graph.disconnect(s.detach.nodeId, s.detach.slot);
      seedPrimitive(c.graph, s.from.direction === "output" ? s.from.nodeId : target.nodeId, c.env.objectInfo());
      return;
    }
    if (s.detach) {
      c.env.checkpoint("Disconnect");
      c.graph.disconnect(s.detach.nodeId, s.detach.slot);
      return;
    }
    if (hitTest(c.scene, graphPos[0], graphPos[1])) return; // on a node with no compatible slot: refused
    const want = s.from.direction === "output" ? "input" : "output";
    c.env.openSearch({
      screen,
      graphPos,
      filter: { type: String(s.from.type), direction: want },
      connectFrom: { nodeId: s.from.nodeId, slot: s.from.slot, direction: s.from.direction },
    });
  }

  cancel() {
    const c = this.canvas;
    this.state = { kind: "idle" };
    c.linkDrag = null;
    c.linkDragPos = null;
    c.dropTarget = null;
    c.hiddenLink = null;
    c.box = null;
    c.requestDraw();
  }

  /** @param {WheelEvent} e */
  wheel(e) {
    const c = this.canvas;
    e.preventDefault();
    const screen = this.screen(e);
    let dx = e.deltaX;
    let dy = e.deltaY;
    if (e.deltaMode === 1) {
      dx *= 16;
      dy *= 16;
    }
    // Pinch (Ctrl+wheel) and mouse wheels zoom; a trackpad's fine two-axis scroll pans.
    const mouseWheel = e.deltaMode !== 0 || (dx === 0 && Math.abs(dy) >= 50 && Number.isInteger(dy));
    if (e.ctrlKey || e.metaKey || mouseWheel) {
      const factor = Math.exp(-dy * (e.ctrlKey && !mouseWheel ? 0.01 : 0.0015));
      c.viewport.zoomBy(factor, screen);
    } else if (e.shiftKey && dx === 0) {
      c.viewport.panBy(-dy, 0);
    } else {
      c.viewport.panBy(-dx, -dy);
    }
    c.requestDraw();
    c.viewportChanged();
  }

  /** @param {MouseEvent} e */
  dblclick(e) {
    const c = this.canvas;
    const screen = this.screen(e);
    const graphPos = c.toGraph(screen);
    const hit = hitTest(c.scene, graphPos[0], graphPos[1]);
    if (!hit) {
      c.env.openSearch({ screen, graphPos });
      return;
    }
    if (hit.kind === "title") this.renameNode(hit.nodeId);
    else if (hit.kind === "group-title") this.renameGroup(hit.group.id);
    else if (hit.kind === "node" && c.env.openImageEditor && this.onUploadedImage(hit.nodeId, graphPos)) c.env.openImageEditor(hit.nodeId);
  }

  /**
   * Whether a graph point lies on the picture area of a node with an image upload.
   * @param {number} nodeId
   * @param {number[]} graphPos
   */
  onUploadedImage(nodeId, graphPos) {
    const c = this.canvas;
    const node = c.graph.node(nodeId);
    const layout = c.layoutOf(node);
    if (!layout.image || !layout.widgets.some((row) => row.kind === "image_upload")) return false;
    const [ix, iy, iw, ih] = layout.image;
    const lx = graphPos[0] - node.pos[0];
    const ly = graphPos[1] - node.pos[1];
    return lx >= ix && ly >= iy && lx <= ix + iw && ly <= iy + ih;
  }

  /** Type a new title in place of the old one. @param {number} nodeId */
  renameNode(nodeId) {
    const c = this.canvas;
    const node = c.graph.node(nodeId);
    const layout = c.layoutOf(node);
    const [x, y] = c.toScreen([node.pos[0] + 24, node.pos[1] - layout.titleH]);
    const s = c.viewport.scale;
    const rect = { x, y: y + 3 * s, w: (layout.w - 30) * s, h: (layout.titleH - 6) * s };
    promptInput(c.env.overlay, rect, layout.title, (text) => {
      const title = text.trim();
      if (!title || title === layout.title || !c.graph.nodes.has(nodeId)) return;
      c.env.checkpoint("Rename");
      c.graph.setTitle(nodeId, title);
    });
  }

  /** Type a group's new title over its title bar. @param {number} groupId */
  renameGroup(groupId) {
    const c = this.canvas;
    const group = c.graph.groups.find((candidate) => candidate.id === groupId);
    if (!group) return;
    const [gx, gy, gw] = group.bounding;
    const [x, y] = c.toScreen([gx + 4, gy + 4]);
    const s = c.viewport.scale;
    const rect = { x, y, w: Math.max(120, gw - 8) * s, h: (GROUP_TITLE_H - 8) * s };
    const old = group.title || "Group";
    promptInput(c.env.overlay, rect, old, (text) => {
      const title = text.trim();
      if (!title || title === old || !c.graph.groups.some((candidate) => candidate.id === groupId)) return;
      c.env.checkpoint("Rename group");
      c.graph.setGroupTitle(groupId, title);
    });
  }

  /** @param {MouseEvent} e */
  contextmenu(e) {
    const c = this.canvas;
    e.preventDefault();
    const screen = this.screen(e);
    const graphPos = c.toGraph(screen);
    const hit = hitTest(c.scene, graphPos[0], graphPos[1]);
    const nodeId = hit && "nodeId" in hit ? hit.nodeId : null;
    if (nodeId !== null && !c.selection.has(nodeId)) c.select([nodeId]);
    if (hit && hit.kind === "link-center") c.env.openContextMenu(null, screen, graphPos, { linkId: hit.linkId });
    else if (hit && (hit.kind === "group-title" || hit.kind === "group-resize")) c.env.openContextMenu(null, screen, graphPos, { groupId: hit.group.id });
    else c.env.openContextMenu(nodeId, screen, graphPos);
  }

  /**
   * Space held = pan mode; Escape cancels a drag.
   * @param {KeyboardEvent} e
   * @param {boolean} pressed
   */
  key(e, pressed) {
    const target = /** @type {HTMLElement | null} */ (e.target);
    const typing = target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.isContentEditable);
    if (e.key === " " && !typing) {
      this.space = pressed;
      if (pressed && (target === this.canvas.el || target === document.body)) e.preventDefault();
      this.canvas.el.style.cursor = pressed ? "grab" : "default";
    } else if (e.key === "Escape" && pressed && this.state.kind !== "idle") {
      this.cancel();
    }
  }
}
