// @ts-check
/**
 * Copy and paste of nodes, as plain data (kept in localStorage so it works across tabs).
 * A clip holds the copied nodes and every link that feeds them: links between copied nodes are
 * always recreated; links from nodes that were not copied only with `keepExternal` (Ctrl+Shift+V),
 * and only while that origin node still exists.
 */

/** @typedef {import("./graph/model.js").Graph} Graph */
/** @typedef {{origin: number, originSlot: number, target: number, targetSlot: number, internal: boolean}} ClipLink */
/** @typedef {{nodes: any[], links: ClipLink[], origin: number[]}} Clip */

const STORAGE_KEY = "loom.clipboard";

/**
 * @param {Graph} graph
 * @param {Iterable<number>} ids
 * @returns {Clip | null} null when nothing is selected
 */
export function copyNodes(graph, ids) {
  const chosen = new Set([...ids].filter((id) => graph.nodes.has(id)));
  if (!chosen.size) return null;
  const nodes = [...chosen].map((id) => structuredClone(graph.node(id)));
  /** @type {ClipLink[]} */
  const links = [];
  for (const link of graph.links.values()) {
    if (!chosen.has(link.target_id)) continue;
    links.push({
      origin: link.origin_id,
      originSlot: link.origin_slot,
      target: link.target_id,
      targetSlot: link.target_slot,
      internal: chosen.has(link.origin_id),
    });
  }
  const origin = [Math.min(...nodes.map((n) => n.pos[0])), Math.min(...nodes.map((n) => n.pos[1]))];
  return { nodes, links, origin };
}

/**
 * Add the clip's nodes with fresh ids, the top-left one at `pos`.
 * @param {Graph} graph
 * @param {Clip} clip
 * @param {number[]} pos graph coordinates
 * @param {{keepExternal?: boolean}} [options]
 * @returns {number[]} the new node ids, in clip order
 */
export function pasteNodes(graph, clip, pos, options = {}) {
  /** @type {Map<number, number>} */
  const ids = new Map();
  for (const raw of clip.nodes) {
    const data = structuredClone(raw);
    delete data.id;
    data.pos = [raw.pos[0] - clip.origin[0] + pos[0], raw.pos[1] - clip.origin[1] + pos[1]];
    data.inputs = (data.inputs || []).map((/** @type {any} */ inp) => ({ ...inp, link: null }));
    data.outputs = (data.outputs || []).map((/** @type {any} */ out) => ({ ...out, links: [] }));
    ids.set(raw.id, graph.addNode(data).id);
  }
  for (const link of clip.links) {
    const target = ids.get(link.target);
    if (target === undefined) continue;
    let origin = ids.get(link.origin);
    if (!link.internal) origin = options.keepExternal && graph.nodes.has(link.origin) ? link.origin : undefined;
    if (origin === undefined) continue;
    try {
      graph.connect(origin, link.originSlot, target, link.targetSlot);
    } catch (error) {
      // The outside node may have changed since the copy; a link that no longer fits is skipped.
      console.warn("loom: paste skipped a link:", error);
    }
  }
  return [...ids.values()];
}

/** @param {Clip} clip */
export function storeClip(clip) {
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify(clip));
  } catch (error) {
    console.warn("loom: cannot keep the clipboard in localStorage:", error);
  }
}

/** @returns {Clip | null} */
export function loadClip() {
  try {
    const text = localStorage.getItem(STORAGE_KEY);
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}
