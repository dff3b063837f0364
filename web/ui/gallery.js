// @ts-check
/**
 * The image history: every image in GET /history's outputs, newest first; a click shows it large.
 */

import { h } from "./dialog.js";

/**
 * Images of a /history answer, newest prompt first (the answer is oldest first).
 * @param {Record<string, any>} history
 * @returns {{promptId: string, nodeId: string, filename: string, subfolder: string, type: string}[]}
 */
export function historyImages(history) {
  const images = [];
  for (const [promptId, item] of Object.entries(history || {}).reverse()) {
    const outputs = (item && item.outputs) || {};
    for (const [nodeId, output] of Object.entries(outputs)) {
      for (const image of (output && output.images) || []) {
        if (!image || typeof image.filename !== "string") continue;
        images.push({ promptId, nodeId, filename: image.filename, subfolder: image.subfolder || "", type: image.type || "output" });
      }
    }
  }
  return images;
}

export class Gallery {
  /**
   * @param {HTMLElement} el the panel
   * @param {import("../api.js").Api} api
   */
  constructor(el, api) {
    this.el = el;
    this.api = api;
    this.grid = /** @type {HTMLElement} */ (el.querySelector("#gallery-grid"));
    const refresh = el.querySelector("#gallery-refresh");
    if (refresh) refresh.addEventListener("click", () => this.refresh());
  }

  get isOpen() {
    return !this.el.hidden;
  }

  /** @param {boolean} open */
  setOpen(open) {
    this.el.hidden = !open;
    if (open) this.refresh();
  }

  async refresh() {
    if (!this.isOpen) return;
    try {
      const images = historyImages(await this.api.getHistory(64));
      this.grid.replaceChildren(...images.map((image) => this.item(image)));
      if (!images.length) this.grid.replaceChildren(h("div", { className: "queue-empty", textContent: "No images yet." }));
    } catch (error) {
      this.grid.replaceChildren(h("div", { className: "queue-empty", textContent: `Cannot read the history: ${error instanceof Error ? error.message : error}` }));
    }
  }

  /** @param {ReturnType<typeof historyImages>[number]} image */
  item(image) {
    const url = this.api.viewUrl(image.filename, image.type, image.subfolder);
    return h("button", { type: "button", className: "gallery-item", title: image.filename, dataset: { testid: "gallery-item", promptId: image.promptId }, onclick: () => showLarge(url, image.filename) }, [
      h("img", { src: url, alt: image.filename, loading: "lazy" }),
    ]);
  }
}

/** @param {string} url @param {string} caption */
export function showLarge(url, caption) {
  const box = h("div", { className: "lightbox", dataset: { testid: "lightbox" }, onclick: () => box.remove() }, [
    h("figure", {}, [h("img", { src: url, alt: caption }), h("figcaption", { className: "caption", textContent: caption })]),
  ]);
  document.body.append(box);
}
