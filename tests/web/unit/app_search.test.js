import assert from "node:assert/strict";
import { test } from "node:test";
import { acceptsFilter, fuzzyScore, searchNodes } from "../../../web/ui/search.js";
import { objectInfo } from "./helpers.js";

test("fuzzyScore orders exact > prefix > word start > substring > subsequence > none", () => {
  const exact = fuzzyScore("ksampler", "KSampler");
  const prefix = fuzzyScore("ksam", "KSampler");
  const word = fuzzyScore("sampler", "ksampler advanced_sampler");
  const inner = fuzzyScore("ampl", "KSampler");
  const subsequence = fuzzyScore("ksr", "KSampler");
  assert.ok(exact > prefix && prefix > word && word > inner && inner > subsequence && subsequence > 0, `${[exact, prefix, word, inner, subsequence]}`);
  assert.equal(fuzzyScore("xyz", "KSampler"), -1);
  assert.equal(fuzzyScore("", "anything"), 0);
});

test("search matches display name, class name, category and types", () => {
  assert.equal(searchNodes(objectInfo, "ksampler")[0].type, "KSampler");
  assert.equal(searchNodes(objectInfo, "Load Checkpoint")[0].type, "CheckpointLoaderSimple");
  assert.equal(searchNodes(objectInfo, "vaedec")[0].type, "VAEDecode");
  const loaders = searchNodes(objectInfo, "loaders").map((r) => r.type);
  assert.ok(loaders.includes("CheckpointLoaderSimple"));
  // By type: every result has a LATENT socket.
  const latent = searchNodes(objectInfo, "LATENT", { limit: 500 });
  assert.ok(latent.length > 2);
  assert.ok(latent.some((r) => r.type === "VAEDecode"));
  // Every word has to match.
  assert.deepEqual(searchNodes(objectInfo, "ksampler zzzzzz"), []);
});

test("a type filter keeps nodes with a compatible slot on the right side", () => {
  const fromOutput = searchNodes(objectInfo, "", { filter: { type: "VAE", direction: "input" }, limit: 500 });
  assert.ok(fromOutput.length > 0);
  for (const result of fromOutput) assert.ok(acceptsFilter(objectInfo[result.type], { type: "VAE", direction: "input" }));
  assert.ok(fromOutput.some((r) => r.type === "VAEDecode"));
  assert.ok(!fromOutput.some((r) => r.type === "KSampler"));
  const fromInput = searchNodes(objectInfo, "", { filter: { type: "MODEL", direction: "output" }, limit: 500 }).map((r) => r.type);
  assert.ok(fromInput.includes("CheckpointLoaderSimple"));
  assert.ok(!fromInput.includes("VAEDecode"));
});

test("an empty filtered search ranks nodes built around the type above testing-only ones", () => {
  const info = {
    ...objectInfo,
    AaTesting: { input: { required: { image: ["IMAGE"] } }, output: [], category: "_for_testing", display_name: "Aa testing" },
    AaSecond: { input: { required: { mask: ["MASK"], image: ["IMAGE"] } }, output: [], category: "image", display_name: "Aa second" },
  };
  const results = searchNodes(info, "", { filter: { type: "IMAGE", direction: "input" }, limit: 500 });
  const rank = (/** @type {string} */ type) => results.findIndex((r) => r.type === type);
  assert.ok(rank("SaveImage") >= 0);
  assert.ok(rank("SaveImage") < rank("AaSecond"), "the first input matching ranks higher");
  assert.ok(rank("AaSecond") < rank("AaTesting"), "testing-only categories rank last");
});
