// @ts-check
/**
 * The queue panel: running and pending prompts from GET /queue (refreshed on `status` events and
 * polled while open), cancel (POST /queue {delete} for pending, /interrupt for the running one),
 * clear pending, interrupt, and reorder with Loom's POST /queue/{id}/move.
 */

import { h, toast } from "./dialog.js";

/** @typedef {import("../api.js").Api} Api */

/**
 * A short label for a queue item: its output nodes' titles, else its node count.
 * @param {any[]} item [number, prompt_id, prompt, extra_data, outputs_to_execute]
 */
export function itemLabel(item) {
  const prompt = item[2] && typeof item[2] === "object" ? item[2] : {};
  const outputs = Array.isArray(item[4]) ? item[4] : [];
  const titles = outputs
    .map((id) => prompt[id])
    .filter(Boolean)
    .map((node) => (node._meta && node._meta.title) || node.class_type);
  const count = Object.keys(prompt).length;
  return titles.length ? `${titles.join(", ")} (${count} nodes)` : `${count} nodes`;
}

export class QueuePanel {
  /**
   * @param {HTMLElement} el the panel
   * @param {Api} api
   */
  constructor(el, api) {
    this.el = el;
    this.api = api;
    this.list = /** @type {HTMLElement} */ (el.querySelector("#queue-list"));
    /** @type {ReturnType<typeof setInterval> | null} */
    this.timer = null;
    this.canMove = true;
    /** @type {any} */
    this.last = { queue_running: [], queue_pending: [] };
    const interrupt = /** @type {HTMLElement} */ (el.querySelector("#queue-interrupt"));
    const clear = /** @type {HTMLElement} */ (el.querySelector("#queue-clear"));
    interrupt.addEventListener("click", () => this.act(() => api.interrupt(), "Interrupted"));
    clear.addEventListener("click", () => this.act(() => api.clearQueue(), "Pending prompts removed"));
  }

  get isOpen() {
    return !this.el.hidden;
  }

  /** @param {boolean} open */
  setOpen(open) {
    this.el.hidden = !open;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (open) {
      this.refresh();
      this.timer = setInterval(() => this.refresh(), 2000);
    }
  }

  async refresh() {
    if (!this.isOpen) return;
    try {
      this.last = await this.api.getQueue();
      this.render();
    } catch (error) {
      this.list.replaceChildren(h("div", { className: "queue-empty", textContent: `Cannot read the queue: ${message(error)}` }));
    }
  }

  render() {
    const running = this.last.queue_running || [];
    const pending = [...(this.last.queue_pending || [])].sort((a, b) => a[0] - b[0]);
    const rows = [h("div", { className: "queue-section", textContent: `Running (${running.length})` })];
    rows.push(...running.map((/** @type {any[]} */ item) => this.row(item, true, 0, 0)));
    rows.push(h("div", { className: "queue-section", textContent: `Pending (${pending.length})` }));
    rows.push(...pending.map((/** @type {any[]} */ item, /** @type {number} */ index) => this.row(item, false, index, pending.length)));
    if (!running.length && !pending.length) rows.push(h("div", { className: "queue-empty", textContent: "Nothing queued. Queue the workflow with Ctrl+Enter." }));
    this.list.replaceChildren(...rows);
  }

  /**
   * @param {any[]} item
   * @param {boolean} running
   * @param {number} index position among the pending ones
   * @param {number} count
   */
  row(item, running, index, count) {
    const id = String(item[1]);
    const buttons = [];
    if (!running && this.canMove) {
      buttons.push(this.button("\u2191", "Run earlier", "queue-up", index === 0, () => this.move(id, { index: index - 1 })));
      buttons.push(this.button("\u2193", "Run later", "queue-down", index === count - 1, () => this.move(id, { index: index + 1 })));
    }
    const cancel = running
      ? () => this.act(() => this.api.interrupt(id), "Interrupted")
      : () => this.act(() => this.api.deleteQueued([id]), "Removed from the queue");
    buttons.push(this.button("\u00d7", running ? "Stop this prompt" : "Remove from the queue", "queue-cancel", false, cancel));
    return h("div", { className: `queue-item${running ? " running" : ""}`, dataset: { testid: "queue-item", promptId: id, state: running ? "running" : "pending" }, title: id }, [
      h("span", { className: "number", textContent: `#${item[0]}` }),
      h("span", { className: "label", textContent: itemLabel(item) }),
      ...buttons,
    ]);
  }

  /**
   * @param {string} text
   * @param {string} title
   * @param {string} testid
   * @param {boolean} disabled
   * @param {() => void} onClick
   */
  button(text, title, testid, disabled, onClick) {
    return h("button", { type: "button", className: "icon", textContent: text, title, "aria-label": title, disabled, dataset: { testid }, onclick: onClick });
  }

  /** @param {string} id @param {Record<string, any>} where */
  async move(id, where) {
    try {
      await this.api.moveQueued(id, where);
    } catch (error) {
      const status = /** @type {any} */ (error).status;
      if (status === 404 || status === 405) this.canMove = false; // an older server without the route
      toast(message(error), { error: true });
    }
    this.refresh();
  }

  /** @param {() => Promise<any>} action @param {string} done */
  async act(action, done) {
    try {
      await action();
      toast(done);
    } catch (error) {
      toast(message(error), { error: true });
    }
    this.refresh();
  }
}

/** @param {unknown} error */
function message(error) {
  return error instanceof Error ? error.message : String(error);
}
