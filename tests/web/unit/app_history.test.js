import assert from "node:assert/strict";
import { test } from "node:test";
import { History } from "../../../web/history.js";
import { fromWorkflow, toWorkflow } from "../../../web/graph/serialize.js";
import { objectInfo, txt2img } from "./helpers.js";

/** A History over a real graph, restored by rebuilding it from the snapshot, with a fake clock. */
function setup() {
  let { graph } = txt2img();
  let time = 0;
  const history = new History(
    () => JSON.stringify(toWorkflow(graph)),
    (state) => {
      graph = fromWorkflow(JSON.parse(state));
    },
    { now: () => time, limit: 5 },
  );
  return {
    history,
    get graph() {
      return graph;
    },
    tick(ms) {
      time += ms;
    },
  };
}

test("undo restores the state before a change, redo re-applies it", () => {
  const s = setup();
  const before = s.graph.nodes.size;
  s.history.checkpoint("add node");
  s.graph.createNode("VAEDecode", objectInfo);
  s.history.checkpoint("remove node");
  s.graph.removeNode(1);
  assert.equal(s.graph.nodes.size, before);
  assert.ok(s.history.undo());
  assert.ok(s.graph.nodes.has(1));
  assert.equal(s.graph.nodes.size, before + 1);
  assert.ok(s.history.undo());
  assert.equal(s.graph.nodes.size, before);
  assert.equal(s.history.canUndo, false);
  assert.equal(s.history.undo(), false);
  assert.ok(s.history.redo());
  assert.equal(s.graph.nodes.size, before + 1);
  assert.ok(s.history.redo());
  assert.equal(s.graph.nodes.has(1), false);
  assert.equal(s.history.canRedo, false);
});

test("a new change after undo drops the redo stack", () => {
  const s = setup();
  s.history.checkpoint("title");
  s.graph.setTitle(1, "first");
  s.history.undo();
  assert.equal(s.history.canRedo, true);
  s.history.checkpoint("title");
  s.graph.setTitle(1, "second");
  assert.equal(s.history.canRedo, false);
  s.history.undo();
  assert.equal(s.graph.node(1).title, undefined);
});

test("duplicate checkpoints and no-op actions leave no empty undo steps", () => {
  const s = setup();
  s.history.checkpoint("title");
  s.graph.setTitle(2, "A");
  s.history.checkpoint("select"); // nothing changes after this one
  s.history.checkpoint("select");
  assert.equal(s.history.undoStack.length, 2);
  assert.ok(s.history.undo()); // skips the no-op entry, undoes the title
  assert.equal(s.graph.node(2).title, undefined);
});

test("widget drags coalesce within the window, other labels never", () => {
  const s = setup();
  for (let step = 0; step < 10; step++) {
    s.history.checkpoint("widget steps");
    s.graph.setWidget(5, "steps", 20 + step, objectInfo);
    s.tick(50);
  }
  assert.equal(s.history.undoStack.length, 1);
  s.history.undo();
  assert.equal(s.graph.getWidget(5, "steps", objectInfo), 20);
  s.history.redo();
  assert.equal(s.graph.getWidget(5, "steps", objectInfo), 29);
  s.tick(5000);
  s.history.checkpoint("widget steps");
  s.graph.setWidget(5, "steps", 7, objectInfo);
  assert.equal(s.history.undoStack.length, 2);
  s.history.checkpoint("title");
  s.graph.setTitle(5, "x");
  s.history.checkpoint("title");
  s.graph.setTitle(5, "y");
  assert.equal(s.history.undoStack.length, 4);
});

test("the undo stack is bounded", () => {
  const s = setup();
  for (let step = 0; step < 8; step++) {
    s.history.checkpoint(`title ${step}`);
    s.graph.setTitle(1, `t${step}`);
  }
  assert.equal(s.history.undoStack.length, 5);
  while (s.history.undo());
  assert.equal(s.graph.node(1).title, "t2");
});
