// @ts-check
/**
 * Websocket events -> node states on the canvas (running outline, progress bar, live preview,
 * output images, error marker). Node ids in events are strings; a subgraph's inner node "5:2"
 * is shown on its top-level instance 5. Pure apart from the canvas it is given.
 */

/**
 * The top-level graph id of an event's node id ("12" -> 12, "5:2" -> 5), or null.
 * @param {any} nodeId
 * @returns {number | null}
 */
export function topLevelId(nodeId) {
  if (nodeId === null || nodeId === undefined) return null;
  const head = String(nodeId).split(":")[0];
  const id = Number(head);
  return head !== "" && Number.isInteger(id) ? id : null;
}

/**
 * @typedef {object} StateTarget the part of GraphCanvas this needs
 * @property {(id: number, state: Record<string, any>) => void} setNodeState
 * @property {(keys?: string[]) => void} clearNodeStates
 * @property {{nodes: Map<number, any>}} graph
 */

export class RunState {
  /**
   * @param {object} options
   * @param {() => StateTarget | null} options.target the canvas showing the graph the prompt came from
   * @param {(filename: string, type?: string, subfolder?: string) => string} options.viewUrl
   * @param {(promptId: string | undefined) => boolean} [options.accept] is this prompt shown here?
   */
  constructor(options) {
    this.target = options.target;
    this.viewUrl = options.viewUrl;
    this.accept = options.accept || (() => true);
    /** @type {number | null} */
    this.running = null;
    /** @type {string | null} */
    this.promptId = null;
    /** @type {{previews: number, executed: number, lastPreviewNode: number | null, lastImages: string[]}} what arrived (the browser tests read it) */
    this.stats = { previews: 0, executed: 0, lastPreviewNode: null, lastImages: [] };
  }

  /**
   * @param {number | null} id
   * @param {Record<string, any>} state
   */
  set(id, state) {
    const target = this.target();
    if (id === null || !target || !target.graph.nodes.has(id)) return;
    target.setNodeState(id, state);
  }

  /**
   * Apply one websocket message.
   * @param {string} type
   * @param {any} data
   */
  handle(type, data) {
    data = data || {};
    if (type === "execution_start") {
      this.promptId = data.prompt_id ?? null;
      this.running = null;
      if (!this.accept(data.prompt_id)) return;
      const target = this.target();
      if (target) target.clearNodeStates(["running", "progress", "error", "preview"]);
      return;
    }
    if (data.prompt_id !== undefined && !this.accept(data.prompt_id)) return;
    if (type === "executing") this.executing(topLevelId(data.display_node ?? data.node));
    else if (type === "progress") {
      const id = topLevelId(data.display_node ?? data.node) ?? this.running;
      this.set(id, { progress: { value: Number(data.value) || 0, max: Number(data.max) || 1 } });
    } else if (type === "executed") this.executed(topLevelId(data.display_node ?? data.node), data.output);
    else if (type === "execution_error") {
      if (data.exception_type === "ExecutionBlocked") return; // a soft stop, the run goes on
      this.set(topLevelId(data.node_id), { running: false, progress: null, error: { message: String(data.exception_message || "failed") } });
      this.running = null;
    } else if (type === "execution_interrupted" || type === "execution_success") this.executing(null);
  }

  /** @param {number | null} id the node starting, null when the prompt is done */
  executing(id) {
    if (this.running !== null && this.running !== id) this.set(this.running, { running: false, progress: null });
    this.running = id;
    if (id !== null) this.set(id, { running: true });
  }

  /**
   * @param {number | null} id
   * @param {any} output the node's ui dict
   */
  executed(id, output) {
    this.stats.executed += 1;
    const images = output && Array.isArray(output.images) ? output.images : [];
    if (!images.length) return;
    /** @type {string[]} */
    const urls = images
      .filter((/** @type {any} */ image) => image && typeof image.filename === "string")
      .map((/** @type {any} */ image) => this.viewUrl(image.filename, image.type || "output", image.subfolder || ""));
    this.stats.lastImages = urls;
    this.set(id, { images: urls.map((url) => ({ url })), preview: null });
  }

  /**
   * A decoded preview frame: on the node its metadata names, else on the running node.
   * @param {CanvasImageSource} image
   * @param {Record<string, any> | null} metadata
   */
  preview(image, metadata) {
    if (metadata && metadata.prompt_id !== undefined && !this.accept(metadata.prompt_id)) return;
    const named = metadata ? topLevelId(metadata.display_node_id ?? metadata.node_id) : null;
    const id = named ?? this.running;
    this.stats.previews += 1;
    this.stats.lastPreviewNode = id;
    this.set(id, { preview: image });
  }
}
