// @ts-check
/**
 * Keyboard shortcuts, in one table. None fires while the user types in a text field (so Ctrl+Z,
 * Ctrl+A and Delete keep their usual meaning in a prompt textarea), except Escape, Ctrl+Enter
 * (queue) and Ctrl+S (save), which text editing has no use for.
 */

/**
 * @typedef {{key: string, ctrl?: boolean, shift?: boolean, action: string}} Binding
 */

/** @type {Binding[]} */
export const BINDINGS = [
  { key: "enter", ctrl: true, action: "queue" },
  { key: "s", ctrl: true, action: "save" },
  { key: "z", ctrl: true, shift: true, action: "redo" },
  { key: "z", ctrl: true, action: "undo" },
  { key: "y", ctrl: true, action: "redo" },
  { key: "c", ctrl: true, action: "copy" },
  { key: "v", ctrl: true, shift: true, action: "paste-with-links" },
  { key: "v", ctrl: true, action: "paste" },
  { key: "b", ctrl: true, action: "bypass" },
  { key: "m", ctrl: true, action: "mute" },
  { key: "g", ctrl: true, action: "group" },
  { key: "a", ctrl: true, action: "select-all" },
  { key: "o", ctrl: true, action: "open" },
  { key: "delete", action: "delete" },
  { key: "backspace", action: "delete" },
  { key: ".", action: "fit" },
  { key: "escape", action: "escape" },
];

/**
 * The action a key event asks for, or null. Ctrl and Cmd (macOS) count the same.
 * @param {{key: string, ctrlKey: boolean, metaKey: boolean, shiftKey: boolean, altKey: boolean}} event
 * @returns {string | null}
 */
export function actionFor(event) {
  if (event.altKey) return null;
  const key = event.key.toLowerCase();
  const ctrl = event.ctrlKey || event.metaKey;
  for (const binding of BINDINGS) {
    if (binding.key !== key || Boolean(binding.ctrl) !== ctrl) continue;
    if (binding.shift !== undefined && binding.shift !== event.shiftKey) continue;
    if (binding.shift === undefined && event.shiftKey && ctrl) continue;
    return binding.action;
  }
  return null;
}

/** Actions that never collide with text editing, so they work from a prompt textarea too. */
export const WHILE_TYPING = new Set(["escape", "queue", "save"]);

/** @param {EventTarget | null} target */
export function isTyping(target) {
  if (!(target instanceof HTMLElement)) return false;
  if (target.isContentEditable) return true;
  if (target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement) return true;
  if (target instanceof HTMLInputElement) return !["button", "checkbox", "radio", "range", "color", "file"].includes(target.type);
  return false;
}

/**
 * Listen on the document; `run(action, event)` returns true when it handled the action.
 * @param {(action: string, event: KeyboardEvent) => boolean} run
 */
export function installShortcuts(run) {
  document.addEventListener("keydown", (event) => {
    const action = actionFor(event);
    if (!action) return;
    if (!WHILE_TYPING.has(action) && isTyping(event.target)) return;
    if (run(action, event)) event.preventDefault();
  });
}
