import assert from "node:assert/strict";
import { test } from "node:test";
import { RunState, topLevelId } from "../../../web/ui/run_state.js";

/** A canvas stand-in recording the states it is given. */
function fakeCanvas(ids) {
  const states = new Map();
  return {
    graph: { nodes: new Map(ids.map((id) => [id, {}])) },
    states,
    cleared: 0,
    setNodeState(id, state) {
      const merged = { ...(states.get(id) || {}), ...state };
      for (const [key, value] of Object.entries(state)) if (value === null) delete merged[key];
      states.set(id, merged);
    },
    clearNodeStates() {
      this.cleared += 1;
      states.clear();
    },
  };
}

const view = (name, type = "output", sub = "") => `/view?filename=${name}&type=${type}&subfolder=${sub}`;

test("topLevelId: strings to graph ids, subgraph inner ids to their instance", () => {
  assert.equal(topLevelId("12"), 12);
  assert.equal(topLevelId(7), 7);
  assert.equal(topLevelId("5:2"), 5);
  assert.equal(topLevelId("5:2:9"), 5);
  assert.equal(topLevelId(null), null);
  assert.equal(topLevelId("abc"), null);
});

test("a run: start clears, executing moves the outline, progress, images, done", () => {
  const canvas = fakeCanvas([3, 8, 9]);
  const run = new RunState({ target: () => canvas, viewUrl: view });
  run.handle("execution_start", { prompt_id: "p" });
  assert.equal(canvas.cleared, 1);
  run.handle("executing", { node: "3", display_node: "3", prompt_id: "p" });
  assert.equal(canvas.states.get(3).running, true);
  run.handle("progress", { value: 2, max: 4, node: "3", prompt_id: "p" });
  assert.deepEqual(canvas.states.get(3).progress, { value: 2, max: 4 });
  run.preview(/** @type {any} */ ("bitmap"), null);
  assert.equal(canvas.states.get(3).preview, "bitmap");
  run.handle("executing", { node: "9", prompt_id: "p" });
  assert.equal(canvas.states.get(3).running, false);
  assert.equal(canvas.states.get(3).progress, undefined);
  assert.equal(canvas.states.get(9).running, true);
  run.handle("executed", { node: "9", output: { images: [{ filename: "a.png", subfolder: "s", type: "output" }] }, prompt_id: "p" });
  assert.deepEqual(canvas.states.get(9).images, [{ url: "/view?filename=a.png&type=output&subfolder=s" }]);
  run.handle("executing", { node: null, prompt_id: "p" });
  assert.equal(canvas.states.get(9).running, false);
  assert.equal(run.running, null);
});

test("previews with metadata go to the named node; subgraph nodes light their instance", () => {
  const canvas = fakeCanvas([5, 6]);
  const run = new RunState({ target: () => canvas, viewUrl: view });
  run.handle("executing", { node: "5:2", display_node: "5:2" });
  assert.equal(canvas.states.get(5).running, true);
  run.preview(/** @type {any} */ ("img"), { node_id: "6", display_node_id: "6", prompt_id: "p" });
  assert.equal(canvas.states.get(6).preview, "img");
  assert.equal(run.stats.previews, 1);
});

test("errors mark the node; soft ExecutionBlocked does not; unknown nodes are ignored", () => {
  const canvas = fakeCanvas([4]);
  const run = new RunState({ target: () => canvas, viewUrl: view });
  run.handle("executing", { node: "4" });
  run.handle("execution_error", { exception_type: "ExecutionBlocked", node_id: "4", exception_message: "blocked" });
  assert.equal(canvas.states.get(4).error, undefined);
  run.handle("execution_error", { node_id: "4", node_type: "KSampler", exception_message: "boom", traceback: [] });
  assert.deepEqual(canvas.states.get(4).error, { message: "boom" });
  assert.equal(canvas.states.get(4).running, false);
  run.handle("executing", { node: "77" });
  assert.equal(canvas.states.has(77), false);
});

test("events of prompts queued from another tab are not shown", () => {
  const canvas = fakeCanvas([1]);
  const run = new RunState({ target: () => canvas, viewUrl: view, accept: (id) => id === "mine" });
  run.handle("execution_start", { prompt_id: "other" });
  run.handle("executing", { node: "1", prompt_id: "other" });
  assert.equal(canvas.cleared, 0);
  assert.equal(canvas.states.size, 0);
  run.handle("executing", { node: "1", prompt_id: "mine" });
  assert.equal(canvas.states.get(1).running, true);
});
