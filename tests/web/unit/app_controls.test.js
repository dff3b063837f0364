import assert from "node:assert/strict";
import { test } from "node:test";
import { applyControlAfterGenerate, nextValue } from "../../../web/ui/controls.js";
import { objectInfo, txt2img } from "./helpers.js";

const seed = { name: "seed", section: "required", type: "INT", choices: null, options: { min: 0, max: 10 }, isWidget: true };
const combo = { name: "c", section: "required", type: "COMBO", choices: ["a", "b", "c"], options: {}, isWidget: true };

test("nextValue: fixed, increment, decrement, randomize within bounds", () => {
  assert.equal(nextValue(5, "fixed", seed), 5);
  assert.equal(nextValue(5, "increment", seed), 6);
  assert.equal(nextValue(10, "increment", seed), 10);
  assert.equal(nextValue(0, "decrement", seed), 0);
  assert.equal(nextValue(5, "randomize", seed, () => 0.999), 10);
  assert.equal(nextValue(5, "randomize", seed, () => 0), 0);
  assert.equal(nextValue("a", "increment", combo), "b");
  assert.equal(nextValue("a", "decrement", combo), "a");
  assert.equal(nextValue("a", "randomize", combo, () => 0.7), "c");
  const huge = { ...seed, options: { min: 0, max: 18446744073709551615 } };
  assert.ok(Number.isSafeInteger(nextValue(0, "randomize", huge, () => 0.9999999)));
});

test("applyControlAfterGenerate moves the KSampler seed by its mode", () => {
  const { graph, ids } = txt2img();
  graph.setWidget(ids.sampler, "seed", 41, objectInfo);
  graph.setWidget(ids.sampler, "seed", "increment", objectInfo, "control");
  assert.deepEqual(applyControlAfterGenerate(graph, objectInfo), [ids.sampler]);
  assert.equal(graph.getWidget(ids.sampler, "seed", objectInfo), 42);
  graph.setWidget(ids.sampler, "seed", "fixed", objectInfo, "control");
  assert.deepEqual(applyControlAfterGenerate(graph, objectInfo), []);
  graph.setWidget(ids.sampler, "seed", "randomize", objectInfo, "control");
  applyControlAfterGenerate(graph, objectInfo, () => 0.5);
  assert.notEqual(graph.getWidget(ids.sampler, "seed", objectInfo), 42);
  // Other widgets never move.
  assert.equal(graph.getWidget(ids.sampler, "steps", objectInfo), 20);
});

test("a seed fed by a link, or a muted node, is left alone", () => {
  const { graph, ids } = txt2img();
  graph.setWidget(ids.sampler, "seed", "increment", objectInfo, "control");
  graph.setWidget(ids.sampler, "seed", 1, objectInfo);
  graph.setMode(ids.sampler, 2);
  applyControlAfterGenerate(graph, objectInfo);
  assert.equal(graph.getWidget(ids.sampler, "seed", objectInfo), 1);
  graph.setMode(ids.sampler, 0);
  graph.widgetToInput(ids.sampler, "seed", objectInfo);
  const slot = graph.node(ids.sampler).inputs.findIndex((inp) => inp.name === "seed");
  const source = graph.addNode({ type: "PrimitiveNode", outputs: [{ name: "INT", type: "INT", links: [] }], widgets_values: [1, "fixed"] });
  graph.connect(source.id, 0, ids.sampler, slot);
  applyControlAfterGenerate(graph, objectInfo);
  assert.equal(graph.getWidget(ids.sampler, "seed", objectInfo), 1);
});

test("PrimitiveNode values follow their control", () => {
  const { graph } = txt2img();
  const prim = graph.addNode({ type: "PrimitiveNode", widgets_values: [7, "decrement"] });
  assert.ok(applyControlAfterGenerate(graph, objectInfo).includes(prim.id));
  assert.equal(graph.node(prim.id).widgets_values[0], 6);
});
