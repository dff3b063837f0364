import assert from "node:assert/strict";
import { test } from "node:test";
import { computeLayout } from "../../../web/canvas/layout.js";
import { drawFrame } from "../../../web/canvas/render.js";
import { Viewport } from "../../../web/canvas/viewport.js";
import { Graph } from "../../../web/graph/model.js";
import { objectInfo } from "./helpers.js";

/** A 2D context that records what is drawn (node has no canvas). */
function recordingContext() {
  const calls = { fillText: [], stroke: 0, strokePath: 0, drawImage: 0 };
  const ctx = new Proxy(
    {},
    {
      get(target, name) {
        if (name in target) return target[name];
        if (name === "fillText") return (text) => calls.fillText.push(String(text));
        if (name === "measureText") return (text) => ({ width: String(text).length * 7 });
        if (name === "stroke") return (path) => (path ? (calls.strokePath += 1) : (calls.stroke += 1));
        if (name === "drawImage") return () => (calls.drawImage += 1);
        return () => {};
      },
      set(target, name, value) {
        target[name] = value;
        return true;
      },
    },
  );
  return { ctx, calls };
}

globalThis.Path2D ??= class {
  moveTo() {}
  bezierCurveTo() {}
};

/** 100 KSamplers in a 10x10 grid, 400 units apart, chained by their LATENT in/out. */
function grid() {
  const graph = new Graph();
  for (let index = 0; index < 100; index++) {
    graph.createNode("KSampler", objectInfo, { pos: [(index % 10) * 400, Math.floor(index / 10) * 400] });
    if (index) graph.connect(index, 0, index + 1, 3);
  }
  return graph;
}

function frame(graph, viewport, extra = {}) {
  const { ctx, calls } = recordingContext();
  const layouts = new Map();
  const f = {
    ctx,
    width: 800,
    height: 600,
    dpr: 1,
    viewport,
    graph,
    layout: (node) => {
      if (!layouts.has(node.id)) layouts.set(node.id, computeLayout(node, objectInfo, graph));
      return layouts.get(node.id);
    },
    order: () => [...graph.nodes.values()],
    selection: new Set(),
    states: new Map(),
    linkCenters: new Map(),
    image: () => null,
    uploadPreview: () => null,
    linkDrag: null,
    linkDragPos: null,
    dropTarget: null,
    hiddenLink: null,
    box: null,
    multiline: null,
    ...extra,
  };
  drawFrame(f);
  return { calls, f };
}

test("only nodes on screen are drawn (culling)", () => {
  const graph = grid();
  const viewport = new Viewport();
  viewport.set({ offset: [0, 50], scale: 1 }); // shows x 0..800, y -50..550: 2 columns x 2 rows
  const { calls, f } = frame(graph, viewport);
  const titles = calls.fillText.filter((text) => text === "KSampler");
  assert.equal(titles.length, 4);
  // Links are culled too: those touching the view (the row-to-row links cross it) are drawn,
  // the far ones are not.
  assert.ok(f.linkCenters.has(1), "node 1 -> 2 is on screen");
  assert.ok(!f.linkCenters.has(45), "node 45 -> 46 is far away");
  assert.ok(f.linkCenters.size < 15, `${f.linkCenters.size} of 99 links drawn`);
});

test("zoomed out: no widget text; far out: boxes only, no text at all", () => {
  const graph = grid();
  const viewport = new Viewport();
  viewport.set({ offset: [0, 50], scale: 0.4 });
  let { calls } = frame(graph, viewport);
  assert.ok(calls.fillText.some((text) => text === "KSampler"), "titles stay (bigger font)");
  assert.ok(!calls.fillText.some((text) => text === "steps" || text === "model"), "no slot or widget labels");
  viewport.set({ scale: 0.15 });
  ({ calls } = frame(graph, viewport));
  assert.deepEqual(calls.fillText, []);
});

test("at full zoom widgets show their values; a linked widget says so", () => {
  const graph = new Graph();
  const sampler = graph.createNode("KSampler", objectInfo, { pos: [10, 40] });
  graph.setWidget(sampler.id, "steps", 33, objectInfo);
  const viewport = new Viewport();
  let { calls } = frame(graph, viewport);
  assert.ok(calls.fillText.includes("33"));
  assert.ok(calls.fillText.includes("8.0"), "cfg with its step's precision");
  const primitive = graph.addNode({ type: "PrimitiveNode", pos: [600, 40], outputs: [{ name: "INT", type: "INT", links: [] }], widgets_values: [5, "fixed"] });
  const slot = graph.widgetToInput(sampler.id, "steps", objectInfo);
  graph.connect(primitive.id, 0, sampler.id, slot);
  ({ calls } = frame(graph, viewport));
  assert.ok(calls.fillText.includes("(linked)"));
  assert.ok(!calls.fillText.includes("33"));
});

test("run state: a preview image is drawn, an error adds its badge", () => {
  const graph = new Graph();
  const sampler = graph.createNode("KSampler", objectInfo, { pos: [10, 40] });
  const viewport = new Viewport();
  const states = new Map([[sampler.id, { running: true, preview: { width: 64, height: 64 }, error: { message: "x", inputs: ["steps"] } }]]);
  const layouts = new Map([[sampler.id, computeLayout(sampler, objectInfo, graph, true)]]);
  const { calls } = frame(graph, viewport, { states, layout: (node) => layouts.get(node.id) });
  assert.equal(calls.drawImage, 1);
  assert.ok(calls.fillText.includes("!"));
});
