import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fromWorkflow, toApiPrompt, toWorkflow } from "../../../web/graph/serialize.js";
import { namedWidgetValues } from "../../../web/graph/widgets_values.js";
import { objectInfo, txt2img } from "./helpers.js";

test("txt2img serialises to the API prompt", () => {
  const { graph, ids } = txt2img();
  graph.setWidget(ids.sampler, "seed", 42, objectInfo);
  graph.setTitle(ids.save, "Final");
  const prompt = toApiPrompt(graph, objectInfo);
  assert.deepEqual(Object.keys(prompt).sort(), Object.values(ids).map(String).sort());
  assert.deepEqual(prompt[String(ids.sampler)].inputs, {
    seed: 42,
    steps: 20,
    cfg: 8,
    sampler_name: objectInfo.KSampler.input.required.sampler_name[0][0],
    scheduler: objectInfo.KSampler.input.required.scheduler[0][0],
    denoise: 1,
    model: [String(ids.ckpt), 0],
    positive: [String(ids.pos), 0],
    negative: [String(ids.neg), 0],
    latent_image: [String(ids.latent), 0],
  });
  assert.deepEqual(prompt[String(ids.pos)].inputs, { text: "a cat", clip: [String(ids.ckpt), 1] });
  assert.equal(prompt[String(ids.save)]._meta.title, "Final");
  assert.equal(prompt[String(ids.decode)]._meta.title, objectInfo.VAEDecode.display_name);
});

test("UI workflow round-trips through fromWorkflow/toWorkflow", () => {
  const { graph } = txt2img();
  graph.addGroup("All", [0, 0, 1000, 800]);
  const saved = JSON.parse(JSON.stringify(toWorkflow(graph)));
  assert.equal(saved.version, 0.4);
  assert.equal(saved.links.length, 9);
  const again = toWorkflow(fromWorkflow(saved));
  assert.deepEqual(again, saved);
  assert.deepEqual(toApiPrompt(fromWorkflow(saved), objectInfo), toApiPrompt(graph, objectInfo));
});

test("fromWorkflow reads schema 1.0 links as objects", () => {
  const fixture = new URL("../../execution/workflows/default_txt2img_v1.json", import.meta.url);
  const graph = fromWorkflow(JSON.parse(readFileSync(fixture, "utf8")));
  assert.ok(graph.links.size > 0);
  for (const link of graph.links.values()) {
    const target = graph.node(link.target_id);
    assert.equal(target.inputs[link.target_slot].link, link.id);
  }
  assert.equal(toWorkflow(graph).links.length, graph.links.size);
});

test("bypassed nodes are routed around, muted nodes drop the input", () => {
  const { graph, ids } = txt2img();
  const scale = graph.createNode("ImageScale", objectInfo).id;
  graph.connect(ids.decode, 0, scale, 0);
  graph.connect(scale, 0, ids.save, 0);
  graph.setMode(scale, 4);
  let prompt = toApiPrompt(graph, objectInfo);
  assert.equal(prompt[String(scale)], undefined);
  assert.deepEqual(prompt[String(ids.save)].inputs.images, [String(ids.decode), 0]);
  graph.setMode(scale, 2);
  prompt = toApiPrompt(graph, objectInfo);
  assert.equal(prompt[String(scale)], undefined);
  assert.equal("images" in prompt[String(ids.save)].inputs, false);
});

test("reroutes pass links through; primitives become constants", () => {
  const { graph, ids } = txt2img();
  const reroute = graph.addNode({ type: "Reroute", inputs: [{ name: "", type: "*", link: null }], outputs: [{ name: "", type: "*", links: [] }] }).id;
  graph.connect(ids.ckpt, 2, reroute, 0);
  graph.connect(reroute, 0, ids.decode, 1);
  const slot = graph.widgetToInput(ids.sampler, "steps", objectInfo);
  const primitive = graph.addNode({ type: "PrimitiveNode", outputs: [{ name: "INT", type: "INT", links: [] }], widgets_values: [33, "fixed"] }).id;
  graph.connect(primitive, 0, ids.sampler, slot);
  const prompt = toApiPrompt(graph, objectInfo);
  assert.equal(prompt[String(reroute)], undefined);
  assert.equal(prompt[String(primitive)], undefined);
  assert.deepEqual(prompt[String(ids.decode)].inputs.vae, [String(ids.ckpt), 2]);
  assert.equal(prompt[String(ids.sampler)].inputs.steps, 33);
});

test("notes are never emitted; unknown types are reported by id", () => {
  const { graph } = txt2img();
  const note = graph.addNode({ type: "Note", widgets_values: ["hello"] }).id;
  assert.equal(toApiPrompt(graph, objectInfo)[String(note)], undefined);
  const odd = graph.addNode({ type: "Mystery" }).id;
  assert.throws(() => toApiPrompt(graph, objectInfo), new RegExp(`'Mystery' \\(node ${odd}\\)`));
});

test("widgets_values: missing control companion, list values, upload value", () => {
  const sampler = objectInfo.KSampler;
  const withControl = namedWidgetValues([7, "fixed", 25, 6.5, "euler", "normal", 1], sampler);
  const without = namedWidgetValues([7, 25, 6.5, "euler", "normal", 1], sampler);
  assert.deepEqual(without, withControl);
  assert.equal(withControl.steps, 25);
  assert.deepEqual(namedWidgetValues(["example.png", "image"], objectInfo.LoadImage), { image: "example.png" });
  const { graph, ids } = txt2img();
  graph.node(ids.pos).widgets_values = [["a", "b"]];
  assert.deepEqual(toApiPrompt(graph, objectInfo)[String(ids.pos)].inputs.text, { __value__: ["a", "b"] });
});
