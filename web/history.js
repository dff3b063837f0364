// @ts-check
/**
 * Snapshot-based undo/redo for one workflow tab. `checkpoint(label)` is called BEFORE a change
 * and stores the current workflow (as JSON text: cheap to compare, never aliased); undo restores
 * it after stacking the current state for redo. Checkpoints that would store the state already on
 * top are dropped (the canvas and the app may both checkpoint one action), and repeated
 * checkpoints of a coalescing label (a widget being dragged) within `coalesceMs` count once.
 */

/** Labels that coalesce: a drag on a number widget checkpoints on every step. */
const COALESCING = /^(widget|drag|change value)/i;

/** @typedef {{label: string, state: string}} Entry */

export class History {
  /**
   * @param {() => string} snapshot the current state as text (JSON of toWorkflow)
   * @param {(state: string) => void} restore replace the current state
   * @param {{limit?: number, coalesceMs?: number, now?: () => number}} [options]
   */
  constructor(snapshot, restore, options = {}) {
    this.snapshot = snapshot;
    this.restore = restore;
    this.limit = options.limit ?? 100;
    this.coalesceMs = options.coalesceMs ?? 1000;
    this.now = options.now ?? (() => Date.now());
    /** @type {Entry[]} */
    this.undoStack = [];
    /** @type {Entry[]} */
    this.redoStack = [];
    this.lastLabel = "";
    this.lastTime = -Infinity;
    /** @type {Set<() => void>} */
    this.listeners = new Set();
  }

  get canUndo() {
    return this.undoStack.length > 0;
  }

  get canRedo() {
    return this.redoStack.length > 0;
  }

  /** @param {string} [label] what is about to change */
  checkpoint(label = "edit") {
    const now = this.now();
    const coalesce = COALESCING.test(label) && label === this.lastLabel && now - this.lastTime < this.coalesceMs;
    this.lastLabel = label;
    this.lastTime = now;
    if (coalesce && this.undoStack.length) return;
    const state = this.snapshot();
    const top = this.undoStack[this.undoStack.length - 1];
    if (top && top.state === state) return;
    this.undoStack.push({ label, state });
    if (this.undoStack.length > this.limit) this.undoStack.shift();
    this.redoStack = [];
    this.notify();
  }

  /** Undo the last change; false when there is nothing (really) to undo. */
  undo() {
    return this.step(this.undoStack, this.redoStack);
  }

  redo() {
    return this.step(this.redoStack, this.undoStack);
  }

  /**
   * Pop `from` until an entry differs from the current state (a checkpoint taken before an action
   * that then changed nothing), push the current state on `to`, restore the entry.
   * @param {Entry[]} from
   * @param {Entry[]} to
   */
  step(from, to) {
    const current = this.snapshot();
    let entry = from.pop();
    while (entry && entry.state === current) entry = from.pop();
    if (!entry) {
      this.notify();
      return false;
    }
    to.push({ label: entry.label, state: current });
    this.lastLabel = "";
    this.restore(entry.state);
    this.notify();
    return true;
  }

  clear() {
    this.undoStack = [];
    this.redoStack = [];
    this.notify();
  }

  notify() {
    for (const listener of this.listeners) listener();
  }
}
