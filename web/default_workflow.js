// @ts-check
/**
 * The txt2img graph shown on first start (the layout of ComfyUI's default workflow), built
 * through the model so widget values follow object_info. The first checkpoint the server lists
 * is chosen; node types the server lacks are skipped rather than failing the page.
 */

import { Graph } from "./graph/model.js";

/**
 * @param {Record<string, any>} objectInfo
 * @param {string[]} [checkpoints] the server's /models/checkpoints list
 * @returns {Graph}
 */
export function defaultGraph(objectInfo, checkpoints = []) {
  const graph = new Graph();
  /** @type {Record<string, number>} */
  const ids = {};
  /** @param {string} key @param {string} type @param {number[]} pos @param {number[]} size @param {string} [title] */
  const add = (key, type, pos, size, title) => {
    if (!objectInfo[type]) return;
    ids[key] = graph.createNode(type, objectInfo, title ? { pos, size, title } : { pos, size }).id;
  };
  add("ckpt", "CheckpointLoaderSimple", [26, 474], [315, 98]);
  add("pos", "CLIPTextEncode", [415, 186], [422, 164], "Positive prompt");
  add("neg", "CLIPTextEncode", [415, 420], [422, 164], "Negative prompt");
  add("latent", "EmptyLatentImage", [473, 660], [315, 106]);
  add("sampler", "KSampler", [863, 186], [315, 262]);
  add("decode", "VAEDecode", [1209, 188], [210, 46]);
  add("save", "SaveImage", [1451, 189], [210, 270]);
  /** @type {[string, number, string, number][]} */
  const wires = [
    ["ckpt", 0, "sampler", 0],
    ["pos", 0, "sampler", 1],
    ["neg", 0, "sampler", 2],
    ["latent", 0, "sampler", 3],
    ["ckpt", 1, "pos", 0],
    ["ckpt", 1, "neg", 0],
    ["sampler", 0, "decode", 0],
    ["ckpt", 2, "decode", 1],
    ["decode", 0, "save", 0],
  ];
  for (const [from, fromSlot, to, toSlot] of wires) {
    if (ids[from] !== undefined && ids[to] !== undefined) graph.connect(ids[from], fromSlot, ids[to], toSlot);
  }
  const set = (/** @type {string} */ key, /** @type {string} */ name, /** @type {any} */ value) => {
    if (ids[key] !== undefined) graph.setWidget(ids[key], name, value, objectInfo);
  };
  set("pos", "text", "beautiful scenery nature glass bottle landscape, purple galaxy bottle");
  set("neg", "text", "text, watermark");
  if (checkpoints.length) set("ckpt", "ckpt_name", checkpoints[0]);
  if (ids.sampler !== undefined) set("sampler", "seed", Math.floor(Math.random() * 2 ** 32));
  graph.version = 0;
  return graph;
}
