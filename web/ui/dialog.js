// @ts-check
/**
 * Small DOM helpers shared by the panels: an element builder, a modal dialog (Escape or the
 * backdrop closes it), a text prompt and toasts. No window.prompt/alert: they block the page
 * (and browser automation).
 */

/**
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, any>} [props] className, textContent, dataset entries as data-*, on* handlers, other attributes
 * @param {(Node | string | null | undefined)[]} [children]
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, props = {}, children = []) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "className") el.className = value;
    else if (key === "textContent") el.textContent = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "style" && typeof value === "object") Object.assign(el.style, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) if (child !== null && child !== undefined) el.append(child);
  return el;
}

/** @type {HTMLElement[]} */
const openModals = [];

/** Close the topmost modal; false when none is open. */
export function closeTopModal() {
  const top = openModals.pop();
  if (!top) return false;
  top.dispatchEvent(new CustomEvent("modal-close"));
  top.remove();
  return true;
}

export function modalOpen() {
  return openModals.length > 0;
}

/**
 * @param {string} title
 * @param {(Node | string)[]} body
 * @param {{label: string, primary?: boolean, testid?: string, onClick?: () => boolean | void}[]} actions
 *   onClick returning false keeps the dialog open
 * @param {{testid?: string}} [options]
 * @returns {{el: HTMLElement, close: () => void, closed: Promise<void>}}
 */
export function modal(title, body, actions, options = {}) {
  /** @type {() => void} */
  let resolve = () => {};
  const closed = new Promise((r) => (resolve = () => r(undefined)));
  const backdrop = h("div", { className: "modal-backdrop" });
  const close = () => {
    const index = openModals.indexOf(backdrop);
    if (index >= 0) openModals.splice(index, 1);
    backdrop.remove();
    resolve();
  };
  backdrop.addEventListener("modal-close", () => resolve());
  const buttons = actions.map((action) =>
    h("button", {
      type: "button",
      className: action.primary ? "primary" : "",
      textContent: action.label,
      dataset: action.testid ? { testid: action.testid } : undefined,
      onclick: () => {
        if (action.onClick && action.onClick() === false) return;
        close();
      },
    }),
  );
  const box = h("div", { className: "modal", role: "dialog", "aria-label": title, dataset: options.testid ? { testid: options.testid } : undefined }, [
    h("h3", { textContent: title }),
    h("div", { className: "modal-body" }, body),
    h("div", { className: "modal-actions" }, buttons),
  ]);
  backdrop.append(box);
  backdrop.addEventListener("mousedown", (event) => {
    if (event.target === backdrop) close();
  });
  document.body.append(backdrop);
  openModals.push(backdrop);
  return { el: box, close, closed };
}

/**
 * Ask for a line of text; null when cancelled.
 * @param {string} title
 * @param {string} [value]
 * @param {string} [okLabel]
 * @returns {Promise<string | null>}
 */
export function askText(title, value = "", okLabel = "OK") {
  return new Promise((resolve) => {
    let answer = /** @type {string | null} */ (null);
    const input = h("input", { type: "text", value, dataset: { testid: "dialog-input" } });
    const dialog = modal(title, [input], [
      { label: "Cancel" },
      { label: okLabel, primary: true, testid: "dialog-ok", onClick: () => void (answer = input.value.trim() || null) },
    ]);
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        answer = input.value.trim() || null;
        dialog.close();
      }
    });
    dialog.closed.then(() => resolve(answer));
    input.focus();
    input.select();
  });
}

/**
 * Ask a yes/no question in the app's own dialog; true only when the user confirms (Escape, the
 * backdrop and Cancel answer false).
 * @param {string} title
 * @param {string} message
 * @param {string} [okLabel]
 * @returns {Promise<boolean>}
 */
export function askConfirm(title, message, okLabel = "OK") {
  return new Promise((resolve) => {
    let answer = false;
    const dialog = modal(title, [h("p", { className: "confirm-message", textContent: message })], [
      { label: "Cancel", testid: "dialog-cancel" },
      { label: okLabel, primary: true, testid: "dialog-ok", onClick: () => void (answer = true) },
    ], { testid: "confirm-dialog" });
    dialog.closed.then(() => resolve(answer));
    const ok = /** @type {HTMLButtonElement | null} */ (dialog.el.querySelector('[data-testid="dialog-ok"]'));
    if (ok) ok.focus();
  });
}

/**
 * @param {string} text
 * @param {{error?: boolean, ms?: number}} [options]
 */
export function toast(text, options = {}) {
  const host = document.getElementById("toasts");
  if (!host) return;
  const el = h("div", { className: options.error ? "toast error" : "toast", textContent: text, role: "status" });
  host.append(el);
  setTimeout(() => el.remove(), options.ms ?? (options.error ? 6000 : 2500));
}
