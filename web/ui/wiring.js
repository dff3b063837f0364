// @ts-check
/**
 * The app's event wiring, kept out of app.js: keyboard shortcuts, the top bar buttons and panel
 * toggles, drops on the canvas (library items, workflow files, pictures), pasted pictures, the
 * connection badge, and websocket events -> node states, error panel, queue badge, gallery and
 * per-tab outputs.
 */

import { closeTopModal, toast } from "./dialog.js";
import { dropFile, imageFromTransfer, placeImage } from "./image_drop.js";
import { DRAG_TYPE } from "./library.js";
import { installShortcuts, isTyping } from "./shortcuts.js";

/** @typedef {import("../app.js").App} App */

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

/**
 * Run a shortcut's action; false when it does not apply (the browser keeps the key).
 * @param {App} app
 * @param {string} action
 */
export function runShortcut(app, action) {
  if (action === "escape") return escape(app);
  if (app.search.isOpen || app.menu.isOpen || document.querySelector(".modal-backdrop")) return false;
  const c = app.canvas;
  /** @type {Record<string, () => any>} */
  const actions = {
    queue: () => app.queueBatch(),
    save: () => app.files.save(),
    open: () => app.files.openDialog(),
    undo: () => app.history.undo(),
    redo: () => app.history.redo(),
    copy: () => app.copy(),
    bypass: () => c.setModeOfSelection(4),
    mute: () => c.setModeOfSelection(2),
    group: () => c.groupSelection(),
    "select-all": () => c.selectAll(),
    delete: () => c.deleteSelection(),
    fit: () => c.fitView(),
  };
  if (action === "paste" || action === "paste-with-links") {
    // Decided in the paste event that follows (a picture on the clipboard wins), so the key's
    // default action must go on: false.
    schedulePaste(app, action === "paste-with-links");
    return false;
  }
  const run = actions[action];
  if (!run) return false;
  // Copy with nothing selected keeps the browser's own copy (of page text).
  if (action === "copy" && !c.selection.size) return false;
  run();
  return true;
}

/** @type {{keepExternal: boolean, timer: number} | null} a Ctrl+V waiting for its paste event */
let pendingPaste = null;

/**
 * Paste the copied nodes unless the paste event that follows Ctrl+V brings a picture; a timer
 * pastes the nodes when a browser sends no paste event.
 * @param {App} app
 * @param {boolean} keepExternal
 */
function schedulePaste(app, keepExternal) {
  if (pendingPaste) clearTimeout(pendingPaste.timer);
  pendingPaste = { keepExternal, timer: window.setTimeout(() => flushPaste(app), 0) };
}

/** @param {App} app */
function flushPaste(app) {
  if (!pendingPaste) return false;
  clearTimeout(pendingPaste.timer);
  const { keepExternal } = pendingPaste;
  pendingPaste = null;
  return app.paste(keepExternal);
}

/** Ctrl+V with a picture on the clipboard: like dropping it at the mouse. @param {App} app */
function wirePaste(app) {
  document.addEventListener("paste", (event) => {
    if (isTyping(event.target)) return; // a text field pastes text
    if (app.search.isOpen || app.menu.isOpen || document.querySelector(".modal-backdrop")) return;
    const file = imageFromTransfer(event.clipboardData);
    if (!file) {
      if (flushPaste(app)) event.preventDefault();
      return;
    }
    if (pendingPaste) clearTimeout(pendingPaste.timer);
    pendingPaste = null;
    event.preventDefault();
    const rect = app.canvas.el.getBoundingClientRect();
    void placeImage(app, file, app.mouse || [rect.width / 2, rect.height / 2]);
  });
}

/** Escape closes the topmost thing that is open. @param {App} app */
function escape(app) {
  const lightbox = document.querySelector(".lightbox");
  if (lightbox) lightbox.remove();
  else if (app.menu.isOpen) app.menu.close();
  else if (app.search.isOpen) app.search.close();
  else if (closeTopModal()) return true;
  else if (!app.errors.el.hidden) app.errors.hide();
  else return false;
  return true;
}

/** @param {App} app */
export function wireUi(app) {
  installShortcuts((action) => runShortcut(app, action));
  $("tabs").addEventListener("new-tab", () => app.newTab());
  $("queue-button").addEventListener("click", () => app.queueBatch());
  app.files.wire();
  wirePanels(app);
  const el = app.canvas.el;
  el.addEventListener("pointermove", (event) => {
    const rect = el.getBoundingClientRect();
    app.mouse = [event.clientX - rect.left, event.clientY - rect.top];
  });
  wireDrop(app);
  wirePaste(app);
  wireEvents(app);
  window.addEventListener("beforeunload", () => {
    if (app.tabs.active) app.tabs.active.viewport = app.canvas.getViewport();
    app.tabs.persist();
  });
}

/** The library on the left; queue and gallery share the right side (one at a time). @param {App} app */
function wirePanels(app) {
  /** @type {Record<string, {setOpen: (open: boolean) => void}>} */
  const panels = { "library-toggle": app.library, "queue-toggle": app.queuePanel, "gallery-toggle": app.gallery };
  /** @type {Record<string, string[]>} */
  const exclusive = { "library-toggle": [], "queue-toggle": ["gallery-toggle"], "gallery-toggle": ["queue-toggle"] };
  for (const [id, panel] of Object.entries(panels)) {
    $(id).addEventListener("click", () => {
      const open = $(id).getAttribute("aria-pressed") !== "true";
      for (const other of exclusive[id]) {
        if ($(other).getAttribute("aria-pressed") !== "true") continue;
        $(other).setAttribute("aria-pressed", "false");
        panels[other].setOpen(false);
      }
      $(id).setAttribute("aria-pressed", String(open));
      panel.setOpen(open);
      requestAnimationFrame(() => app.canvas.requestDraw());
    });
  }
}

/** Library items and files dropped on the canvas. @param {App} app */
function wireDrop(app) {
  const wrap = $("canvas-wrap");
  /** @param {DragEvent} event */
  const wanted = (event) => Boolean(event.dataTransfer && Array.from(event.dataTransfer.types).some((t) => t === DRAG_TYPE || t === "Files"));
  wrap.addEventListener("dragover", (event) => {
    if (!wanted(event)) return;
    event.preventDefault();
    const isFile = Array.from(/** @type {DataTransfer} */ (event.dataTransfer).types).includes("Files");
    wrap.classList.toggle("drop-target", isFile);
  });
  wrap.addEventListener("dragleave", () => wrap.classList.remove("drop-target"));
  wrap.addEventListener("drop", (event) => {
    wrap.classList.remove("drop-target");
    if (!wanted(event) || !event.dataTransfer) return;
    event.preventDefault();
    const rect = app.canvas.el.getBoundingClientRect();
    const pos = app.canvas.toGraph([event.clientX - rect.left, event.clientY - rect.top]);
    const type = event.dataTransfer.getData(DRAG_TYPE);
    if (type) app.addNode(type, pos);
    const file = event.dataTransfer.files[0];
    if (!type && file) void dropFile(app, file, [event.clientX - rect.left, event.clientY - rect.top]);
  });
}

/** The connection badge (data-state open / closed / connecting). @param {App} app */
export function watchConnection(app) {
  const status = $("status");
  app.api.addEventListener("connection", (event) => {
    const { state } = /** @type {CustomEvent} */ (event).detail;
    status.dataset.state = state;
    status.textContent = state === "open" ? "connected" : state === "closed" ? "reconnecting\u2026" : "connecting\u2026";
  });
}

/** Websocket events -> node states, error panel, queue badge and panels. @param {App} app */
function wireEvents(app) {
  const on = (/** @type {string} */ type, /** @type {(data: any) => void} */ handler) =>
    app.api.addEventListener(type, (event) => handler(/** @type {CustomEvent} */ (event).detail));
  for (const type of ["execution_start", "executing", "progress", "executed", "execution_error", "execution_interrupted", "execution_success"]) {
    on(type, (data) => app.run.handle(type, data));
  }
  on("status", (data) => {
    const remaining = data && data.status && data.status.exec_info ? data.status.exec_info.queue_remaining : 0;
    const badge = $("queue-count");
    badge.textContent = String(remaining);
    badge.classList.toggle("busy", remaining > 0);
    app.queuePanel.refresh();
  });
  on("execution_error", (data) => {
    if (data.exception_type === "ExecutionBlocked") return;
    if (app.run.accept(data.prompt_id)) app.errors.showExecution(data, (id) => app.titleOf(id));
  });
  on("execution_interrupted", () => toast("Interrupted"));
  on("executed", (data) => {
    app.rememberOutputs(data);
    app.gallery.refresh();
  });
  on("preview", async (detail) => {
    const image = await decodeImage(detail.blob);
    if (image) app.run.preview(image, detail.metadata);
  });
}

/** @param {Blob} blob @returns {Promise<CanvasImageSource | null>} */
async function decodeImage(blob) {
  try {
    return await createImageBitmap(blob);
  } catch (error) {
    console.warn("loom: a preview image could not be decoded:", error);
    return null;
  }
}
