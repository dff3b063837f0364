// @ts-check
/**
 * The entries of the node and canvas context menus (ContextMenu draws them). Every entry that
 * changes the graph checkpoints first, so it can be undone.
 */

import { MODE_BYPASS, MODE_NEVER } from "../graph/model.js";
import { declaredInputs } from "../graph/types.js";
import { askText } from "./dialog.js";
import { imageRowOf } from "./mask_editor.js";
import { NODE_COLORS } from "./menu.js";

/**
 * @typedef {object} MenuHost what the menus act on (the app)
 * @property {import("../graph/model.js").Graph} graph
 * @property {any} canvas GraphCanvas
 * @property {Record<string, any>} objectInfo
 * @property {(label: string) => void} checkpoint
 * @property {(opts: {screen: number[], graphPos: number[]}) => void} openSearch
 * @property {(nodeId: number) => void} openMaskEditor
 */

/** @typedef {import("./menu.js").MenuEntry} MenuEntry */

/**
 * @param {MenuHost} app
 * @param {number} id
 * @returns {MenuEntry[]}
 */
export function nodeMenu(app, id) {
  const graph = app.graph;
  const node = graph.node(id);
  /** @param {string} label @param {() => void} change */
  const edit = (label, change) => () => {
    app.checkpoint(label);
    change();
    graph.changed("node-changed");
  };
  const targets = () => (app.canvas.selection.has(id) ? [...app.canvas.selection] : [id]);
  /** @param {number} mode */
  const toggleMode = (mode) => () => {
    const ids = targets();
    app.checkpoint(mode === MODE_BYPASS ? "bypass" : "mute");
    const all = ids.every((one) => graph.node(one).mode === mode);
    for (const one of ids) graph.setMode(one, all ? 0 : mode);
  };
  /** @type {MenuEntry[]} */
  const entries = [
    {
      label: "Title\u2026",
      action: "title",
      run: async () => {
        const title = await askText("Node title", node.title ?? displayName(app, node.type), "Rename");
        if (title === null || !graph.nodes.has(id)) return;
        app.checkpoint("title");
        graph.setTitle(id, title);
      },
    },
    {
      swatches: [
        { name: "none", color: "#353535", run: edit("colour", () => setColor(graph, targets(), null)) },
        ...Object.entries(NODE_COLORS).map(([name, c]) => ({ name, color: c.bgcolor, run: edit("colour", () => setColor(graph, targets(), c)) })),
      ],
    },
    { label: node.flags.collapsed ? "Expand" : "Collapse", action: "collapse", run: edit("collapse", () => toggleFlag(graph, targets(), "collapsed")) },
    { label: node.flags.pinned ? "Unpin" : "Pin", action: "pin", run: edit("pin", () => toggleFlag(graph, targets(), "pinned")) },
    { label: node.mode === MODE_BYPASS ? "Stop bypassing" : "Bypass", action: "bypass", shortcut: "Ctrl+B", run: toggleMode(MODE_BYPASS) },
    { label: node.mode === MODE_NEVER ? "Unmute" : "Mute", action: "mute", shortcut: "Ctrl+M", run: toggleMode(MODE_NEVER) },
  ];
  if (imageRowOf(app.canvas, id)) {
    entries.push({ separator: true });
    entries.push({ label: "Open in mask editor", action: "mask-editor", shortcut: "double-click image", run: () => app.openMaskEditor(id) });
  }
  entries.push(...widgetEntries(app, id));
  entries.push({ separator: true });
  entries.push({
    label: "Remove",
    action: "remove",
    shortcut: "Del",
    run: () => {
      app.checkpoint("remove");
      for (const one of targets()) if (graph.nodes.has(one)) graph.removeNode(one);
      app.canvas.clearSelection();
    },
  });
  return entries;
}

/**
 * "Convert <w> to input" for each widget without a socket, "Convert <w> to widget" for unlinked ones.
 * @param {MenuHost} app
 * @param {number} id
 * @returns {MenuEntry[]}
 */
function widgetEntries(app, id) {
  const graph = app.graph;
  const node = graph.node(id);
  const entry = app.objectInfo[node.type];
  if (!entry) return [];
  /** @type {MenuEntry[]} */
  const entries = [];
  for (const decl of declaredInputs(entry).filter((inp) => inp.isWidget)) {
    const index = node.inputs.findIndex((inp) => inp.name === decl.name && inp.widget);
    if (index < 0) {
      entries.push({ label: `Convert ${decl.name} to input`, action: `to-input-${decl.name}`, run: () => {
        app.checkpoint("convert widget");
        graph.widgetToInput(id, decl.name, app.objectInfo);
      } });
    } else if (node.inputs[index].link === null) {
      entries.push({ label: `Convert ${decl.name} to widget`, action: `to-widget-${decl.name}`, run: () => {
        app.checkpoint("convert widget");
        node.inputs.splice(index, 1);
        // Links into later inputs shift down one slot with them.
        for (const link of graph.links.values()) {
          if (link.target_id === id && link.target_slot > index) link.target_slot -= 1;
        }
        graph.changed("node-changed");
      } });
    }
  }
  return entries.length ? [{ separator: true }, ...entries] : [];
}

/**
 * @param {MenuHost} app
 * @param {number[]} screen
 * @param {number[]} graphPos
 * @returns {MenuEntry[]}
 */
export function canvasMenu(app, screen, graphPos) {
  const graph = app.graph;
  /** @type {MenuEntry[]} */
  const entries = [
    { label: "Add node\u2026", action: "add-node", shortcut: "double-click", run: () => app.openSearch({ screen, graphPos }) },
    {
      label: "Add group",
      action: "add-group",
      run: () => {
        app.checkpoint("add group");
        if (app.canvas.selection.size) app.canvas.groupSelection();
        else graph.addGroup("Group", [graphPos[0], graphPos[1], 400, 240]);
      },
    },
    { label: "Fit view", action: "fit-view", shortcut: ".", run: () => app.canvas.fitView() },
  ];
  const group = [...graph.groups].reverse().find((g) => inside(graphPos, g.bounding));
  if (group) {
    entries.push({ separator: true });
    entries.push({
      label: `Rename group "${group.title}"\u2026`,
      action: "group-title",
      run: async () => {
        const title = await askText("Group title", group.title, "Rename");
        if (title === null) return;
        app.checkpoint("group title");
        group.title = title;
        graph.changed("group-changed");
      },
    });
    entries.push({ label: "Remove group", action: "remove-group", run: () => {
      app.checkpoint("remove group");
      graph.removeGroup(group.id);
    } });
  }
  return entries;
}

/** @param {number[]} point @param {number[]} box */
function inside(point, box) {
  return point[0] >= box[0] && point[1] >= box[1] && point[0] <= box[0] + box[2] && point[1] <= box[1] + box[3];
}

/** @param {MenuHost} app @param {string} type */
function displayName(app, type) {
  const entry = app.objectInfo[type];
  return (entry && entry.display_name) || type;
}

/**
 * @param {import("../graph/model.js").Graph} graph
 * @param {number[]} ids
 * @param {{color: string, bgcolor: string} | null} colors
 */
function setColor(graph, ids, colors) {
  for (const id of ids) {
    const node = /** @type {any} */ (graph.node(id));
    if (colors) Object.assign(node, colors);
    else {
      delete node.color;
      delete node.bgcolor;
    }
  }
}

/**
 * @param {import("../graph/model.js").Graph} graph
 * @param {number[]} ids
 * @param {string} flag
 */
function toggleFlag(graph, ids, flag) {
  const on = !ids.every((id) => graph.node(id).flags[flag]);
  for (const id of ids) {
    const node = graph.node(id);
    if (on) node.flags[flag] = true;
    else delete node.flags[flag];
  }
}

/**
 * A link's centre: delete it, or put a reroute in the middle.
 * @param {MenuHost} app
 * @param {number} linkId
 * @param {number[]} graphPos
 * @returns {MenuEntry[]}
 */
export function linkMenu(app, linkId, graphPos) {
  const graph = app.graph;
  const link = graph.links.get(linkId);
  if (!link) return [];
  return [
    { label: "Delete link", action: "delete-link", run: () => {
      app.checkpoint("delete link");
      graph.disconnect(link.target_id, link.target_slot);
    } },
    { label: "Insert reroute", action: "insert-reroute", run: () => {
      app.checkpoint("insert reroute");
      const type = link.type || "*";
      const reroute = graph.addNode({ type: "Reroute", pos: [graphPos[0] - 37, graphPos[1] - 13], size: [75, 26],
        inputs: [{ name: "", type: "*", link: null }], outputs: [{ name: "", type, links: [] }] });
      const { origin_id: origin, origin_slot: originSlot, target_id: target, target_slot: targetSlot } = link;
      graph.connect(origin, originSlot, reroute.id, 0);
      graph.connect(reroute.id, 0, target, targetSlot);
    } },
  ];
}

/**
 * A group's title bar: rename, colour, fit to its nodes, remove.
 * @param {MenuHost} app
 * @param {number} groupId
 * @returns {MenuEntry[]}
 */
export function groupMenu(app, groupId) {
  const graph = app.graph;
  const group = graph.groups.find((g) => g.id === groupId);
  if (!group) return [];
  return [
    { label: "Title\u2026", action: "group-title", run: async () => {
      const title = await askText("Group title", group.title, "Rename");
      if (title === null) return;
      app.checkpoint("group title");
      graph.setGroupTitle(group.id, title);
    } },
    { swatches: Object.entries(NODE_COLORS).map(([name, c]) => ({ name, color: c.bgcolor, run: () => {
      app.checkpoint("group colour");
      group.color = c.bgcolor;
      graph.changed("group-changed");
    } })) },
    { separator: true },
    { label: "Remove group", action: "remove-group", run: () => {
      app.checkpoint("remove group");
      graph.removeGroup(group.id);
    } },
    { label: "Remove group and its nodes", action: "remove-group-nodes", run: () => {
      app.checkpoint("remove group");
      for (const node of [...graph.nodes.values()]) {
        if (inside(node.pos, group.bounding)) graph.removeNode(node.id);
      }
      graph.removeGroup(group.id);
    } },
  ];
}
