// Reroute types, PrimitiveNode typing, group titles, frontend-only nodes, dropped pictures.
import assert from "node:assert/strict";
import { test } from "node:test";
import { canLink } from "../../../web/canvas/hit.js";
import { computeLayout } from "../../../web/canvas/layout.js";
import { linkType, rerouteType, seedPrimitive, slotType } from "../../../web/graph/effective_types.js";
import { Graph, GraphError } from "../../../web/graph/model.js";
import { fromWorkflow, toApiPrompt, toWorkflow } from "../../../web/graph/serialize.js";
import { VIRTUAL_INFO, virtualNodeData } from "../../../web/graph/virtual.js";
import { applyControlAfterGenerate } from "../../../web/ui/controls.js";
import { imageInput, isImageFile } from "../../../web/ui/image_drop.js";
import { searchNodes } from "../../../web/ui/search.js";
import { objectInfo, txt2img } from "./helpers.js";

/** @param {Graph} graph */
function reroute(graph) {
  return graph.addNode(virtualNodeData("Reroute", [0, 0])).id;
}

test("a reroute chain carries the type of what feeds it, to links and slots", () => {
  const { graph, ids } = txt2img();
  const first = reroute(graph);
  const second = reroute(graph);
  assert.equal(rerouteType(graph, first), "*", "nothing on either side");
  graph.connect(ids.ckpt, 2, first, 0);
  const hop = graph.connect(first, 0, second, 0);
  const out = graph.connect(second, 0, ids.decode, 1);
  assert.equal(rerouteType(graph, first), "VAE");
  assert.equal(rerouteType(graph, second), "VAE", "followed through two reroutes");
  assert.equal(linkType(graph, hop), "VAE");
  assert.equal(linkType(graph, out), "VAE");
  assert.equal(out.type, "VAE", "the link records the type it carries");
  // While the chain feeds a VAE input, only a VAE may feed the chain.
  graph.disconnect(first, 0);
  assert.equal(rerouteType(graph, first), "VAE", "from downstream now");
  assert.throws(() => graph.connect(ids.ckpt, 0, first, 0), /\(MODEL\).*\(VAE\)/);
  // Fed by something else, every link down the chain changes colour.
  graph.disconnect(ids.decode, 1);
  graph.connect(ids.ckpt, 0, first, 0);
  assert.equal(linkType(graph, /** @type {any} */ (graph.links.get(hop.id))), "MODEL");
  assert.equal(rerouteType(graph, second), "MODEL");
});

test("a reroute fed by nothing takes the type of what it feeds; loops end", () => {
  const { graph, ids } = txt2img();
  const lone = reroute(graph);
  graph.connect(lone, 0, ids.sampler, 0);
  assert.equal(rerouteType(graph, lone), "MODEL");
  assert.equal(slotType(graph, graph.node(lone), "input", 0), "MODEL");
  assert.throws(() => graph.connect(ids.ckpt, 1, lone, 0), GraphError, "CLIP into a reroute feeding MODEL");
  graph.connect(ids.ckpt, 0, lone, 0);
  const a = reroute(graph);
  const b = reroute(graph);
  graph.connect(a, 0, b, 0);
  graph.connect(b, 0, a, 0);
  assert.equal(rerouteType(graph, a), "*");
});

test("a link dragged from a reroute output is checked against the type flowing through", () => {
  const { graph, ids } = txt2img();
  const node = reroute(graph);
  graph.connect(ids.ckpt, 2, node, 0);
  const from = { nodeId: node, slot: 0, direction: /** @type {const} */ ("output"), type: slotType(graph, graph.node(node), "output", 0) };
  assert.equal(from.type, "VAE");
  const decode = graph.node(ids.decode);
  assert.equal(canLink(from, decode, "input", 1, graph), true, "VAE input");
  assert.equal(canLink(from, decode, "input", 0, graph), false, "LATENT input");
  assert.throws(() => graph.connect(node, 0, ids.sampler, 0), GraphError);
  // Dragged from an input onto the reroute's output: the same rule the other way.
  const toModel = { nodeId: ids.sampler, slot: 0, direction: /** @type {const} */ ("input"), type: "MODEL" };
  assert.equal(canLink(toModel, graph.node(node), "output", 0, graph), false);
});

test("a PrimitiveNode takes the type and widget of its first target, and mirrors it", () => {
  const { graph, ids } = txt2img();
  graph.setWidget(ids.sampler, "steps", 31, objectInfo);
  const prim = graph.addNode(virtualNodeData("PrimitiveNode", [0, 0])).id;
  assert.equal(graph.node(prim).outputs[0].type, "*");
  assert.throws(() => graph.connect(prim, 0, ids.sampler, 0), /only feed widget inputs/);
  const steps = graph.widgetToInput(ids.sampler, "steps", objectInfo);
  graph.connect(prim, 0, ids.sampler, steps);
  seedPrimitive(graph, prim, objectInfo);
  const out = graph.node(prim).outputs[0];
  assert.deepEqual([out.type, out.name, out.widget], ["INT", "INT", { name: "steps" }]);
  // ComfyUI gives every number primitive a control_after_generate, "fixed" unless seeded.
  assert.deepEqual(graph.node(prim).widgets_values, [31, "fixed"]);
  const layout = computeLayout(graph.node(prim), objectInfo, graph);
  assert.deepEqual(layout.widgets.map((row) => [row.name, row.kind]), [["steps", "number"], ["control_after_generate", "seed_control"]]);
  assert.equal(layout.widgets[0].decl?.options.max, 10000, "the target's options");
  assert.equal(layout.outputs[0].type, "INT");
  // Now INT only: a FLOAT widget is refused, another INT widget accepted.
  const cfg = graph.widgetToInput(ids.sampler, "cfg", objectInfo);
  assert.throws(() => graph.connect(prim, 0, ids.sampler, cfg), GraphError);
  const width = graph.widgetToInput(ids.latent, "width", objectInfo);
  graph.connect(prim, 0, ids.latent, width);
  graph.setWidgetValue(prim, 0, 12);
  const prompt = toApiPrompt(graph, objectInfo);
  assert.equal(prompt[String(ids.sampler)].inputs.steps, 12);
  assert.equal(prompt[String(ids.latent)].inputs.width, 12);
  // Saved and loaded back it is the same node, and converts the same.
  const again = fromWorkflow(JSON.parse(JSON.stringify(toWorkflow(graph))));
  assert.deepEqual(again.node(prim).outputs[0].widget, { name: "steps" });
  assert.deepEqual(toApiPrompt(again, objectInfo), prompt);
  // The last link gone, it is untyped again (ComfyUI drops its widget).
  graph.disconnect(ids.sampler, steps);
  assert.equal(graph.node(prim).outputs[0].type, "INT", "one link left");
  graph.disconnect(ids.latent, width);
  assert.deepEqual([graph.node(prim).outputs[0].type, graph.node(prim).widgets_values], ["*", []]);
  assert.equal(graph.node(prim).outputs[0].widget, undefined);
});

test("a combo primitive keeps [value, control, filter] as ComfyUI saves it", () => {
  const { graph, ids } = txt2img();
  const prim = graph.addNode(virtualNodeData("PrimitiveNode", [0, 0])).id;
  const slot = graph.widgetToInput(ids.sampler, "scheduler", objectInfo);
  graph.connect(prim, 0, ids.sampler, slot);
  seedPrimitive(graph, prim, objectInfo);
  assert.deepEqual(graph.node(prim).widgets_values, [objectInfo.KSampler.input.required.scheduler[0][0], "fixed", ""]);
  assert.equal(graph.node(prim).outputs[0].type, "COMBO");
  const seed = graph.addNode(virtualNodeData("PrimitiveNode", [0, 0])).id;
  graph.setWidget(ids.sampler, "seed", "increment", objectInfo, "control");
  graph.connect(seed, 0, ids.sampler, graph.widgetToInput(ids.sampler, "seed", objectInfo));
  seedPrimitive(graph, seed, objectInfo);
  assert.equal(graph.node(seed).widgets_values[1], "increment", "a seed's own control mode is kept");
});

test("group titles change through the model (undo sees a change)", () => {
  const graph = new Graph();
  const group = graph.addGroup("Group", [0, 0, 200, 100]);
  const version = graph.version;
  graph.setGroupTitle(group.id, "Sampling");
  assert.equal(graph.groups[0].title, "Sampling");
  assert.ok(graph.version > version);
  assert.throws(() => graph.setGroupTitle(99, "x"), /group 99/);
});

test("the search offers frontend-only nodes, but not for a dragged link", () => {
  const info = { ...VIRTUAL_INFO, ...objectInfo };
  assert.equal(searchNodes(info, "primitive")[0].type, "PrimitiveNode");
  assert.equal(searchNodes(info, "reroute")[0].type, "Reroute");
  const filtered = searchNodes(info, "", { filter: { type: "MODEL", direction: "input" } }).map((r) => r.type);
  assert.ok(filtered.includes("KSampler") && !filtered.includes("Reroute") && !filtered.includes("PrimitiveNode"));
  for (const type of Object.keys(VIRTUAL_INFO)) {
    const graph = new Graph();
    const node = graph.addNode(virtualNodeData(type, [10.4, 20.6]));
    assert.deepEqual(node.pos, [10, 21]);
    assert.ok(computeLayout(node, objectInfo, graph).known, type);
  }
});

test("dropped files: which are pictures, which input takes them", () => {
  assert.ok(isImageFile({ type: "image/png", name: "a.png" }));
  assert.ok(isImageFile({ type: "image/webp", name: "x" }));
  assert.ok(isImageFile({ type: "", name: "photo.JPG" }));
  assert.ok(!isImageFile({ type: "application/json", name: "flow.json" }));
  assert.ok(!isImageFile({ type: "image/svg+xml", name: "a.svg" }));
  assert.equal(imageInput(objectInfo.LoadImage)?.name, "image");
  assert.equal(imageInput(objectInfo.KSampler), null);
  assert.equal(imageInput(undefined), null);
});

test("after a queue, a primitive moves on like the widget it feeds", () => {
  const { graph, ids } = txt2img();
  const combo = graph.addNode(virtualNodeData("PrimitiveNode", [0, 0])).id;
  graph.connect(combo, 0, ids.sampler, graph.widgetToInput(ids.sampler, "scheduler", objectInfo));
  seedPrimitive(graph, combo, objectInfo);
  graph.setWidgetValue(combo, 1, "increment");
  const float = graph.addNode(virtualNodeData("PrimitiveNode", [0, 0])).id;
  graph.connect(float, 0, ids.sampler, graph.widgetToInput(ids.sampler, "cfg", objectInfo));
  seedPrimitive(graph, float, objectInfo);
  graph.setWidgetValue(float, 1, "decrement");
  const changed = applyControlAfterGenerate(graph, objectInfo);
  assert.ok(changed.includes(combo) && changed.includes(float));
  assert.equal(graph.node(combo).widgets_values[0], objectInfo.KSampler.input.required.scheduler[0][1]);
  assert.ok(Math.abs(graph.node(float).widgets_values[0] - 7.9) < 1e-9, String(graph.node(float).widgets_values[0]));
  assert.equal(toApiPrompt(graph, objectInfo)[String(ids.sampler)].inputs.scheduler, objectInfo.KSampler.input.required.scheduler[0][1]);
});
