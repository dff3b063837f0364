// Shared test helpers: the object_info fixture and the default txt2img graph built through the model.
import { readFileSync } from "node:fs";
import { Graph } from "../../../web/graph/model.js";

export const objectInfo = JSON.parse(readFileSync(new URL("./object_info.fixture.json", import.meta.url), "utf8"));

/** The default txt2img graph, wired as ComfyUI's default workflow. */
export function txt2img() {
  const graph = new Graph();
  const ckpt = graph.createNode("CheckpointLoaderSimple", objectInfo).id;
  const pos = graph.createNode("CLIPTextEncode", objectInfo).id;
  const neg = graph.createNode("CLIPTextEncode", objectInfo).id;
  const latent = graph.createNode("EmptyLatentImage", objectInfo).id;
  const sampler = graph.createNode("KSampler", objectInfo).id;
  const decode = graph.createNode("VAEDecode", objectInfo).id;
  const save = graph.createNode("SaveImage", objectInfo).id;
  graph.connect(ckpt, 1, pos, 0);
  graph.connect(ckpt, 1, neg, 0);
  graph.connect(ckpt, 0, sampler, 0);
  graph.connect(pos, 0, sampler, 1);
  graph.connect(neg, 0, sampler, 2);
  graph.connect(latent, 0, sampler, 3);
  graph.connect(sampler, 0, decode, 0);
  graph.connect(ckpt, 2, decode, 1);
  graph.connect(decode, 0, save, 0);
  graph.setWidget(pos, "text", "a cat", objectInfo);
  graph.setWidget(neg, "text", "blurry", objectInfo);
  return { graph, ids: { ckpt, pos, neg, latent, sampler, decode, save } };
}
