import assert from "node:assert/strict";
import { test } from "node:test";
import { formatLine, validationLines } from "../../../web/ui/errors.js";
import { itemLabel } from "../../../web/ui/queue_panel.js";
import { historyImages } from "../../../web/ui/gallery.js";
import { categoryTree } from "../../../web/ui/library.js";
import { actionFor } from "../../../web/ui/shortcuts.js";
import { workflowFileName, graphFromJson } from "../../../web/ui/files.js";
import { objectInfo, txt2img } from "./helpers.js";

test("validation lines name the node, its title, the input and the message", () => {
  const body = {
    error: { type: "prompt_outputs_failed_validation", message: "Prompt outputs failed validation" },
    node_errors: {
      5: { class_type: "KSampler", errors: [
        { type: "value_smaller_than_min", message: "Value 0 smaller than min of 1", details: "steps", extra_info: { input_name: "steps" } },
        { type: "required_input_missing", message: "Required input is missing", details: "model", extra_info: { input_name: "model" } },
      ] },
      "12:3": { class_type: "VAEDecode", errors: [{ type: "x", message: "Bad", details: "more", extra_info: {} }] },
    },
  };
  const lines = validationLines(body, (id) => (id === 5 ? "My sampler" : null));
  assert.deepEqual(lines.map(formatLine), [
    "node #5 My sampler: steps: Value 0 smaller than min of 1",
    "node #5 My sampler: model: Required input is missing",
    "node #12:3 VAEDecode: Bad: more",
  ]);
  assert.equal(lines[2].nodeId, 12);
  assert.deepEqual(validationLines({ error: { message: "x" } }, () => null), []);
});

test("queue item labels come from the output nodes' titles", () => {
  const prompt = { 9: { class_type: "SaveImage", inputs: {}, _meta: { title: "Save Image" } }, 3: { class_type: "KSampler", inputs: {} } };
  assert.equal(itemLabel([1, "p", prompt, {}, ["9"]]), "Save Image (2 nodes)");
  assert.equal(itemLabel([1, "p", prompt, {}, []]), "2 nodes");
});

test("gallery images are newest first", () => {
  const history = {
    old: { outputs: { 9: { images: [{ filename: "a.png", subfolder: "", type: "output" }] } } },
    new: { outputs: { 9: { images: [{ filename: "b.png", subfolder: "x", type: "output" }, { filename: "c.png" }] }, 3: { text: ["hi"] } } },
  };
  assert.deepEqual(historyImages(history).map((i) => i.filename), ["b.png", "c.png", "a.png"]);
  assert.equal(historyImages(history)[1].type, "output");
});

test("library tree nests categories and filters", () => {
  const tree = categoryTree(objectInfo);
  const sampling = tree.children.get("sampling");
  assert.ok(sampling?.items.some((item) => item.type === "KSampler"));
  const filtered = categoryTree(objectInfo, "vaedecode");
  const all = [];
  const stack = [filtered];
  while (stack.length) {
    const node = /** @type {any} */ (stack.pop());
    all.push(...node.items.map((/** @type {any} */ i) => i.type));
    stack.push(...node.children.values());
  }
  assert.ok(all.includes("VAEDecode"));
  assert.ok(!all.includes("KSampler"));
});

test("shortcuts map keys to actions; Ctrl+Shift+Z is redo, Ctrl+Shift+V keeps links", () => {
  const key = (k, mods = {}) => actionFor({ key: k, ctrlKey: false, metaKey: false, shiftKey: false, altKey: false, ...mods });
  assert.equal(key("Enter", { ctrlKey: true }), "queue");
  assert.equal(key("z", { ctrlKey: true }), "undo");
  assert.equal(key("Z", { ctrlKey: true, shiftKey: true }), "redo");
  assert.equal(key("y", { metaKey: true }), "redo");
  assert.equal(key("V", { ctrlKey: true, shiftKey: true }), "paste-with-links");
  assert.equal(key("v", { ctrlKey: true }), "paste");
  assert.equal(key("Delete"), "delete");
  assert.equal(key("."), "fit");
  assert.equal(key("s", { ctrlKey: true, altKey: true }), null);
  assert.equal(key("s"), null);
  assert.equal(key("b", { ctrlKey: true, shiftKey: true }), null);
});

test("workflow file names and JSON detection", () => {
  assert.equal(workflowFileName("My flow"), "My flow.json");
  assert.equal(workflowFileName("../../etc/passwd"), "etc/passwd.json");
  assert.equal(workflowFileName("sub/x.JSON"), "sub/x.JSON");
  assert.equal(workflowFileName("  "), "");
  const { graph } = txt2img();
  const workflow = JSON.parse(JSON.stringify({ nodes: [...graph.nodes.values()], links: [], version: 0.4 }));
  assert.equal(graphFromJson(workflow, objectInfo).nodes.size, graph.nodes.size);
  assert.equal(graphFromJson({ 1: { class_type: "VAEDecode", inputs: {} } }, objectInfo).nodes.size, 1);
  assert.throws(() => graphFromJson({ foo: 1 }, objectInfo), /neither a workflow/);
});
