// @ts-check
/**
 * Drawing one node: body and title (or a title pill when collapsed, a small pill for reroutes),
 * slots (dimmed when a dragged link cannot connect to them), widgets, images, the progress bar,
 * mode tints and the selection / running / error outlines.
 */

import { rerouteType } from "../graph/effective_types.js";
import { MODE_BYPASS, MODE_NEVER } from "../graph/model.js";
import { widgetModule } from "../widgets/index.js";
import { TEXTAREA_MIN_SCALE } from "../widgets/multiline.js";
import { canLink } from "./hit.js";
import { FONT, LOD_BOXES, LOD_TEXT, NODE_RADIUS, SLOT_R, theme, typeColor } from "./theme.js";

/**
 * @typedef {import("../graph/model.js").Node} Node
 * @typedef {import("./layout.js").NodeLayout} NodeLayout
 * @typedef {import("./render.js").Frame} Frame
 * @typedef {import("./render.js").NodeState} NodeState
 */

let fontScale = 0;
let fontCache = FONT;

/**
 * The title font for a zoom below LOD_TEXT: about 10 screen px, at most 24 graph px.
 * @param {number} scale
 */
function titleFont(scale) {
  if (scale !== fontScale) {
    fontScale = scale;
    fontCache = `${Math.min(24, Math.round(10 / scale))}px system-ui, -apple-system, 'Segoe UI', sans-serif`;
  }
  return fontCache;
}

/**
 * @param {Frame} f
 * @param {Node} node
 * @param {NodeLayout} layout
 */
export function drawNode(f, node, layout) {
  const { ctx } = f;
  const scale = f.viewport.scale;
  const x = node.pos[0];
  const y = node.pos[1];
  const th = layout.titleH;
  const selected = f.selection.has(node.id);
  const state = f.states.get(node.id);
  const titleColor = node.color || (layout.known ? theme.nodeTitle : "#6b2f2f");
  const bodyColor = node.bgcolor || theme.nodeBg;
  ctx.globalAlpha = node.mode === MODE_NEVER ? 0.4 : 1;
  if (scale < LOD_BOXES) {
    ctx.fillStyle = titleColor;
    ctx.fillRect(x, y - th, layout.w, th);
    ctx.fillStyle = bodyColor;
    ctx.fillRect(x, y, layout.w, layout.h);
    if (node.mode === MODE_BYPASS) tint(ctx, x, y - th, layout.w, layout.h + th, 0);
    outline(f, node, state, selected, x, y - th, layout.w, layout.h + th, 0);
    ctx.globalAlpha = 1;
    return;
  }
  const text = scale >= LOD_TEXT;
  if (layout.reroute) {
    drawReroute(f, node, layout, selected);
  } else if (layout.collapsed) {
    ctx.fillStyle = titleColor;
    ctx.beginPath();
    ctx.roundRect(x, y - th, layout.w, th, th / 2);
    ctx.fill();
    drawTitle(ctx, layout, x, y, scale, true);
    drawSlots(f, node, layout, false);
  } else {
    ctx.fillStyle = bodyColor;
    ctx.beginPath();
    ctx.roundRect(x, y - th, layout.w, layout.h + th, NODE_RADIUS);
    ctx.fill();
    ctx.fillStyle = titleColor;
    ctx.beginPath();
    ctx.roundRect(x, y - th, layout.w, th, [NODE_RADIUS, NODE_RADIUS, 0, 0]);
    ctx.fill();
    drawTitle(ctx, layout, x, y, scale, false);
    drawSlots(f, node, layout, text);
    drawWidgets(f, node, layout, text);
    drawImages(f, node, layout, state);
    if (state && state.progress && state.progress.max > 0) {
      const ratio = Math.min(1, Math.max(0, state.progress.value / state.progress.max));
      ctx.fillStyle = theme.progress;
      ctx.fillRect(x, y, layout.w * ratio, 4);
    }
  }
  const radius = layout.collapsed || layout.reroute ? (layout.h + th) / 2 : NODE_RADIUS;
  const h = layout.collapsed ? th : layout.h + th;
  if (node.mode === MODE_BYPASS) tint(ctx, x, y - th, layout.w, h, radius);
  outline(f, node, state, selected, x, y - th, layout.w, h, radius);
  ctx.globalAlpha = 1;
}

/**
 * @param {CanvasRenderingContext2D} ctx
 * @param {number} x
 * @param {number} y
 * @param {number} w
 * @param {number} h
 * @param {number} radius
 */
function tint(ctx, x, y, w, h, radius) {
  ctx.fillStyle = theme.bypass;
  ctx.beginPath();
  ctx.roundRect(x, y, w, h, radius);
  ctx.fill();
}

/**
 * Selection, running and error outlines.
 * @param {Frame} f
 * @param {Node} node
 * @param {NodeState | undefined} state
 * @param {boolean} selected
 * @param {number} x
 * @param {number} y
 * @param {number} w
 * @param {number} h
 * @param {number} radius
 */
function outline(f, node, state, selected, x, y, w, h, radius) {
  const { ctx } = f;
  const px = 1 / f.viewport.scale;
  const color = state && state.error ? theme.error : state && state.running ? theme.running : selected ? theme.selected : null;
  if (!color) return;
  ctx.globalAlpha = 1;
  ctx.strokeStyle = color;
  ctx.lineWidth = (state && (state.error || state.running) ? 3 : 1.5) * Math.max(1, px);
  const pad = 2 * Math.max(1, px);
  ctx.beginPath();
  ctx.roundRect(x - pad, y - pad, w + 2 * pad, h + 2 * pad, radius + pad);
  ctx.stroke();
  if (state && state.error) {
    // A red "!" badge at the title's right end.
    const r = 8 * Math.max(1, px);
    const bx = x + w - r - 4;
    const by = y + Math.min(h, 30) / 2;
    ctx.fillStyle = theme.error;
    ctx.beginPath();
    ctx.arc(bx, by, r, 0, Math.PI * 2);
    ctx.fill();
    ctx.fillStyle = "#fff";
    ctx.font = `bold ${Math.round(12 * Math.max(1, px))}px system-ui, sans-serif`;
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.fillText("!", bx, by + 1);
  }
  if (selected && color !== theme.selected) {
    ctx.strokeStyle = theme.selected;
    ctx.lineWidth = px;
    ctx.beginPath();
    ctx.roundRect(x - 2 * pad, y - 2 * pad, w + 4 * pad, h + 4 * pad, radius + 2 * pad);
    ctx.stroke();
  }
}

/**
 * @param {CanvasRenderingContext2D} ctx
 * @param {NodeLayout} layout
 * @param {number} x
 * @param {number} y
 * @param {number} scale
 * @param {boolean} collapsed
 */
function drawTitle(ctx, layout, x, y, scale, collapsed) {
  const th = layout.titleH;
  ctx.fillStyle = collapsed ? "#8d939e" : "#6f7580";
  ctx.beginPath();
  ctx.arc(x + 14, y - th / 2, 5, 0, Math.PI * 2);
  ctx.fill();
  // Zoomed out, titles grow (up to the bar's height) so they stay readable on screen.
  ctx.font = scale >= LOD_TEXT ? FONT : titleFont(scale);
  ctx.fillStyle = theme.nodeText;
  ctx.textAlign = "left";
  ctx.textBaseline = "middle";
  ctx.fillText(layout.title, x + 26, y - th / 2 + 1, layout.w - 34);
}

/**
 * @param {Frame} f
 * @param {Node} node
 * @param {NodeLayout} layout
 * @param {boolean} text
 */
function drawSlots(f, node, layout, text) {
  const { ctx } = f;
  const drag = f.linkDrag;
  const x = node.pos[0];
  const y = node.pos[1];
  ctx.font = FONT;
  ctx.textBaseline = "middle";
  // A reroute's sockets show the type flowing through it.
  const through = layout.reroute ? rerouteType(f.graph, node.id) : null;
  for (let slot = 0; slot < layout.inputs.length; slot++) {
    const place = layout.inputs[slot];
    const linked = node.inputs[slot].link !== null;
    if (layout.collapsed && !linked) continue;
    ctx.globalAlpha = dimmed(drag, node, "input", slot, f.graph) ? 0.2 : node.mode === MODE_NEVER ? 0.4 : 1;
    drawSlot(ctx, x + place.x, y + place.y, typeColor(through ?? place.type), linked);
    if (text && !place.onWidget) {
      ctx.fillStyle = theme.slotText;
      ctx.textAlign = "left";
      ctx.fillText(place.label, x + 12, y + place.y + 1, layout.w / 2 - 14);
    }
  }
  for (let slot = 0; slot < layout.outputs.length; slot++) {
    const place = layout.outputs[slot];
    const linked = node.outputs[slot].links.length > 0;
    if (layout.collapsed && !linked) continue;
    ctx.globalAlpha = dimmed(drag, node, "output", slot, f.graph) ? 0.2 : node.mode === MODE_NEVER ? 0.4 : 1;
    drawSlot(ctx, x + place.x, y + place.y, typeColor(through ?? place.type), linked);
    if (text) {
      ctx.fillStyle = theme.slotText;
      ctx.textAlign = "right";
      ctx.fillText(place.label, x + place.x - 12, y + place.y + 1, layout.w / 2 - 14);
    }
  }
  ctx.globalAlpha = node.mode === MODE_NEVER ? 0.4 : 1;
  const error = f.states.get(node.id)?.error;
  if (error && error.inputs && error.inputs.length) drawInputErrors(f, node, layout, error.inputs);
}

/**
 * While a link is dragged, slots it cannot connect to are dimmed (not the one it started from).
 * @param {import("./hit.js").LinkEnd | null} drag
 * @param {Node} node
 * @param {"input"|"output"} direction
 * @param {number} slot
 * @param {import("../graph/model.js").Graph} graph
 */
function dimmed(drag, node, direction, slot, graph) {
  if (!drag) return false;
  if (drag.nodeId === node.id && drag.direction === direction && drag.slot === slot) return false;
  return !canLink(drag, node, direction, slot, graph);
}

/**
 * @param {CanvasRenderingContext2D} ctx
 * @param {number} x
 * @param {number} y
 * @param {string} color
 * @param {boolean} filled
 */
function drawSlot(ctx, x, y, color, filled) {
  ctx.beginPath();
  ctx.arc(x, y, SLOT_R, 0, Math.PI * 2);
  if (filled) {
    ctx.fillStyle = color;
    ctx.fill();
  } else {
    ctx.fillStyle = "#1b1d21";
    ctx.fill();
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.stroke();
  }
}

/**
 * A red marker on each input (socket or widget row) named in a validation error.
 * @param {Frame} f
 * @param {Node} node
 * @param {NodeLayout} layout
 * @param {string[]} names
 */
function drawInputErrors(f, node, layout, names) {
  const { ctx } = f;
  ctx.strokeStyle = theme.error;
  ctx.fillStyle = theme.error;
  ctx.lineWidth = 2;
  for (const name of names) {
    const row = layout.widgets.find((candidate) => candidate.name === name && candidate.slotKind === "value");
    if (row && !layout.collapsed) {
      ctx.beginPath();
      ctx.roundRect(node.pos[0] + 8, node.pos[1] + row.y - 2, layout.w - 16, row.h + 4, 6);
      ctx.stroke();
      continue;
    }
    const slot = node.inputs.findIndex((inp) => inp.name === name);
    const place = layout.inputs[slot];
    if (!place) continue;
    ctx.beginPath();
    ctx.arc(node.pos[0] + place.x, node.pos[1] + place.y, SLOT_R + 4, 0, Math.PI * 2);
    ctx.stroke();
  }
}

/**
 * @param {Frame} f
 * @param {Node} node
 * @param {NodeLayout} layout
 * @param {boolean} text
 */
function drawWidgets(f, node, layout, text) {
  const { ctx } = f;
  const scale = f.viewport.scale;
  const muted = node.mode === MODE_NEVER;
  for (const row of layout.widgets) {
    const inp = row.inputSlot >= 0 ? node.inputs[row.inputSlot] : null;
    const disabled = Boolean(inp && inp.link !== null);
    const value = layout.values[row.index];
    const rx = node.pos[0] + 10;
    const ry = node.pos[1] + row.y;
    ctx.translate(rx, ry);
    const hidden = Boolean(f.covered && f.covered.has(node.id));
    widgetModule(row.kind).draw(ctx, row, value, layout.w - 20, { text, disabled: disabled || muted, linked: disabled, scale, covered: hidden });
    ctx.translate(-rx, -ry);
    if (row.kind === "multiline" && f.multiline && scale >= TEXTAREA_MIN_SCALE && !disabled && !hidden) {
      const screen = f.viewport.toScreen([rx, ry]);
      f.multiline.place(node.id, row, value, screen[0], screen[1], layout.w - 20, scale, muted);
    }
  }
}

/**
 * Live preview, output images or the uploaded picture, fitted into the layout's image area.
 * @param {Frame} f
 * @param {Node} node
 * @param {NodeLayout} layout
 * @param {NodeState | undefined} state
 */
function drawImages(f, node, layout, state) {
  if (!layout.image) return;
  /** @type {CanvasImageSource[]} */
  const sources = [];
  if (state && state.preview) sources.push(state.preview);
  else if (state && state.images && state.images.length) {
    for (const item of state.images) {
      const image = f.image(item.url);
      if (image) sources.push(image);
    }
  } else {
    const url = f.uploadPreview(node, layout);
    const image = url ? f.image(url) : null;
    if (image) sources.push(image);
  }
  if (!sources.length) return;
  const [ix, iy, iw, ih] = layout.image;
  const columns = Math.ceil(Math.sqrt(sources.length));
  const rows = Math.ceil(sources.length / columns);
  const cw = iw / columns;
  const ch = ih / rows;
  sources.forEach((source, index) => {
    const sw = /** @type {any} */ (source).naturalWidth || /** @type {any} */ (source).width || 1;
    const sh = /** @type {any} */ (source).naturalHeight || /** @type {any} */ (source).height || 1;
    const fitScale = Math.min(cw / sw, ch / sh);
    const w = sw * fitScale;
    const h = sh * fitScale;
    const cx = node.pos[0] + ix + (index % columns) * cw + (cw - w) / 2;
    const cy = node.pos[1] + iy + Math.floor(index / columns) * ch + (ch - h) / 2;
    f.ctx.drawImage(source, cx, cy, w, h);
  });
}

/**
 * @param {Frame} f
 * @param {Node} node
 * @param {NodeLayout} layout
 * @param {boolean} selected
 */
function drawReroute(f, node, layout, selected) {
  const { ctx } = f;
  const x = node.pos[0];
  const y = node.pos[1];
  ctx.fillStyle = node.bgcolor || theme.nodeTitle;
  ctx.beginPath();
  ctx.roundRect(x, y, layout.w, layout.h, layout.h / 2);
  ctx.fill();
  if (selected) {
    ctx.strokeStyle = theme.selected;
    ctx.lineWidth = 1.5;
    ctx.stroke();
  }
  drawSlots(f, node, layout, false);
}
