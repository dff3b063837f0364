// @ts-check
/**
 * Between the canvas and the widget modules: the context a widget gets for one row of one node,
 * and the one way widget values are written (an undo checkpoint first, then a Graph method so
 * listeners fire).
 */

/**
 * @param {import("./canvas.js").GraphCanvas} canvas
 * @param {import("../graph/model.js").Node} node
 * @param {import("./layout.js").WidgetRow} row
 * @returns {import("../widgets/common.js").WidgetContext}
 */
export function widgetContext(canvas, node, row) {
  const layout = canvas.layoutOf(node);
  return {
    node,
    row,
    value: layout.values[row.index],
    get values() {
      return canvas.layoutOf(node).values;
    },
    set: (value, label = "Change value") => writeWidget(canvas, node.id, row, value, label),
    setLive: (value) => writeWidget(canvas, node.id, row, value, null),
    rows: layout.widgets,
    setRow: (other, value, label = "Change value") => writeWidget(canvas, node.id, other, value, label),
    screenRect: () => canvas.rowRect(node, canvas.layoutOf(node), row),
    overlay: canvas.env.overlay,
    env: canvas.env,
    objectInfo: canvas.env.objectInfo(),
    scale: canvas.viewport.scale,
    requestDraw: () => canvas.requestDraw(),
  };
}

/**
 * Checkpoint (unless label is null: the later steps of one drag or one typing session) and write
 * one widget value through the Graph.
 * @param {import("./canvas.js").GraphCanvas} canvas
 * @param {number} nodeId
 * @param {import("./layout.js").WidgetRow} row
 * @param {any} value
 * @param {string | null} label
 */
export function writeWidget(canvas, nodeId, row, value, label) {
  const graph = canvas.graph;
  if (!graph.nodes.has(nodeId)) return;
  if (label !== null) canvas.env.checkpoint(label);
  if (row.direct) graph.setWidgetValue(nodeId, row.index, value);
  else graph.setWidget(nodeId, row.name, value, canvas.env.objectInfo(), row.slotKind === "control" ? "control" : "value");
}
