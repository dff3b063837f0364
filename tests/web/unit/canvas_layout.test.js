import assert from "node:assert/strict";
import { test } from "node:test";
import { computeLayout, nodeBounds, sameKey } from "../../../web/canvas/layout.js";
import { SLOT_H, TITLE_H, WIDGET_H } from "../../../web/canvas/theme.js";
import { Graph } from "../../../web/graph/model.js";
import { objectInfo, txt2img } from "./helpers.js";

test("KSampler: socket rows, then one widget row per widget value incl. the seed control", () => {
  const { graph, ids } = txt2img();
  const node = graph.node(ids.sampler);
  const layout = computeLayout(node, objectInfo, graph);
  assert.deepEqual(
    layout.widgets.map((row) => [row.name, row.kind, row.index]),
    [
      ["seed", "number", 0],
      ["control_after_generate", "seed_control", 1],
      ["steps", "number", 2],
      ["cfg", "number", 3],
      ["sampler_name", "combo", 4],
      ["scheduler", "combo", 5],
      ["denoise", "number", 6],
    ],
  );
  assert.equal(layout.values[2], 20);
  // 4 inputs vs 1 output: four socket rows, widgets below them, rows do not overlap.
  assert.equal(layout.inputs.length, 4);
  assert.equal(layout.inputs[3].y, 3 * SLOT_H + SLOT_H / 2 + 4);
  assert.equal(layout.outputs[0].x, layout.w);
  assert.ok(layout.widgets[0].y > layout.inputs[3].y + SLOT_H / 2);
  for (let index = 1; index < layout.widgets.length; index++) {
    const previous = layout.widgets[index - 1];
    assert.ok(layout.widgets[index].y >= previous.y + previous.h);
  }
  // The node's stored size [200, 100] is too small: the layout grows to fit the content.
  assert.ok(layout.h >= layout.widgets.at(-1).y + WIDGET_H);
  assert.ok(layout.w > 200);
  assert.deepEqual(nodeBounds(node, layout), [node.pos[0], node.pos[1] - TITLE_H, layout.w, layout.h + TITLE_H]);
});

test("spare height goes to multiline text; a bigger stored size is kept", () => {
  const graph = new Graph();
  const node = graph.createNode("CLIPTextEncode", objectInfo, { size: [400, 300] });
  const layout = computeLayout(node, objectInfo, graph);
  assert.equal(layout.w, 400);
  assert.equal(layout.h, 300);
  const text = layout.widgets.find((row) => row.name === "text");
  assert.equal(text.kind, "multiline");
  assert.ok(Math.abs(text.y + text.h - (300 - 8)) < 1e-6, "the text area fills the body");
});

test("a widget converted to an input puts its socket on the widget row", () => {
  const { graph, ids } = txt2img();
  const slot = graph.widgetToInput(ids.sampler, "seed", objectInfo);
  const layout = computeLayout(graph.node(ids.sampler), objectInfo, graph);
  const seedRow = layout.widgets.find((row) => row.name === "seed");
  assert.equal(seedRow.inputSlot, slot);
  assert.equal(layout.inputs[slot].onWidget, true);
  assert.equal(layout.inputs[slot].y, seedRow.y + WIDGET_H / 2);
  // The socket inputs keep their rows.
  assert.equal(layout.inputs[0].y, SLOT_H / 2 + 4);
});

test("LoadImage gets an upload row and room for the preview", () => {
  const graph = new Graph();
  const node = graph.createNode("LoadImage", objectInfo);
  const layout = computeLayout(node, objectInfo, graph, true);
  assert.deepEqual(layout.widgets.map((row) => row.kind), ["combo", "image_upload"]);
  assert.ok(layout.image);
  assert.ok(layout.image[1] >= layout.widgets[1].y + WIDGET_H);
  assert.ok(layout.image[3] >= 40);
});

test("collapsed nodes are a title pill with the slots at its ends; reroutes are small", () => {
  const { graph, ids } = txt2img();
  graph.setFlag(ids.sampler, "collapsed", true);
  const layout = computeLayout(graph.node(ids.sampler), objectInfo, graph);
  assert.equal(layout.h, 0);
  assert.deepEqual(layout.widgets, []);
  assert.ok(layout.inputs.every((place) => place.x === 0 && place.y === -TITLE_H / 2));
  assert.ok(layout.outputs.every((place) => place.x === layout.w));
  const reroute = graph.addNode({ type: "Reroute", inputs: [{ name: "", type: "*", link: null }], outputs: [{ name: "", type: "*", links: [] }] });
  const small = computeLayout(reroute, objectInfo, graph);
  assert.equal(small.reroute, true);
  assert.equal(small.titleH, 0);
  assert.deepEqual([small.w, small.h], [75, 26]);
});

test("Note and PrimitiveNode widgets write by position; unknown types still lay out", () => {
  const { graph, ids } = txt2img();
  const note = graph.addNode({ type: "Note", widgets_values: ["hello"] });
  const noteLayout = computeLayout(note, objectInfo, graph);
  assert.deepEqual(noteLayout.widgets.map((row) => [row.kind, row.direct]), [["multiline", true]]);
  assert.equal(noteLayout.values[0], "hello");
  const primitive = graph.addNode({ type: "PrimitiveNode", outputs: [{ name: "INT", type: "INT", links: [] }], widgets_values: [5, "fixed"] });
  const slot = graph.widgetToInput(ids.sampler, "seed", objectInfo);
  graph.connect(primitive.id, 0, ids.sampler, slot);
  const primLayout = computeLayout(primitive, objectInfo, graph);
  assert.deepEqual(primLayout.widgets.map((row) => [row.name, row.kind, row.index]), [["seed", "number", 0], ["control_after_generate", "seed_control", 1]]);
  const unknown = graph.addNode({ type: "NotInstalled", inputs: [{ name: "x", type: "IMAGE", link: null }], outputs: [] });
  const unknownLayout = computeLayout(unknown, objectInfo, graph);
  assert.equal(unknownLayout.known, false);
  assert.equal(unknownLayout.inputs.length, 1);
});

test("the cache key notices changes that alter the layout", () => {
  const { graph, ids } = txt2img();
  const node = graph.node(ids.latent);
  const layout = computeLayout(node, objectInfo, graph);
  assert.ok(sameKey(layout.key, node, false));
  graph.moveNode(ids.latent, [500, 500]);
  assert.ok(sameKey(layout.key, node, false), "moving does not invalidate");
  assert.ok(!sameKey(layout.key, node, true));
  graph.setWidget(ids.latent, "width", 768, objectInfo);
  assert.ok(!sameKey(layout.key, node, false));
});
