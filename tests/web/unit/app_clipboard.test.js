import assert from "node:assert/strict";
import { test } from "node:test";
import { copyNodes, pasteNodes } from "../../../web/clipboard.js";
import { objectInfo, txt2img } from "./helpers.js";

test("copy + paste without outside links: fresh ids, internal links kept, offset at the mouse", () => {
  const { graph, ids } = txt2img();
  graph.moveNode(ids.sampler, [100, 50]);
  graph.moveNode(ids.decode, [400, 80]);
  const clip = copyNodes(graph, [ids.sampler, ids.decode]);
  assert.ok(clip);
  const linksBefore = graph.links.size;
  const pasted = pasteNodes(graph, JSON.parse(JSON.stringify(clip)), [1000, 1000]);
  assert.equal(pasted.length, 2);
  assert.ok(pasted.every((id) => id > ids.save));
  const [sampler, decode] = pasted.map((id) => graph.node(id));
  assert.equal(sampler.type, "KSampler");
  assert.deepEqual(sampler.pos, [1000, 1000]);
  assert.deepEqual(decode.pos, [1300, 1030]);
  // Only the sampler -> decode link comes along; the checkpoint and prompts were not copied.
  assert.equal(graph.links.size, linksBefore + 1);
  const link = graph.links.get(/** @type {number} */ (decode.inputs[0].link));
  assert.equal(link?.origin_id, sampler.id);
  assert.ok(sampler.inputs.every((inp) => inp.link === null));
  assert.equal(decode.inputs[1].link, null);
  assert.equal(graph.getWidget(sampler.id, "steps", objectInfo), graph.getWidget(ids.sampler, "steps", objectInfo));
  // The originals are untouched.
  assert.equal(graph.node(ids.decode).inputs[0].link !== null, true);
});

test("paste keeping outside links (Ctrl+Shift+V) reconnects to the nodes that were not copied", () => {
  const { graph, ids } = txt2img();
  const clip = /** @type {any} */ (copyNodes(graph, [ids.sampler]));
  const [copy] = pasteNodes(graph, clip, [0, 0], { keepExternal: true });
  const node = graph.node(copy);
  const origins = node.inputs.map((inp) => graph.links.get(/** @type {number} */ (inp.link))?.origin_id);
  assert.deepEqual(origins, [ids.ckpt, ids.pos, ids.neg, ids.latent]);
  // The original sampler keeps its own inputs; outputs of the outside nodes now fan out.
  assert.equal(graph.node(ids.ckpt).outputs[0].links.length, 2);
});

test("outside links to nodes deleted since the copy are dropped", () => {
  const { graph, ids } = txt2img();
  const clip = /** @type {any} */ (copyNodes(graph, [ids.decode]));
  graph.removeNode(ids.sampler);
  const [copy] = pasteNodes(graph, clip, [0, 0], { keepExternal: true });
  const node = graph.node(copy);
  assert.equal(node.inputs[0].link, null);
  assert.equal(graph.links.get(/** @type {number} */ (node.inputs[1].link))?.origin_id, ids.ckpt);
});

test("copy of nothing is null", () => {
  const { graph } = txt2img();
  assert.equal(copyNodes(graph, []), null);
  assert.equal(copyNodes(graph, [999]), null);
});
