import assert from "node:assert/strict";
import { test } from "node:test";
import { backoff, errorMessage, parseBinaryFrame } from "../../../web/api.js";

/** @param {number[]} words @param {Uint8Array} tail */
function frame(words, tail) {
  const bytes = new Uint8Array(words.length * 4 + tail.length);
  const view = new DataView(bytes.buffer);
  words.forEach((word, index) => view.setUint32(index * 4, word));
  bytes.set(tail, words.length * 4);
  return bytes.buffer;
}

test("preview frame type 1: format code then the image bytes", () => {
  const image = new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 1, 2]);
  const parsed = parseBinaryFrame(frame([1, 1], image));
  assert.equal(parsed.event, 1);
  assert.equal(parsed.mime, "image/jpeg");
  assert.deepEqual([...(parsed.bytes ?? [])], [...image]);
  assert.equal(parseBinaryFrame(frame([1, 2], image)).mime, "image/png");
});

test("preview frame type 4: metadata JSON names the node and the image type", () => {
  const meta = new TextEncoder().encode(JSON.stringify({ node_id: "3", display_node_id: "3", prompt_id: "p", image_type: "image/png" }));
  const image = new Uint8Array([137, 80, 78, 71]);
  const tail = new Uint8Array(meta.length + image.length);
  tail.set(meta);
  tail.set(image, meta.length);
  const parsed = parseBinaryFrame(frame([4, meta.length], tail));
  assert.equal(parsed.mime, "image/png");
  assert.equal(parsed.metadata?.display_node_id, "3");
  assert.deepEqual([...(parsed.bytes ?? [])], [...image]);
});

test("text frame type 3 and unknown events", () => {
  const id = new TextEncoder().encode("12");
  const text = new TextEncoder().encode("step 3");
  const tail = new Uint8Array([...id, ...text]);
  const parsed = parseBinaryFrame(frame([3, id.length], tail));
  assert.equal(parsed.nodeId, "12");
  assert.equal(parsed.text, "step 3");
  assert.deepEqual(parseBinaryFrame(frame([9], new Uint8Array())), { event: 9 });
  assert.throws(() => parseBinaryFrame(new ArrayBuffer(2)), /no event id/);
});

test("error messages carry the server's message and details", () => {
  const body = { error: { type: "invalid_prompt", message: "Cannot execute because node Foo does not exist.", details: "Node ID '#3'" } };
  assert.equal(
    errorMessage(body, 400, "POST /prompt"),
    "POST /prompt failed (400): Cannot execute because node Foo does not exist.: Node ID '#3'",
  );
  assert.equal(errorMessage({ error: "Job not found" }, 404, "GET /api/jobs/x"), "GET /api/jobs/x failed (404): Job not found");
  assert.equal(errorMessage("plain text", 500, "GET /x"), "GET /x failed (500): plain text");
  assert.equal(errorMessage(null, 502, "GET /x"), "GET /x failed (502)");
});

test("reconnect backoff doubles up to 10 s", () => {
  assert.deepEqual([0, 1, 2, 3, 4, 5, 9].map(backoff), [500, 1000, 2000, 4000, 8000, 10000, 10000]);
});
