import assert from "node:assert/strict";
import { test } from "node:test";
import { defaultGraph } from "../../../web/default_workflow.js";
import { toApiPrompt } from "../../../web/graph/serialize.js";
import { looksLikeApiPrompt, promptToGraph } from "../../../web/ui/api_import.js";
import { objectInfo, txt2img } from "./helpers.js";

test("an API prompt becomes a graph that converts back to the same prompt", () => {
  const { graph } = txt2img();
  const prompt = toApiPrompt(graph, objectInfo);
  assert.ok(looksLikeApiPrompt(prompt));
  const loaded = promptToGraph(JSON.parse(JSON.stringify(prompt)), objectInfo);
  assert.equal(loaded.nodes.size, graph.nodes.size);
  assert.deepEqual(toApiPrompt(loaded, objectInfo), prompt);
});

test("columns by depth: sources left, the sink right", () => {
  const { graph, ids } = txt2img();
  const loaded = promptToGraph(toApiPrompt(graph, objectInfo), objectInfo);
  const x = (/** @type {number} */ id) => loaded.node(id).pos[0];
  assert.equal(x(ids.ckpt), 0);
  assert.ok(x(ids.ckpt) < x(ids.pos));
  assert.ok(x(ids.pos) < x(ids.sampler));
  assert.ok(x(ids.sampler) < x(ids.decode) && x(ids.decode) < x(ids.save));
  // Nodes in one column never overlap.
  const column = [...loaded.nodes.values()].filter((n) => n.pos[0] === x(ids.pos));
  column.sort((a, b) => a.pos[1] - b.pos[1]);
  for (let i = 1; i < column.length; i++) assert.ok(column[i].pos[1] >= column[i - 1].pos[1] + column[i - 1].size[1]);
});

test("string ids, a linked widget, list constants and unknown types", () => {
  const prompt = {
    "a:1": { class_type: "CheckpointLoaderSimple", inputs: { ckpt_name: "x.safetensors" } },
    "b": { class_type: "CLIPTextEncode", inputs: { clip: ["a:1", 1], text: "hi" }, _meta: { title: "Mine" } },
  };
  const graph = promptToGraph(prompt, objectInfo);
  const [first, second] = [...graph.nodes.values()];
  assert.deepEqual([first.id, second.id], [1, 2]);
  assert.equal(second.title, "Mine");
  assert.equal(graph.getWidget(2, "text", objectInfo), "hi");
  assert.equal(graph.links.size, 1);
  assert.throws(() => promptToGraph({ 1: { class_type: "Nope", inputs: {} } }, objectInfo), /Nope/);
  assert.equal(looksLikeApiPrompt({ nodes: [] }), false);
});

test("the default workflow is txt2img with the first checkpoint and valid links", () => {
  const graph = defaultGraph(objectInfo, ["first.safetensors", "second.safetensors"]);
  const types = [...graph.nodes.values()].map((n) => n.type).sort();
  assert.deepEqual(types, ["CLIPTextEncode", "CLIPTextEncode", "CheckpointLoaderSimple", "EmptyLatentImage", "KSampler", "SaveImage", "VAEDecode"]);
  assert.equal(graph.links.size, 9);
  const prompt = toApiPrompt(graph, objectInfo);
  const ckpt = Object.values(prompt).find((n) => n.class_type === "CheckpointLoaderSimple");
  assert.equal(ckpt?.inputs.ckpt_name, "first.safetensors");
  const save = Object.values(prompt).find((n) => n.class_type === "SaveImage");
  assert.ok(Array.isArray(save?.inputs.images));
  // A server without SaveImage still gets a graph, without that node.
  const partial = { ...objectInfo };
  delete partial.SaveImage;
  assert.equal(defaultGraph(partial).nodes.size, 6);
});
