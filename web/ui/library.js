// @ts-check
/**
 * The node library: every node type in a tree by category ("sampling/custom_sampling" nests);
 * click adds the node at the centre of the view, drag drops it where it is released.
 */

import { h } from "./dialog.js";

export const DRAG_TYPE = "application/x-loom-node";

/**
 * @typedef {{name: string, children: Map<string, CategoryNode>, items: {type: string, display: string}[]}} CategoryNode
 */

/**
 * @param {Record<string, any>} objectInfo
 * @param {string} [filter] case-insensitive substring of the name, class or category
 * @returns {CategoryNode}
 */
export function categoryTree(objectInfo, filter = "") {
  /** @type {CategoryNode} */
  const root = { name: "", children: new Map(), items: [] };
  const wanted = filter.trim().toLowerCase();
  for (const [type, entry] of Object.entries(objectInfo)) {
    const display = String(entry.display_name || type);
    const category = String(entry.category || "uncategorized");
    if (wanted && ![display, type, category].some((text) => text.toLowerCase().includes(wanted))) continue;
    let node = root;
    for (const part of category.split("/").filter(Boolean)) {
      let child = node.children.get(part);
      if (!child) {
        child = { name: part, children: new Map(), items: [] };
        node.children.set(part, child);
      }
      node = child;
    }
    node.items.push({ type, display });
  }
  return root;
}

export class Library {
  /**
   * @param {HTMLElement} el the panel
   * @param {() => Record<string, any>} objectInfo
   * @param {(type: string) => void} onAdd
   */
  constructor(el, objectInfo, onAdd) {
    this.el = el;
    this.objectInfo = objectInfo;
    this.onAdd = onAdd;
    this.tree = /** @type {HTMLElement} */ (el.querySelector("#library-tree"));
    this.tree.classList.add("library-tree");
    this.filter = /** @type {HTMLInputElement} */ (el.querySelector("#library-filter"));
    this.filter.addEventListener("input", () => this.render());
  }

  /** @param {boolean} open */
  setOpen(open) {
    this.el.hidden = !open;
    if (open && !this.tree.childElementCount) this.render();
  }

  render() {
    const filter = this.filter.value;
    const root = categoryTree(this.objectInfo(), filter);
    // Explicit stack (categories nest as deep as their names say); filtered trees open fully.
    /** @type {[CategoryNode, HTMLElement][]} */
    const stack = [[root, this.tree]];
    this.tree.replaceChildren();
    while (stack.length) {
      const [node, host] = /** @type {[CategoryNode, HTMLElement]} */ (stack.pop());
      const names = [...node.children.keys()].sort((a, b) => a.localeCompare(b));
      for (const name of names) {
        const child = /** @type {CategoryNode} */ (node.children.get(name));
        const details = h("details", { open: Boolean(filter) }, [h("summary", { textContent: name })]);
        host.append(details);
        stack.push([child, details]);
      }
      node.items.sort((a, b) => a.display.localeCompare(b.display));
      for (const item of node.items) host.append(this.item(item.type, item.display));
    }
  }

  /** @param {string} type @param {string} display */
  item(type, display) {
    const el = h("button", { type: "button", className: "library-item", draggable: "true", title: type, textContent: display, dataset: { testid: "library-item", type }, onclick: () => this.onAdd(type) });
    el.addEventListener("dragstart", (event) => {
      if (!event.dataTransfer) return;
      event.dataTransfer.setData(DRAG_TYPE, type);
      event.dataTransfer.effectAllowed = "copy";
    });
    return el;
  }
}
