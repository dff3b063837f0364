// @ts-check
/**
 * The ComfyUI extension shim's `api` (extensions import it from "../../scripts/api.js"): the
 * subset of ComfyUI's ComfyApi that extensions use, backed by the editor's own Api instance
 * (web/api.js), which web/app.js binds once at start, before any extension is loaded.
 *
 * - addEventListener / removeEventListener for the websocket message types ("status",
 *   "executing", "progress", "executed", "execution_start", ...; the event's `detail` is the
 *   message's data, as in ComfyUI), plus "b_preview" (detail: the preview image Blob) and
 *   "reconnecting" / "reconnected".
 * - apiURL(route) = <base>/api<route>; fileURL(route) = <base><route>.
 * - fetchApi(route, options): fetch of apiURL(route) with the editor's token; like ComfyUI it
 *   returns the Response whatever its status.
 * - queuePrompt(number, {output, workflow}): POST /prompt (number -1 = front of the queue).
 */

/** @typedef {import("../api.js").Api} Api */
/** @typedef {EventListenerOrEventListenerObject} Listener */

/** Event types the shim derives from the Api's own events. */
const DERIVED = /** @type {Record<string, string>} */ ({ b_preview: "preview", reconnecting: "connection", reconnected: "connection" });

export class ExtensionApi {
  constructor() {
    /** @type {Api | null} */
    this.backend = null;
    /** @type {[string, Listener, any][]} listeners added before bind() */
    this.pending = [];
    /** @type {Map<Listener, Map<string, EventListener>>} the wrappers of derived events */
    this.wrappers = new Map();
    /** the socket closed since it was last open */
    this.wasClosed = false;
    /** the "open" being dispatched now follows a close */
    this.reopened = false;
  }

  /** @param {Api} backend */
  bind(backend) {
    this.backend = backend;
    // Registered first, so it runs before the "reconnected" wrappers of the same event.
    backend.addEventListener("connection", (event) => {
      const state = /** @type {CustomEvent} */ (event).detail?.state;
      this.reopened = state === "open" && this.wasClosed;
      if (state === "closed") this.wasClosed = true;
      else if (state === "open") this.wasClosed = false;
    });
    for (const [type, listener, options] of this.pending.splice(0)) this.addEventListener(type, listener, options);
  }

  /** ComfyUI's api_base: the page's folder without the trailing slash ("" at the root). */
  get api_base() {
    const base = this.backend ? this.backend.base : location.pathname.replace(/[^/]*$/, "");
    return base.replace(/\/$/, "");
  }

  get clientId() {
    return this.backend ? this.backend.clientId : "";
  }

  /** @param {string} route "/object_info" */
  apiURL(route) {
    return `${this.api_base}/api${route.startsWith("/") ? route : `/${route}`}`;
  }

  /** @param {string} route "/extensions/pack/file.css" */
  fileURL(route) {
    return `${this.api_base}${route.startsWith("/") ? route : `/${route}`}`;
  }

  /**
   * @param {string} route
   * @param {RequestInit} [options]
   * @returns {Promise<Response>}
   */
  fetchApi(route, options = {}) {
    const headers = new Headers(options.headers || {});
    const token = this.backend ? this.backend.token : "";
    if (token && !headers.has("Authorization")) headers.set("Authorization", `Bearer ${token}`);
    return fetch(this.apiURL(route), { credentials: "same-origin", ...options, headers });
  }

  /**
   * @param {number} number 0 = the back of the queue, -1 = the front, else that queue number
   * @param {{output: Record<string, any>, workflow?: any}} data
   */
  async queuePrompt(number, data) {
    /** @type {Record<string, any>} */
    const body = { client_id: this.clientId || undefined, prompt: data.output };
    if (data.workflow) body.extra_data = { extra_pnginfo: { workflow: data.workflow } };
    if (number === -1) body.front = true;
    else if (number !== 0) body.number = number;
    const response = await this.fetchApi("/prompt", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => null);
    if (!response.ok) {
      const error = /** @type {Error & {response?: any}} */ (new Error(`POST /prompt failed (${response.status})`));
      error.response = answer;
      throw error;
    }
    return answer;
  }

  /** /object_info, as ComfyUI's getNodeDefs. */
  async getNodeDefs() {
    const response = await this.fetchApi("/object_info", { cache: "no-store" });
    return response.json();
  }

  async interrupt() {
    await this.fetchApi("/interrupt", { method: "POST" });
  }

  /**
   * @param {string} type
   * @param {Listener} listener
   * @param {boolean | AddEventListenerOptions} [options]
   */
  addEventListener(type, listener, options) {
    if (!this.backend) {
      this.pending.push([type, listener, options]);
      return;
    }
    const source = DERIVED[type];
    if (!source) {
      this.backend.addEventListener(type, listener, options);
      return;
    }
    const wrapper = this.derive(type, listener);
    if (!this.wrappers.has(listener)) this.wrappers.set(listener, new Map());
    /** @type {Map<string, EventListener>} */ (this.wrappers.get(listener)).set(type, wrapper);
    this.backend.addEventListener(source, wrapper, options);
  }

  /**
   * @param {string} type
   * @param {Listener} listener
   * @param {boolean | EventListenerOptions} [options]
   */
  removeEventListener(type, listener, options) {
    this.pending = this.pending.filter(([t, l]) => t !== type || l !== listener);
    if (!this.backend) return;
    const source = DERIVED[type];
    if (!source) {
      this.backend.removeEventListener(type, listener, options);
      return;
    }
    const byType = this.wrappers.get(listener);
    const wrapper = byType && byType.get(type);
    if (!byType || !wrapper) return;
    byType.delete(type);
    if (!byType.size) this.wrappers.delete(listener);
    this.backend.removeEventListener(source, wrapper, options);
  }

  /**
   * A listener on the Api's own event that calls `listener` with ComfyUI's event instead.
   * @param {string} type
   * @param {Listener} listener
   * @returns {EventListener}
   */
  derive(type, listener) {
    /** @param {CustomEvent} event */
    const call = (event) => {
      if (typeof listener === "function") listener(event);
      else listener.handleEvent(event);
    };
    return (event) => {
      const detail = /** @type {CustomEvent} */ (event).detail;
      if (type === "b_preview") call(new CustomEvent("b_preview", { detail: detail && detail.blob }));
      else if (detail && detail.state === "closed" && type === "reconnecting") call(new CustomEvent("reconnecting"));
      else if (detail && detail.state === "open" && type === "reconnected" && this.reopened) call(new CustomEvent("reconnected"));
    };
  }
}

export const api = new ExtensionApi();
export default api;
