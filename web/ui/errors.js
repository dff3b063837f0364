// @ts-check
/**
 * Validation and execution errors: the error panel text, plus the offending nodes (and their
 * inputs) marked on the canvas. POST /prompt's 400 `node_errors` name every bad input; an
 * `execution_error` event carries the node's class, message and traceback.
 */

import { h } from "./dialog.js";
import { topLevelId } from "./run_state.js";

/**
 * @typedef {{nodeId: number | null, rawId: string, title: string, input: string | null, message: string}} ValidationLine
 */

/**
 * One line per error of a POST /prompt 400 answer ("node #id Title: input: message").
 * @param {any} body the answer: {error, node_errors}
 * @param {(id: number) => string | null} titleOf the node's title in the graph, if it is there
 * @returns {ValidationLine[]}
 */
export function validationLines(body, titleOf) {
  /** @type {ValidationLine[]} */
  const lines = [];
  const nodeErrors = (body && body.node_errors) || {};
  for (const [rawId, info] of Object.entries(nodeErrors)) {
    const nodeId = topLevelId(rawId);
    const title = (nodeId !== null && titleOf(nodeId)) || (info && info.class_type) || "";
    for (const error of (info && info.errors) || []) {
      const extra = (error && error.extra_info) || {};
      const input = typeof extra.input_name === "string" ? extra.input_name : null;
      let message = String((error && error.message) || "invalid");
      if (error && error.details && error.details !== input) message += `: ${error.details}`;
      lines.push({ nodeId, rawId, title, input, message });
    }
  }
  return lines;
}

/** @param {ValidationLine} line */
export function formatLine(line) {
  return `node #${line.rawId} ${line.title}: ${line.input ? `${line.input}: ` : ""}${line.message}`;
}

export class ErrorPanel {
  /**
   * @param {HTMLElement} el
   * @param {{focusNode: (id: number) => void}} hooks
   */
  constructor(el, hooks) {
    this.el = el;
    this.hooks = hooks;
    /** @type {any} */
    this.last = null;
  }

  hide() {
    this.el.hidden = true;
    this.el.replaceChildren();
  }

  /**
   * @param {string} title
   * @param {(Node | string)[]} body
   * @param {string} kind
   */
  show(title, body, kind) {
    const close = h("button", { type: "button", className: "close", "aria-label": "Close", textContent: "\u00d7", onclick: () => this.hide() });
    this.el.dataset.kind = kind;
    this.el.replaceChildren(close, h("h3", { textContent: title }), ...body);
    this.el.hidden = false;
  }

  /**
   * A refused prompt: every offending node marked with its inputs, and listed.
   * @param {any} body
   * @param {(id: number) => string | null} titleOf
   * @param {(id: number, error: {message: string, inputs: string[]}) => void} mark
   */
  showValidation(body, titleOf, mark) {
    const lines = validationLines(body, titleOf);
    /** @type {Map<number, {messages: string[], inputs: string[]}>} */
    const byNode = new Map();
    for (const line of lines) {
      if (line.nodeId === null) continue;
      const entry = byNode.get(line.nodeId) || { messages: [], inputs: [] };
      entry.messages.push(line.input ? `${line.input}: ${line.message}` : line.message);
      if (line.input) entry.inputs.push(line.input);
      byNode.set(line.nodeId, entry);
    }
    for (const [id, entry] of byNode) mark(id, { message: entry.messages.join("\n"), inputs: entry.inputs });
    const error = (body && body.error) || {};
    const heading = String(error.message || "The prompt was refused");
    const items = lines.map((line) =>
      h("li", { dataset: { nodeId: line.rawId } }, [
        line.nodeId !== null ? h("a", { textContent: formatLine(line), onclick: () => this.hooks.focusNode(/** @type {number} */ (line.nodeId)) }) : formatLine(line),
      ]),
    );
    const details = !lines.length && error.details ? [h("p", { textContent: String(error.details) })] : [];
    this.last = { kind: "validation", lines: lines.map(formatLine) };
    this.show(heading, [...details, h("ul", {}, items)], "validation");
  }

  /**
   * A node failed while running.
   * @param {any} data the execution_error message
   * @param {(id: number) => string | null} titleOf
   */
  showExecution(data, titleOf) {
    const id = topLevelId(data.node_id);
    const title = (id !== null && titleOf(id)) || data.node_type || "";
    const heading = `node #${data.node_id} ${title} (${data.node_type}) failed`;
    const traceback = Array.isArray(data.traceback) ? data.traceback.join("") : String(data.traceback || "");
    const body = [
      h("p", {}, [h("strong", { textContent: `${data.exception_type || "Error"}: ` }), String(data.exception_message || "")]),
      traceback ? h("details", { open: true }, [h("summary", { textContent: "Traceback" }), h("pre", { textContent: traceback })]) : null,
      id !== null ? h("button", { type: "button", textContent: "Show the node", onclick: () => this.hooks.focusNode(id) }) : null,
    ].filter((el) => el !== null);
    this.last = { kind: "execution", node: data.node_id, message: data.exception_message };
    this.show(heading, /** @type {Node[]} */ (body), "execution");
  }

  /** @param {string} title @param {string} message */
  showMessage(title, message) {
    this.last = { kind: "message", message };
    this.show(title, [h("p", { textContent: message })], "message");
  }
}
