import assert from "node:assert/strict";
import { test } from "node:test";
import { filterChoices, stepChoice } from "../../../web/widgets/combo.js";
import { decimals, floatRound, formatNumber, normalizeNumber, parseNumber, stepOf } from "../../../web/widgets/number.js";
import { MODES } from "../../../web/widgets/seed_control.js";
import { declaredInputs } from "../../../web/graph/types.js";
import { objectInfo } from "./helpers.js";

const decl = (type, name) => declaredInputs(objectInfo[type]).find((inp) => inp.name === name);

test("INT: snapped to the step, clamped to min/max", () => {
  const width = decl("EmptyLatentImage", "width").options; // step 8, min 16
  assert.equal(stepOf(width, true), 8);
  assert.equal(normalizeNumber(515, width, true), 512);
  assert.equal(normalizeNumber(517, width, true), 520);
  assert.equal(normalizeNumber(3, width, true), 16);
  assert.equal(normalizeNumber(1e9, width, true), width.max);
  assert.equal(normalizeNumber(2.6, { min: 0 }, true), 3);
  assert.equal(normalizeNumber(Number.NaN, { default: 7 }, true), 7);
});

test("FLOAT: rounded to `round`, or to the step's precision; round:false keeps it", () => {
  const cfg = decl("KSampler", "cfg").options; // step 0.1, round 0.01
  assert.equal(floatRound(cfg), 0.01);
  assert.equal(normalizeNumber(7.123456, cfg, false), 7.12);
  assert.equal(normalizeNumber(0.1 + 0.2, cfg, false), 0.3);
  assert.equal(normalizeNumber(-5, cfg, false), 0);
  assert.equal(floatRound({ step: 0.05 }), 0.01);
  assert.equal(normalizeNumber(1.23456, { step: 0.001 }, false), 1.235);
  assert.equal(normalizeNumber(1.23456, { step: 0.1, round: false }, false), 1.23456);
  assert.equal(decimals(0.01), 2);
  assert.equal(decimals(0.5), 1);
  assert.equal(decimals(8), 0);
});

test("numbers are shown with the step's precision, more when the value has it", () => {
  const cfg = decl("KSampler", "cfg").options;
  assert.equal(formatNumber(8, cfg, false), "8.0");
  assert.equal(formatNumber(7.55, cfg, false), "7.55");
  assert.equal(formatNumber(1, decl("KSampler", "denoise").options, false), "1.00");
  assert.equal(formatNumber(20.4, {}, true), "20");
  assert.equal(parseNumber(" 42 "), 42);
  assert.equal(parseNumber("1e3"), 1000);
  assert.equal(parseNumber("abc"), null);
  assert.equal(parseNumber(""), null);
});

test("combo: arrows wrap around, the filter matches every word", () => {
  const choices = ["euler", "euler_ancestral", "heun", "dpmpp_2m"];
  assert.equal(stepChoice(choices, "heun", 1), "dpmpp_2m");
  assert.equal(stepChoice(choices, "dpmpp_2m", 1), "euler");
  assert.equal(stepChoice(choices, "euler", -1), "dpmpp_2m");
  assert.equal(stepChoice(choices, "gone", 1), "euler");
  assert.deepEqual(filterChoices(choices, "EUL anc"), ["euler_ancestral"]);
  assert.deepEqual(filterChoices(choices, "  "), choices);
});

test("the seed control row offers ComfyUI's four modes, in its order", () => {
  assert.deepEqual(MODES, ["fixed", "increment", "decrement", "randomize"]);
  assert.equal(stepChoice(MODES, "randomize", 1), "fixed");
});

test("image upload: the row belongs to the image combo; the preview URL comes from its value", async () => {
  const { Graph } = await import("../../../web/graph/model.js");
  const { computeLayout } = await import("../../../web/canvas/layout.js");
  const { imagePreviewUrl, uploadTarget } = await import("../../../web/widgets/image_upload.js");
  const graph = new Graph();
  const node = graph.createNode("LoadImage", objectInfo);
  const viewUrl = (name, type) => `/view?filename=${encodeURIComponent(name)}&type=${type}`;
  let layout = computeLayout(node, objectInfo, graph, true);
  const upload = layout.widgets.find((row) => row.kind === "image_upload");
  assert.equal(uploadTarget(layout.widgets, upload).name, "image");
  graph.setWidget(node.id, "image", "", objectInfo);
  layout = computeLayout(graph.node(node.id), objectInfo, graph, true);
  assert.equal(imagePreviewUrl(layout, viewUrl), null, "nothing chosen yet");
  graph.setWidget(node.id, "image", "my cat.png", objectInfo);
  layout = computeLayout(graph.node(node.id), objectInfo, graph, true);
  assert.equal(imagePreviewUrl(layout, viewUrl), "/view?filename=my%20cat.png&type=input");
});

test("model helpers used by the canvas: positional widget values, flags, group moves", async () => {
  const { Graph, GraphError } = await import("../../../web/graph/model.js");
  const graph = new Graph();
  const events = [];
  graph.listeners.add((_, what) => events.push(what));
  const note = graph.addNode({ type: "Note", widgets_values: ["a"] });
  graph.setWidgetValue(note.id, 0, "b");
  assert.deepEqual(graph.node(note.id).widgets_values, ["b"]);
  graph.setFlag(note.id, "collapsed", true);
  assert.equal(graph.node(note.id).flags.collapsed, true);
  graph.setFlag(note.id, "collapsed", undefined);
  assert.ok(!("collapsed" in graph.node(note.id).flags));
  const group = graph.addGroup("G", [0, 0, 100, 100]);
  graph.moveGroup(group.id, [10, 20, 300, 200]);
  assert.deepEqual(graph.groups[0].bounding, [10, 20, 300, 200]);
  assert.throws(() => graph.moveGroup(99, [0, 0, 1, 1]), GraphError);
  assert.deepEqual(events, ["node-added", "widget-changed", "node-changed", "node-changed", "group-added", "group-moved"]);
});
