import assert from "node:assert/strict";
import { test } from "node:test";
import { Graph, GraphError } from "../../../web/graph/model.js";
import { typesCompatible } from "../../../web/graph/types.js";
import { objectInfo, txt2img } from "./helpers.js";

test("createNode: sockets for links, widget defaults, seed control, outputs", () => {
  const graph = new Graph();
  const sampler = graph.createNode("KSampler", objectInfo);
  assert.equal(sampler.id, 1);
  assert.deepEqual(
    sampler.inputs.map((inp) => inp.name),
    ["model", "positive", "negative", "latent_image"],
  );
  // seed, control mode, steps, cfg, sampler_name, scheduler, denoise
  assert.equal(sampler.widgets_values.length, 7);
  assert.equal(sampler.widgets_values[1], "randomize");
  assert.equal(graph.getWidget(1, "steps", objectInfo), 20);
  assert.equal(graph.getWidget(1, "sampler_name", objectInfo), objectInfo.KSampler.input.required.sampler_name[0][0]);
  assert.deepEqual(sampler.outputs.map((out) => out.type), ["LATENT"]);
  const ckpt = graph.createNode("CheckpointLoaderSimple", objectInfo);
  assert.equal(ckpt.id, 2);
  assert.deepEqual(ckpt.widgets_values, ["sd15.safetensors"]);
  assert.deepEqual(ckpt.outputs.map((out) => out.name), ["MODEL", "CLIP", "VAE"]);
  assert.throws(() => graph.createNode("NoSuchNode", objectInfo), /NoSuchNode/);
});

test("ids follow last_node_id, never reuse a removed id", () => {
  const graph = new Graph();
  graph.createNode("VAEDecode", objectInfo);
  const second = graph.createNode("VAEDecode", objectInfo);
  graph.removeNode(second.id);
  assert.equal(graph.createNode("VAEDecode", objectInfo).id, 3);
});

test("connect refuses incompatible types and replaces an existing link", () => {
  const { graph, ids } = txt2img();
  assert.throws(() => graph.connect(ids.ckpt, 0, ids.decode, 1), (error) => {
    assert.ok(error instanceof GraphError);
    assert.match(error.message, /MODEL.*'vae' \(VAE\)/);
    return true;
  });
  const before = graph.node(ids.decode).inputs[0].link;
  const other = graph.createNode("KSampler", objectInfo).id;
  const link = graph.connect(other, 0, ids.decode, 0);
  assert.equal(graph.node(ids.decode).inputs[0].link, link.id);
  assert.equal(graph.links.has(before), false);
  assert.deepEqual(graph.node(ids.sampler).outputs[0].links, []);
});

test("disconnect and removeNode keep both ends consistent", () => {
  const { graph, ids } = txt2img();
  assert.equal(graph.disconnect(ids.save, 0), true);
  assert.equal(graph.disconnect(ids.save, 0), false);
  assert.deepEqual(graph.node(ids.decode).outputs[0].links, []);
  graph.removeNode(ids.ckpt);
  assert.equal(graph.node(ids.pos).inputs[0].link, null);
  for (const link of graph.links.values()) {
    assert.notEqual(link.origin_id, ids.ckpt);
  }
});

test("every change bumps the version and notifies listeners", () => {
  const graph = new Graph();
  const seen = [];
  graph.listeners.add((_, what) => seen.push(what));
  const node = graph.createNode("EmptyLatentImage", objectInfo);
  graph.setWidget(node.id, "width", 768, objectInfo);
  graph.setMode(node.id, 4);
  assert.deepEqual(seen, ["node-added", "widget-changed", "node-changed"]);
  assert.equal(graph.version, 3);
  assert.throws(() => graph.setMode(node.id, 7), /unknown mode 7/);
  assert.throws(() => graph.setWidget(node.id, "nope", 1, objectInfo), /no widget 'nope'/);
});

test("types: wildcard, comma unions, combo outputs", () => {
  assert.ok(typesCompatible("*", "IMAGE"));
  assert.ok(typesCompatible("IMAGE", "*"));
  assert.ok(typesCompatible("IMAGE,MASK", "MASK"));
  assert.ok(!typesCompatible("IMAGE,MASK", "LATENT"));
  assert.ok(typesCompatible(["a", "b"], "COMBO"));
  assert.ok(!typesCompatible(["a", "b"], "STRING"));
});

test("groups, titles and positions are plain data", () => {
  const graph = new Graph();
  const node = graph.createNode("VAEDecode", objectInfo);
  graph.setTitle(node.id, "Decode");
  graph.moveNode(node.id, [10, 20], [300, 50]);
  const group = graph.addGroup("Output", [0, 0, 400, 300]);
  assert.deepEqual([node.title, node.pos, node.size], ["Decode", [10, 20], [300, 50]]);
  assert.deepEqual(graph.groups, [{ id: 1, title: "Output", bounding: [0, 0, 400, 300] }]);
  graph.removeGroup(group.id);
  assert.deepEqual(graph.groups, []);
});
