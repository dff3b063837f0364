// @ts-check
/**
 * The mask editor for inpainting: a modal over a LoadImage node's picture where the user paints
 * the mask with the mouse (brush, eraser, size slider or [ ], undo of the last stroke, clear, zoom
 * with the wheel, fit). Save works as ComfyUI's frontend does: the mask goes to POST /upload/mask
 * as a PNG whose alpha is the inverted mask (painted = transparent), with `original_ref` naming
 * the picture, into input/clipspace; the server writes the picture with that alpha, and the node's
 * image widget is set to "clipspace/<name> [input]" through the canvas' widget path (undoable).
 * LoadImage's MASK output is 1 - alpha, so it carries exactly what was painted.
 */

import { writeWidget } from "../canvas/widget_bridge.js";
import { h, modal, toast } from "./dialog.js";

/**
 * @typedef {object} MaskHost what the editor needs from the app
 * @property {import("../graph/model.js").Graph} graph
 * @property {import("../canvas/canvas.js").GraphCanvas} canvas
 * @property {import("../api.js").Api} api
 * @typedef {{filename: string, subfolder: string, type: string}} ImageRef
 */

const MAX_UNDO = 30;
const MIN_SIZE = 1;
const MAX_SIZE = 256;
/** Painted pixels are kept in this colour in the mask layer; only their alpha is exported. */
const PAINT = "rgb(255, 56, 96)";

/**
 * The image combo row of a node with an image upload, or null.
 * @param {import("../canvas/canvas.js").GraphCanvas} canvas
 * @param {number} nodeId
 * @returns {import("../canvas/layout.js").WidgetRow | null}
 */
export function imageRowOf(canvas, nodeId) {
  const node = canvas.graph.nodes.get(nodeId);
  if (!node) return null;
  const rows = canvas.layoutOf(node).widgets;
  const upload = rows.find((row) => row.kind === "image_upload");
  if (!upload || !upload.decl) return null;
  const name = upload.decl.name;
  return rows.find((row) => row.slotKind === "value" && row.name === name) || null;
}

/**
 * Split a widget value ("sub/name.png [input]", "name.png") into the /upload/mask reference.
 * @param {string} value
 * @returns {ImageRef}
 */
export function parseImageRef(value) {
  let filename = value;
  let type = "input";
  const tagged = /^(.*) \[(input|output|temp)\]$/.exec(filename);
  if (tagged) [, filename, type] = tagged;
  const slash = filename.lastIndexOf("/");
  return { filename: slash >= 0 ? filename.slice(slash + 1) : filename, subfolder: slash >= 0 ? filename.slice(0, slash) : "", type };
}

/**
 * The mask layer's pixels (alpha = painted) as the upload's pixels: black, alpha = 255 - mask.
 * @param {Uint8ClampedArray} mask RGBA
 * @returns {Uint8ClampedArray}
 */
export function maskToUpload(mask) {
  const out = new Uint8ClampedArray(mask.length);
  for (let i = 3; i < mask.length; i += 4) out[i] = 255 - mask[i];
  return out;
}

/**
 * Open the editor on a node's picture. Resolves to the new widget value, or null when cancelled.
 * @param {MaskHost} host
 * @param {number} nodeId
 * @returns {Promise<string | null>}
 */
export async function openMaskEditor(host, nodeId) {
  const row = imageRowOf(host.canvas, nodeId);
  const node = host.graph.nodes.get(nodeId);
  const value = row && node ? host.canvas.layoutOf(node).values[row.index] : null;
  if (!row || typeof value !== "string" || !value) {
    toast("This node has no image to paint a mask on; upload one first", { error: true });
    return null;
  }
  const ref = parseImageRef(value);
  let image;
  try {
    image = await loadImage(host.api.viewUrl(ref.filename, ref.type, ref.subfolder));
  } catch {
    toast(`Cannot load ${value} for the mask editor`, { error: true });
    return null;
  }
  const editor = new MaskEditor(image);
  const saved = await editor.run(async (blob) => {
    const answer = await host.api.uploadMask(blob, ref, { subfolder: "clipspace" });
    const name = `${answer.subfolder ? `${answer.subfolder}/` : ""}${answer.name} [${answer.type || "input"}]`;
    if (!host.graph.nodes.has(nodeId)) return name;
    // Like an upload, the new name joins the combo's choices so it can be picked again.
    const choices = row.decl && row.decl.choices;
    if (choices && !choices.includes(name)) choices.push(name);
    writeWidget(host.canvas, nodeId, row, name, "Edit mask");
    host.canvas.requestDraw();
    return name;
  });
  return saved;
}

/** @param {string} url @returns {Promise<HTMLImageElement>} */
function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`cannot load ${url}`));
    image.src = url;
  });
}

/** @param {number} w @param {number} h */
function layer(w, h) {
  const el = document.createElement("canvas");
  el.width = w;
  el.height = h;
  const ctx = /** @type {CanvasRenderingContext2D} */ (el.getContext("2d", { willReadFrequently: true }));
  return { el, ctx };
}

class MaskEditor {
  /** @param {HTMLImageElement} image */
  constructor(image) {
    const w = image.naturalWidth;
    const height = image.naturalHeight;
    this.w = w;
    this.h = height;
    // The picture shown opaque, and the mask layer started from the picture's own alpha (a mask
    // saved before is edited, not lost).
    this.picture = layer(w, height);
    this.picture.ctx.drawImage(image, 0, 0);
    const pixels = this.picture.ctx.getImageData(0, 0, w, height);
    this.mask = layer(w, height);
    const mask = this.mask.ctx.createImageData(w, height);
    for (let i = 0; i < pixels.data.length; i += 4) {
      mask.data[i] = 255;
      mask.data[i + 1] = 56;
      mask.data[i + 2] = 96;
      mask.data[i + 3] = 255 - pixels.data[i + 3];
      pixels.data[i + 3] = 255;
    }
    this.mask.ctx.putImageData(mask, 0, 0);
    this.picture.ctx.putImageData(pixels, 0, 0);
    this.size = Math.max(MIN_SIZE, Math.min(MAX_SIZE, Math.round(Math.min(w, height) / 16) || 10));
    this.erase = false;
    /** @type {ImageData[]} */
    this.undoStack = [];
    this.view = { scale: 1, x: 0, y: 0 };
    /** @type {number[] | null} pointer in canvas px */
    this.pointer = null;
    /** @type {{kind: "paint" | "pan", last: number[]} | null} */
    this.drag = null;
    this.el = h("canvas", { className: "mask-canvas", dataset: { testid: "mask-canvas" } });
    this.ctx = /** @type {CanvasRenderingContext2D} */ (this.el.getContext("2d"));
    this.sizeInput = h("input", { type: "range", min: MIN_SIZE, max: MAX_SIZE, value: this.size, dataset: { testid: "mask-brush-size" }, title: "Brush size ([ and ])" });
    this.sizeLabel = h("span", { className: "mask-size", dataset: { testid: "mask-brush-size-label" } });
    this.brushButton = h("button", { type: "button", textContent: "Brush", dataset: { testid: "mask-brush" }, title: "Paint the mask (B)" });
    this.eraseButton = h("button", { type: "button", textContent: "Eraser", dataset: { testid: "mask-eraser" }, title: "Erase the mask (E)" });
  }

  /**
   * Show the modal until Save (upload succeeded) or cancel.
   * @param {(blob: Blob) => Promise<string>} save
   * @returns {Promise<string | null>}
   */
  run(save) {
    return new Promise((resolve) => {
      /** @type {string | null} */
      let result = null;
      let saving = false;
      const toolbar = this.toolbar();
      const stage = h("div", { className: "mask-stage" }, [this.el]);
      const dialog = modal("Mask editor", [toolbar, stage], [
        { label: "Cancel", testid: "mask-cancel" },
        {
          label: "Save",
          primary: true,
          testid: "mask-save",
          onClick: () => {
            if (saving) return false;
            saving = true;
            this.exportBlob()
              .then(save)
              .then((name) => {
                result = name;
                dialog.close();
              })
              .catch((error) => {
                saving = false;
                toast(`Saving the mask failed: ${error instanceof Error ? error.message : error}`, { error: true });
              });
            return false;
          },
        },
      ], { testid: "mask-editor" });
      dialog.el.classList.add("mask-editor");
      const keys = (/** @type {KeyboardEvent} */ event) => this.key(event);
      document.addEventListener("keydown", keys, true);
      const observer = new ResizeObserver(() => this.resize());
      observer.observe(stage);
      this.bind();
      dialog.closed.then(() => {
        document.removeEventListener("keydown", keys, true);
        observer.disconnect();
        resolve(result);
      });
      this.updateTools();
      requestAnimationFrame(() => {
        this.resize();
        this.fit();
      });
    });
  }

  toolbar() {
    this.sizeInput.addEventListener("input", () => this.setSize(Number(this.sizeInput.value)));
    this.brushButton.addEventListener("click", () => this.setErase(false));
    this.eraseButton.addEventListener("click", () => this.setErase(true));
    const button = (/** @type {string} */ label, /** @type {string} */ testid, /** @type {string} */ title, /** @type {() => void} */ run) =>
      h("button", { type: "button", textContent: label, dataset: { testid }, title, onclick: run });
    return h("div", { className: "mask-toolbar" }, [
      this.brushButton,
      this.eraseButton,
      h("label", { className: "mask-size-field" }, ["Size ", this.sizeInput, this.sizeLabel]),
      button("Undo", "mask-undo", "Undo the last stroke (Ctrl+Z)", () => this.undo()),
      button("Clear", "mask-clear", "Remove the whole mask", () => this.clear()),
      button("Fit", "mask-fit", "Zoom to fit (F); the wheel zooms, right or middle drag pans", () => this.fit()),
    ]);
  }

  bind() {
    const el = this.el;
    el.addEventListener("contextmenu", (event) => event.preventDefault());
    el.addEventListener("pointerdown", (event) => {
      event.preventDefault();
      el.setPointerCapture(event.pointerId);
      const at = this.local(event);
      if (event.button === 0) {
        this.pushUndo();
        this.drag = { kind: "paint", last: at };
        this.stroke(at, at);
      } else this.drag = { kind: "pan", last: at };
    });
    el.addEventListener("pointermove", (event) => {
      const at = this.local(event);
      this.pointer = at;
      if (this.drag && this.drag.kind === "paint") this.stroke(this.drag.last, at);
      else if (this.drag) {
        this.view.x += at[0] - this.drag.last[0];
        this.view.y += at[1] - this.drag.last[1];
      }
      if (this.drag) this.drag.last = at;
      this.draw();
    });
    const end = () => {
      this.drag = null;
    };
    el.addEventListener("pointerup", end);
    el.addEventListener("pointercancel", end);
    el.addEventListener("pointerleave", () => {
      this.pointer = null;
      this.draw();
    });
    el.addEventListener("wheel", (event) => {
      event.preventDefault();
      const at = this.local(event);
      const factor = Math.exp(-event.deltaY * 0.0015);
      const scale = Math.max(0.05, Math.min(40, this.view.scale * factor));
      // Keep the image point under the cursor where it is.
      this.view.x = at[0] - ((at[0] - this.view.x) * scale) / this.view.scale;
      this.view.y = at[1] - ((at[1] - this.view.y) * scale) / this.view.scale;
      this.view.scale = scale;
      this.draw();
    }, { passive: false });
  }

  /** @param {KeyboardEvent} event */
  key(event) {
    if (event.key === "Escape") return; // the app's Escape closes the topmost modal: cancel
    const typing = event.target instanceof HTMLInputElement && event.target.type !== "range";
    if (typing) return;
    const ctrl = event.ctrlKey || event.metaKey;
    let handled = true;
    if (event.key === "[") this.setSize(this.size - Math.max(1, Math.round(this.size * 0.15)));
    else if (event.key === "]") this.setSize(this.size + Math.max(1, Math.round(this.size * 0.15)));
    else if (ctrl && event.key.toLowerCase() === "z") this.undo();
    else if (!ctrl && event.key.toLowerCase() === "e") this.setErase(true);
    else if (!ctrl && event.key.toLowerCase() === "b") this.setErase(false);
    else if (!ctrl && event.key.toLowerCase() === "f") this.fit();
    else handled = false;
    // No key reaches the graph's shortcuts while the editor is open (Delete, Ctrl+Enter ...),
    // except Enter and Tab on the dialog's own buttons.
    if (handled) event.preventDefault();
    if (handled || (event.key !== "Enter" && event.key !== "Tab" && event.key !== " ")) event.stopPropagation();
  }

  /** @param {number} size */
  setSize(size) {
    this.size = Math.max(MIN_SIZE, Math.min(MAX_SIZE, Math.round(size)));
    this.updateTools();
    this.draw();
  }

  /** @param {boolean} erase */
  setErase(erase) {
    this.erase = erase;
    this.updateTools();
  }

  updateTools() {
    this.sizeInput.value = String(this.size);
    this.sizeLabel.textContent = `${this.size} px`;
    this.brushButton.setAttribute("aria-pressed", String(!this.erase));
    this.eraseButton.setAttribute("aria-pressed", String(this.erase));
  }

  /** @param {MouseEvent} event canvas CSS px */
  local(event) {
    const rect = this.el.getBoundingClientRect();
    return [event.clientX - rect.left, event.clientY - rect.top];
  }

  /** @param {number[]} at canvas CSS px @returns {number[]} image px */
  toImage(at) {
    return [(at[0] - this.view.x) / this.view.scale, (at[1] - this.view.y) / this.view.scale];
  }

  /** One segment of a stroke, in image pixels. @param {number[]} from @param {number[]} to */
  stroke(from, to) {
    const ctx = this.mask.ctx;
    const a = this.toImage(from);
    const b = this.toImage(to);
    ctx.save();
    ctx.globalCompositeOperation = this.erase ? "destination-out" : "source-over";
    ctx.strokeStyle = PAINT;
    ctx.fillStyle = PAINT;
    ctx.lineWidth = this.size;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    if (a[0] === b[0] && a[1] === b[1]) {
      ctx.arc(a[0], a[1], this.size / 2, 0, Math.PI * 2);
      ctx.fill();
    } else {
      ctx.moveTo(a[0], a[1]);
      ctx.lineTo(b[0], b[1]);
      ctx.stroke();
    }
    ctx.restore();
  }

  pushUndo() {
    this.undoStack.push(this.mask.ctx.getImageData(0, 0, this.w, this.h));
    if (this.undoStack.length > MAX_UNDO) this.undoStack.shift();
  }

  undo() {
    const last = this.undoStack.pop();
    if (last) this.mask.ctx.putImageData(last, 0, 0);
    this.draw();
  }

  clear() {
    this.pushUndo();
    this.mask.ctx.clearRect(0, 0, this.w, this.h);
    this.draw();
  }

  resize() {
    const rect = this.el.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(rect.width * dpr));
    const hgt = Math.max(1, Math.round(rect.height * dpr));
    if (this.el.width !== w || this.el.height !== hgt) {
      this.el.width = w;
      this.el.height = hgt;
    }
    this.draw();
  }

  fit() {
    const rect = this.el.getBoundingClientRect();
    const scale = Math.min((rect.width - 16) / this.w, (rect.height - 16) / this.h);
    this.view.scale = scale > 0 ? scale : 1;
    this.view.x = (rect.width - this.w * this.view.scale) / 2;
    this.view.y = (rect.height - this.h * this.view.scale) / 2;
    this.draw();
  }

  draw() {
    const ctx = this.ctx;
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#101216";
    ctx.fillRect(0, 0, this.el.width, this.el.height);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const { scale, x, y } = this.view;
    // Where the picture lies (canvas CSS px = x + image px * scale), for automation and tests.
    this.el.dataset.view = `${scale} ${x} ${y}`;
    ctx.imageSmoothingEnabled = scale < 2;
    ctx.drawImage(this.picture.el, x, y, this.w * scale, this.h * scale);
    ctx.globalAlpha = 0.6;
    ctx.drawImage(this.mask.el, x, y, this.w * scale, this.h * scale);
    ctx.globalAlpha = 1;
    if (this.pointer) {
      ctx.strokeStyle = this.erase ? "#ffffff" : "#ff8aa5";
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.arc(this.pointer[0], this.pointer[1], Math.max(1, (this.size * scale) / 2), 0, Math.PI * 2);
      ctx.stroke();
    }
  }

  /** The upload: black pixels whose alpha is the inverted mask. @returns {Promise<Blob>} */
  exportBlob() {
    const out = layer(this.w, this.h);
    const data = maskToUpload(this.mask.ctx.getImageData(0, 0, this.w, this.h).data);
    out.ctx.putImageData(new ImageData(/** @type {Uint8ClampedArray<ArrayBuffer>} */ (data), this.w, this.h), 0, 0);
    return new Promise((resolve, reject) => {
      out.el.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("the browser could not encode the mask as PNG"))), "image/png");
    });
  }
}
