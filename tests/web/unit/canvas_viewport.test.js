import assert from "node:assert/strict";
import { test } from "node:test";
import { MAX_SCALE, MIN_SCALE, Viewport, contains, overlaps } from "../../../web/canvas/viewport.js";

const close = (a, b) => assert.ok(Math.abs(a - b) < 1e-9, `${a} != ${b}`);

test("toScreen and toGraph are inverse: screen = (graph + offset) * scale", () => {
  const view = new Viewport();
  view.set({ offset: [30, -20], scale: 2 });
  assert.deepEqual(view.toScreen([10, 10]), [80, -20]);
  const back = view.toGraph(view.toScreen([123.5, -77]));
  close(back[0], 123.5);
  close(back[1], -77);
});

test("zooming keeps the graph point under the cursor fixed and clamps the scale", () => {
  const view = new Viewport();
  view.set({ offset: [-100, 50], scale: 0.8 });
  const cursor = [400, 300];
  const before = view.toGraph(cursor);
  view.zoomBy(1.7, cursor);
  const after = view.toGraph(cursor);
  close(before[0], after[0]);
  close(before[1], after[1]);
  close(view.scale, 1.36);
  view.zoomBy(1000, cursor);
  assert.equal(view.scale, MAX_SCALE);
  view.zoomBy(1e-6, cursor);
  assert.equal(view.scale, MIN_SCALE);
});

test("panning moves by screen pixels whatever the zoom", () => {
  const view = new Viewport();
  view.set({ offset: [0, 0], scale: 0.5 });
  const before = view.toScreen([10, 20]);
  view.panBy(30, -40);
  const after = view.toScreen([10, 20]);
  close(after[0] - before[0], 30);
  close(after[1] - before[1], -40);
});

test("fit centres the bounds and leaves the margin free", () => {
  const view = new Viewport();
  view.fit([100, 200, 1000, 500], 800, 600, 40);
  close(view.scale, 0.72); // (800 - 80) / 1000 is the tighter constraint
  const topLeft = view.toScreen([100, 200]);
  const bottomRight = view.toScreen([1100, 700]);
  close(topLeft[0], 40);
  close(bottomRight[0], 760);
  close((topLeft[1] + bottomRight[1]) / 2, 300);
  // A tiny graph is not blown up beyond 1.5x.
  view.fit([0, 0, 10, 10], 800, 600);
  close(view.scale, 1.5);
});

test("visibleRect is the graph area on screen; overlaps/contains", () => {
  const view = new Viewport();
  view.set({ offset: [-50, -60], scale: 2 });
  assert.deepEqual(view.visibleRect(800, 600), [50, 60, 400, 300]);
  assert.ok(overlaps([0, 0, 10, 10], [9, 9, 5, 5]));
  assert.ok(!overlaps([0, 0, 10, 10], [10, 0, 5, 5]));
  assert.ok(contains([0, 0, 10, 10], 0, 9.9));
  assert.ok(!contains([0, 0, 10, 10], 10, 5));
});

test("set ignores malformed state (from a hand-edited workflow's extra.ds)", () => {
  const view = new Viewport();
  view.set({ offset: [5, 6], scale: 1.25 });
  view.set({ offset: /** @type {any} */ (["x", 1]), scale: -3 });
  assert.deepEqual(view.get(), { offset: [5, 6], scale: 1.25 });
  const copy = view.get();
  copy.offset[0] = 99;
  assert.equal(view.offset[0], 5, "get() returns a copy");
});
