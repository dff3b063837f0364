import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fromWorkflow, toApiPrompt, toWorkflow, workflowToPrompt } from "../../../web/graph/serialize.js";
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

// Subgraph flattening: the rules of execution/workflow_graph.py (spec §9).

/** @param {number} id @param {number} originId @param {number} originSlot @param {number} targetId @param {number} targetSlot */
const link = (id, originId, originSlot, targetId, targetSlot, type = "*") => [id, originId, originSlot, targetId, targetSlot, type];
const io = (/** @type {string[]} */ ...names) => names.map((name) => ({ name, type: "*" }));

/** A definition holding one CLIPTextEncode (2) fed from both subgraph inputs, plus a "Negative" (4) fed the clip. */
function innerDefinition(id = "inner-def") {
  return {
    id,
    name: "Inner",
    inputs: io("clip", "text"),
    outputs: io("cond"), // no linkIds: the output is found by scanning links into -20
    nodes: [
      { id: 2, type: "CLIPTextEncode", inputs: [{ name: "clip", type: "CLIP", link: 1 }, { name: "text", type: "STRING", widget: { name: "text" }, link: 2 }], outputs: [{ name: "CONDITIONING", type: "CONDITIONING", links: [3] }], widgets_values: ["inner placeholder"] },
      { id: 4, type: "CLIPTextEncode", title: "Negative", inputs: [{ name: "clip", type: "CLIP", link: 4 }], outputs: [], widgets_values: ["neg"] },
    ],
    links: [link(1, -10, 0, 2, 0), link(2, -10, 1, 2, 1), link(3, 2, 0, -20, 0), link(4, -10, 0, 4, 0)],
  };
}

/** Root -> instance 10 of Outer -> instance 7 of Inner (Inner defined inside Outer); instance 11 muted. */
function nestedWorkflow() {
  const outer = {
    id: "outer-def",
    name: "Outer",
    inputs: io("clip", "text"),
    outputs: [{ name: "cond", type: "CONDITIONING", linkIds: [3] }],
    nodes: [
      { id: 7, type: "inner-def", inputs: [{ name: "clip", type: "CLIP", link: 1 }, { name: "text", type: "STRING", widget: { name: "text" }, link: 2 }], outputs: [{ name: "cond", type: "CONDITIONING", links: [3] }], widgets_values: ["unused: the input is linked"] },
    ],
    links: [link(1, -10, 0, 7, 0), link(2, -10, 1, 7, 1), link(3, 7, 0, -20, 0)],
    definitions: { subgraphs: [innerDefinition()] },
  };
  const instance = (/** @type {number} */ id, /** @type {number} */ clipLink, /** @type {number} */ outLink, mode = 0) => ({
    id,
    type: "outer-def",
    mode,
    inputs: [{ name: "clip", type: "CLIP", link: clipLink }, { name: "text", type: "STRING", widget: { name: "text" }, link: null }],
    outputs: [{ name: "cond", type: "CONDITIONING", links: [outLink] }],
    widgets_values: ["outer text"],
  });
  return {
    nodes: [
      { id: 1, type: "CheckpointLoaderSimple", outputs: [], widgets_values: ["m.safetensors"] },
      instance(10, 1, 2),
      instance(11, 5, 4, 2),
      { id: 3, type: "KSampler", inputs: [{ name: "model", type: "MODEL", link: 3 }, { name: "positive", type: "CONDITIONING", link: 2 }, { name: "negative", type: "CONDITIONING", link: 4 }], widgets_values: [1, "fixed", 20, 8, "euler", "normal", 1] },
    ],
    links: [link(1, 1, 1, 10, 0), link(2, 10, 0, 3, 1), link(3, 1, 0, 3, 0), link(4, 11, 0, 3, 2), link(5, 1, 1, 11, 0)],
    definitions: { subgraphs: [outer] },
    version: 0.4,
  };
}

test("nested subgraphs flatten to <instance>:<inner> ids with links resolved across boundaries", () => {
  // Through the editor model: definitions survive load and are flattened on conversion.
  const prompt = toApiPrompt(fromWorkflow(nestedWorkflow()), objectInfo);
  assert.deepEqual(Object.keys(prompt).sort(), ["1", "10:7:2", "10:7:4", "3"]);
  // The innermost text widget is fed through two boundaries from the outer instance's promoted widget.
  assert.deepEqual(prompt["10:7:2"].inputs, { text: "outer text", clip: ["1", 1] });
  assert.deepEqual(prompt["10:7:4"].inputs, { text: "neg", clip: ["1", 1] });
  assert.equal(prompt["10:7:4"]._meta.title, "Negative");
  // The consumer outside reads the innermost origin through both output nodes.
  assert.deepEqual(prompt["3"].inputs.positive, ["10:7:2", 0]);
  assert.deepEqual(prompt["3"].inputs.model, ["1", 0]);
  // A muted instance emits nothing inside it, and its consumer loses the input.
  assert.equal("negative" in prompt["3"].inputs, false);
});

test("a bypassed instance is skipped with everything inside it", () => {
  const workflow = nestedWorkflow();
  workflow.nodes[1].mode = 4;
  const prompt = workflowToPrompt(workflow, objectInfo);
  assert.deepEqual(Object.keys(prompt).sort(), ["1", "3"]);
  // No input of the instance fits CONDITIONING, so the consumer is left unfed.
  assert.equal("positive" in prompt["3"].inputs, false);
});

test("proxyWidgets: '-1' entries feed promoted inputs, others override inner widgets", () => {
  const workflow = {
    nodes: [
      { id: 1, type: "CheckpointLoaderSimple", widgets_values: ["m.safetensors"] },
      {
        id: 20,
        type: "inner-def",
        inputs: [{ name: "clip", type: "CLIP", link: 1 }],
        outputs: [],
        properties: { proxyWidgets: [["-1", "text"], ["4", "text"], "junk", ["2", "not_a_widget"]] },
        widgets_values: ["promoted", "neg override", "ignored", "ignored too"],
      },
    ],
    links: [link(1, 1, 1, 20, 0)],
    definitions: { subgraphs: [innerDefinition()] },
  };
  const prompt = workflowToPrompt(workflow, objectInfo);
  assert.deepEqual(prompt["20:2"].inputs, { text: "promoted", clip: ["1", 1] });
  assert.deepEqual(prompt["20:4"].inputs, { text: "neg override", clip: ["1", 1] });
});

test("an unlinked promoted input without a value keeps the inner widget", () => {
  const workflow = {
    nodes: [{ id: 20, type: "inner-def", inputs: [], outputs: [], widgets_values: [] }],
    links: [],
    definitions: [innerDefinition()],
  };
  assert.deepEqual(workflowToPrompt(workflow, objectInfo)["20:2"].inputs, { text: "inner placeholder" });
});

test("deeply nested subgraphs resolve without recursion", () => {
  const depth = 3000;
  const subgraphs = [];
  for (let level = 0; level < depth; level += 1) {
    const last = level === depth - 1;
    subgraphs.push({
      id: `d${level}`,
      inputs: io("clip"),
      outputs: io("cond"),
      nodes: [{ id: 1, type: last ? "CLIPTextEncode" : `d${level + 1}`, inputs: [{ name: "clip", type: "CLIP", link: 1 }], outputs: [], widgets_values: last ? ["deep"] : [] }],
      links: [link(1, -10, 0, 1, 0), link(2, 1, 0, -20, 0)],
    });
  }
  const workflow = {
    nodes: [
      { id: 1, type: "CheckpointLoaderSimple", widgets_values: ["m.safetensors"] },
      { id: 2, type: "d0", inputs: [{ name: "clip", type: "CLIP", link: 1 }], outputs: [] },
      { id: 3, type: "KSampler", inputs: [{ name: "positive", type: "CONDITIONING", link: 2 }], widgets_values: [1, "fixed", 20, 8, "euler", "normal", 1] },
    ],
    links: [link(1, 1, 1, 2, 0), link(2, 2, 0, 3, 0)],
    definitions: { subgraphs },
  };
  const innermost = ["2", ...Array(depth).fill("1")].join(":");
  const prompt = workflowToPrompt(workflow, objectInfo);
  assert.deepEqual(prompt[innermost].inputs, { text: "deep", clip: ["1", 1] });
  assert.deepEqual(prompt["3"].inputs.positive, [innermost, 0]);
});

test("a subgraph that contains itself is reported with the instance id", () => {
  const self = { id: "loop", name: "Loop", inputs: [], outputs: [], nodes: [{ id: 1, type: "loop" }], links: [] };
  const workflow = { nodes: [{ id: 5, type: "loop" }], links: [], definitions: { subgraphs: [self] } };
  assert.throws(() => workflowToPrompt(workflow, objectInfo), /node 5:1: subgraph 'Loop' \(loop\) contains an instance of itself/);
});

test("unknown types inside subgraphs are reported by their flattened id", () => {
  const inner = innerDefinition();
  inner.nodes[1].type = "Mystery";
  const workflow = { nodes: [{ id: 20, type: "inner-def", inputs: [], outputs: [] }], links: [], definitions: { subgraphs: [inner] } };
  assert.throws(() => workflowToPrompt(workflow, objectInfo), /'Mystery' \(node 20:4\)/);
});
