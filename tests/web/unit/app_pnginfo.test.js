import assert from "node:assert/strict";
import { test } from "node:test";
import { deflateSync } from "node:zlib";
import { isPng, pngWorkflow, readPngText } from "../../../web/ui/pnginfo.js";

/** @param {string} type @param {Uint8Array} data */
function chunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  out.set(new TextEncoder().encode(type), 4);
  out.set(data, 8);
  view.setUint32(8 + data.length, 0); // CRC: not checked by the reader
  return out;
}

const enc = (/** @type {string} */ text) => new TextEncoder().encode(text);
const cat = (/** @type {Uint8Array[]} */ ...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
};
const SIG = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);
const IHDR = chunk("IHDR", new Uint8Array(13));
const IEND = chunk("IEND", new Uint8Array());

test("tEXt chunks: workflow and prompt JSON as SaveImage writes them", async () => {
  const workflow = { last_node_id: 1, nodes: [{ id: 1, type: "VAEDecode" }], links: [], version: 0.4 };
  const prompt = { 1: { class_type: "VAEDecode", inputs: {} } };
  const png = cat(SIG, IHDR, chunk("tEXt", enc(`prompt\0${JSON.stringify(prompt)}`)), chunk("tEXt", enc(`workflow\0${JSON.stringify(workflow)}`)), IEND);
  assert.ok(isPng(png));
  const found = await pngWorkflow(png);
  assert.deepEqual(found.workflow, workflow);
  assert.deepEqual(found.prompt, prompt);
});

test("iTXt (plain and compressed, UTF-8) and zTXt", async () => {
  const text = '{"title":"café ✓"}';
  const itxt = cat(enc("workflow\0"), new Uint8Array([0, 0]), enc("en\0"), enc("\0"), enc(text));
  const itxtZ = cat(enc("prompt\0"), new Uint8Array([1, 0]), enc("\0\0"), deflateSync(Buffer.from(text)));
  const ztxt = cat(enc("Comment\0"), new Uint8Array([0]), deflateSync(Buffer.from("hello")));
  const png = cat(SIG, IHDR, chunk("iTXt", itxt), chunk("iTXt", itxtZ), chunk("zTXt", ztxt), IEND);
  const chunks = await readPngText(png);
  assert.equal(chunks.workflow, text);
  assert.equal(chunks.prompt, text);
  assert.equal(chunks.Comment, "hello");
});

test("a PNG without metadata, a truncated PNG, a chunk that is not JSON, not a PNG", async () => {
  assert.deepEqual(await pngWorkflow(cat(SIG, IHDR, IEND)), {});
  const truncated = cat(SIG, IHDR, chunk("tEXt", enc("workflow\0{}")).subarray(0, 10));
  assert.deepEqual(await readPngText(truncated), {});
  const bad = cat(SIG, chunk("tEXt", enc("workflow\0{not json")), IEND);
  assert.deepEqual(await pngWorkflow(bad), {});
  await assert.rejects(readPngText(enc("GIF89a........")), /not a PNG/);
});
