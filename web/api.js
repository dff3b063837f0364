// @ts-check
/**
 * The HTTP client and the reconnecting websocket (spec §1, §2). JSON errors come back as ApiError
 * carrying the server's message; websocket text messages are dispatched as events named by their
 * `type`, binary preview frames as "preview" events with a decoded image blob.
 *
 * Servers reachable beyond loopback need a token (server/auth.py): a `?token=` in the page URL is
 * kept in sessionStorage and sent as `Authorization: Bearer` on fetch and `?token=` on the socket
 * (a browser websocket cannot set headers). The server's cookie covers the usual `/?token=` case.
 */

export const PREVIEW_IMAGE = 1;
export const TEXT_FRAME = 3;
export const PREVIEW_IMAGE_WITH_METADATA = 4;
const IMAGE_TYPES = /** @type {Record<number, string>} */ ({ 1: "image/jpeg", 2: "image/png" });
const CLIENT_KEY = "loom.clientId";
const TOKEN_KEY = "loom.token";

export class ApiError extends Error {
  /**
   * @param {string} message
   * @param {number} status
   * @param {any} body the parsed JSON body (or text) of the answer
   */
  constructor(message, status, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/**
 * The message of an error answer: ComfyUI's `{error: {message, details}}`, `{error: "..."}` or text.
 * @param {any} body
 * @param {number} status
 * @param {string} what "GET /x"
 */
export function errorMessage(body, status, what) {
  const error = body && typeof body === "object" ? body.error : null;
  let message = "";
  if (error && typeof error === "object") {
    message = String(error.message || error.type || "");
    if (error.details) message += `: ${error.details}`;
  } else if (typeof error === "string") message = error;
  else if (typeof body === "string") message = body.trim().slice(0, 300);
  return `${what} failed (${status})${message ? `: ${message}` : ""}`;
}

/**
 * @typedef {{event: number, mime?: string, metadata?: Record<string, any>, bytes?: Uint8Array,
 *            nodeId?: string, text?: string}} BinaryFrame
 */

/**
 * Decode one binary websocket frame: a big-endian uint32 event id, then per event
 * 1: uint32 format (1 JPEG, 2 PNG) + image; 4: uint32 metadata length + JSON + image;
 * 3: uint32 node id length + node id + text. Unknown events come back with only `event`.
 * @param {ArrayBuffer} buffer
 * @returns {BinaryFrame}
 */
export function parseBinaryFrame(buffer) {
  if (buffer.byteLength < 4) throw new Error(`binary frame of ${buffer.byteLength} bytes has no event id`);
  const view = new DataView(buffer);
  const event = view.getUint32(0);
  if (event === PREVIEW_IMAGE) {
    const format = buffer.byteLength >= 8 ? view.getUint32(4) : 0;
    return { event, mime: IMAGE_TYPES[format] || "image/jpeg", bytes: new Uint8Array(buffer, 8) };
  }
  if (event === PREVIEW_IMAGE_WITH_METADATA) {
    const length = view.getUint32(4);
    const json = new TextDecoder().decode(new Uint8Array(buffer, 8, length));
    const metadata = JSON.parse(json);
    const mime = typeof metadata.image_type === "string" ? metadata.image_type : "image/jpeg";
    return { event, mime, metadata, bytes: new Uint8Array(buffer, 8 + length) };
  }
  if (event === TEXT_FRAME) {
    const length = view.getUint32(4);
    const decoder = new TextDecoder();
    const nodeId = decoder.decode(new Uint8Array(buffer, 8, length));
    return { event, nodeId, text: decoder.decode(new Uint8Array(buffer, 8 + length)) };
  }
  return { event };
}

/** The reconnect delay after `attempt` failures: doubling from 500 ms, at most 10 s. @param {number} attempt */
export function backoff(attempt) {
  return Math.min(500 * 2 ** Math.max(0, attempt), 10000);
}

/** Read `?token=` from the page URL into sessionStorage and drop it from the address bar. */
export function adoptUrlToken() {
  const url = new URL(location.href);
  const token = url.searchParams.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    url.searchParams.delete("token");
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  }
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export class Api extends EventTarget {
  /** @param {{base?: string, token?: string}} [options] */
  constructor(options = {}) {
    super();
    this.base = options.base ?? location.pathname.replace(/[^/]*$/, "");
    this.token = options.token ?? "";
    this.clientId = sessionStorage.getItem(CLIENT_KEY) || "";
    /** @type {WebSocket | null} */
    this.socket = null;
    this.attempt = 0;
    this.closed = false;
    /** @type {"connecting" | "open" | "closed"} */
    this.state = "connecting";
  }

  /** @param {string} path without the leading slash */
  url(path) {
    return this.base + path.replace(/^\//, "");
  }

  /**
   * fetch with the token; non-2xx answers throw ApiError with the server's message.
   * @param {string} path
   * @param {RequestInit} [init]
   */
  async fetch(path, init = {}) {
    const headers = new Headers(init.headers || {});
    if (this.token) headers.set("Authorization", `Bearer ${this.token}`);
    const method = init.method || "GET";
    const response = await fetch(this.url(path), { ...init, headers, credentials: "same-origin" });
    if (!response.ok) {
      const text = await response.text();
      let body = text;
      try {
        body = JSON.parse(text);
      } catch {
        // not JSON: keep the text
      }
      throw new ApiError(errorMessage(body, response.status, `${method} /${path.replace(/^\//, "")}`), response.status, body);
    }
    return response;
  }

  /** @param {string} path @param {RequestInit} [init] */
  async getJson(path, init) {
    const response = await this.fetch(path, init);
    const text = await response.text();
    return text ? JSON.parse(text) : null;
  }

  /** @param {string} path @param {any} body */
  async postJson(path, body) {
    return this.getJson(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  }

  objectInfo() {
    return this.getJson("object_info");
  }

  /** @param {string} folder */
  models(folder) {
    return this.getJson(`models/${encodeURIComponent(folder)}`);
  }

  /**
   * POST /prompt; a 400 throws ApiError whose body has `node_errors`.
   * @param {Record<string, any>} prompt
   * @param {Record<string, any>} [workflow] saved into the output PNGs
   */
  queuePrompt(prompt, workflow) {
    /** @type {Record<string, any>} */
    const body = { prompt, client_id: this.clientId || undefined };
    if (workflow) body.extra_data = { extra_pnginfo: { workflow } };
    return this.postJson("prompt", body);
  }

  getQueue() {
    return this.getJson("queue");
  }

  /** @param {string[]} ids */
  deleteQueued(ids) {
    return this.postJson("queue", { delete: ids });
  }

  clearQueue() {
    return this.postJson("queue", { clear: true });
  }

  /** @param {string} [promptId] only that prompt, if it is the one running */
  interrupt(promptId) {
    return this.postJson("interrupt", promptId ? { prompt_id: promptId } : {});
  }

  /** Loom's reorder route (server/queue_control.py). @param {string} promptId @param {Record<string, any>} where */
  moveQueued(promptId, where) {
    return this.postJson(`queue/${encodeURIComponent(promptId)}/move`, where);
  }

  /** @param {number} [maxItems] */
  getHistory(maxItems = 64) {
    return this.getJson(`history?max_items=${maxItems}`);
  }

  /**
   * @param {File | Blob} file
   * @param {{type?: string, subfolder?: string, overwrite?: boolean, name?: string}} [options]
   * @returns {Promise<{name: string, subfolder: string, type: string}>}
   */
  async uploadImage(file, options = {}) {
    const form = new FormData();
    const name = options.name || (file instanceof File ? file.name : "image.png");
    form.append("image", file, name);
    form.append("type", options.type || "input");
    if (options.subfolder) form.append("subfolder", options.subfolder);
    if (options.overwrite) form.append("overwrite", "true");
    const response = await this.fetch("upload/image", { method: "POST", body: form });
    return response.json();
  }

  /**
   * POST /upload/mask: `mask` is a PNG whose alpha is the inverted mask; the server writes the
   * original picture with that alpha (spec §1.1).
   * @param {Blob} mask
   * @param {{filename: string, subfolder: string, type: string}} originalRef the picture it belongs to
   * @param {{type?: string, subfolder?: string, name?: string}} [options]
   * @returns {Promise<{name: string, subfolder: string, type: string}>}
   */
  async uploadMask(mask, originalRef, options = {}) {
    const form = new FormData();
    form.append("image", mask, options.name || `clipspace-mask-${Date.now()}.png`);
    form.append("original_ref", JSON.stringify(originalRef));
    form.append("type", options.type || "input");
    form.append("subfolder", options.subfolder ?? "clipspace");
    const response = await this.fetch("upload/mask", { method: "POST", body: form });
    return response.json();
  }

  /**
   * A /view URL for an image the server holds.
   * @param {string} filename
   * @param {string} [type] output | input | temp
   * @param {string} [subfolder]
   */
  viewUrl(filename, type = "output", subfolder = "") {
    const query = new URLSearchParams({ filename, type, subfolder });
    if (this.token) query.set("token", this.token); // an <img> cannot send the header
    return this.url(`view?${query}`);
  }

  /** Workflow files in the user's workflows folder (empty when the folder does not exist yet). */
  async listWorkflows() {
    try {
      const files = await this.getJson("userdata?dir=workflows&recurse=true");
      return /** @type {string[]} */ (files).filter((name) => name.endsWith(".json")).sort();
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return [];
      throw error;
    }
  }

  /** @param {string} name relative to workflows/, with .json */
  async loadUserWorkflow(name) {
    return this.getJson(`userdata/${encodeURIComponent(`workflows/${name}`)}`);
  }

  /** @param {string} name relative to workflows/, with .json @param {any} workflow */
  async saveUserWorkflow(name, workflow) {
    const path = `userdata/${encodeURIComponent(`workflows/${name}`)}?overwrite=true`;
    const body = JSON.stringify(workflow, null, 2);
    await this.fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body });
  }

  /** Open the websocket; it reconnects with backoff until close(). */
  connect() {
    this.closed = false;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams();
    if (this.clientId) query.set("clientId", this.clientId);
    if (this.token) query.set("token", this.token);
    const text = query.toString();
    const socket = new WebSocket(`${scheme}//${location.host}${this.url("ws")}${text ? `?${text}` : ""}`);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    this.setState("connecting");
    socket.addEventListener("open", () => {
      this.attempt = 0;
      socket.send(JSON.stringify({ type: "feature_flags", data: { supports_preview_metadata: true } }));
      this.setState("open");
    });
    socket.addEventListener("message", (event) => this.onMessage(event.data));
    socket.addEventListener("close", () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.setState("closed");
      if (this.closed) return;
      const delay = backoff(this.attempt++);
      setTimeout(() => {
        if (!this.closed) this.connect();
      }, delay);
    });
  }

  close() {
    this.closed = true;
    if (this.socket) this.socket.close();
  }

  /** @param {"connecting" | "open" | "closed"} state */
  setState(state) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("connection", { detail: { state, attempt: this.attempt } }));
  }

  /** @param {string | ArrayBuffer} data */
  onMessage(data) {
    if (typeof data !== "string") {
      this.onBinary(data);
      return;
    }
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      console.warn("loom: websocket text that is not JSON:", data.slice(0, 200));
      return;
    }
    if (!message || typeof message.type !== "string") return;
    if (message.type === "status" && message.data && message.data.sid) {
      this.clientId = message.data.sid;
      sessionStorage.setItem(CLIENT_KEY, this.clientId);
    }
    this.dispatchEvent(new CustomEvent(message.type, { detail: message.data }));
  }

  /** @param {ArrayBuffer} buffer */
  onBinary(buffer) {
    let frame;
    try {
      frame = parseBinaryFrame(buffer);
    } catch (error) {
      console.warn("loom: bad binary frame", error);
      return;
    }
    if (frame.bytes && frame.mime) {
      const blob = new Blob([frame.bytes.slice()], { type: frame.mime });
      this.dispatchEvent(new CustomEvent("preview", { detail: { blob, metadata: frame.metadata || null } }));
    } else if (frame.event === TEXT_FRAME) {
      this.dispatchEvent(new CustomEvent("progress_text", { detail: { nodeId: frame.nodeId, text: frame.text } }));
    }
  }
}
