import assert from "node:assert/strict";
import { test } from "node:test";
import { canLink, findDropTarget, hitTest, nodesInBox, nodesInGroup } from "../../../web/canvas/hit.js";
import { computeLayout } from "../../../web/canvas/layout.js";
import { TITLE_H } from "../../../web/canvas/theme.js";
import { objectInfo, txt2img } from "./helpers.js";

/** Lay the default graph out in a row and make a hit-test scene of it. */
function scene() {
  const { graph, ids } = txt2img();
  let x = 0;
  for (const node of graph.nodes.values()) {
    graph.moveNode(node.id, [x, 100]);
    x += 500;
  }
  const layouts = new Map();
  return {
    graph,
    ids,
    scene: {
      graph,
      layout: (node) => {
        if (!layouts.has(node.id)) layouts.set(node.id, computeLayout(node, objectInfo, graph));
        return layouts.get(node.id);
      },
      order: () => [...graph.nodes.values()],
      linkCenters: new Map(),
      scale: 1,
    },
  };
}

/** Graph position of a slot. */
function slotAt(s, id, direction, slot) {
  const node = s.graph.node(id);
  const place = s.scene.layout(node)[direction === "input" ? "inputs" : "outputs"][slot];
  return [node.pos[0] + place.x, node.pos[1] + place.y];
}

test("hits: title, collapse dot, slots, widgets, body, resize corner, nothing", () => {
  const s = scene();
  const sampler = s.graph.node(s.ids.sampler);
  const layout = s.scene.layout(sampler);
  const [x, y] = sampler.pos;
  assert.deepEqual(hitTest(s.scene, x + 100, y - TITLE_H / 2), { kind: "title", nodeId: sampler.id });
  assert.deepEqual(hitTest(s.scene, x + 12, y - TITLE_H / 2), { kind: "collapse", nodeId: sampler.id });
  const [ix, iy] = slotAt(s, sampler.id, "input", 2);
  assert.deepEqual(hitTest(s.scene, ix + 3, iy - 2), { kind: "slot", nodeId: sampler.id, direction: "input", slot: 2 });
  const [ox, oy] = slotAt(s, sampler.id, "output", 0);
  assert.deepEqual(hitTest(s.scene, ox + 4, oy + 3), { kind: "slot", nodeId: sampler.id, direction: "output", slot: 0 });
  const steps = layout.widgets.find((row) => row.name === "steps");
  const hit = hitTest(s.scene, x + 60, y + steps.y + 5);
  assert.equal(hit.kind, "widget");
  assert.equal(hit.row.name, "steps");
  assert.deepEqual(hit.local, [60, 5]);
  assert.deepEqual(hitTest(s.scene, x + layout.w - 4, y + layout.h - 4), { kind: "resize", nodeId: sampler.id });
  assert.deepEqual(hitTest(s.scene, x + layout.w / 2, y + layout.h - 1), { kind: "node", nodeId: sampler.id });
  assert.equal(hitTest(s.scene, x - 200, y + 500), null);
});

test("the topmost node wins where nodes overlap", () => {
  const s = scene();
  s.graph.moveNode(s.ids.decode, s.graph.node(s.ids.sampler).pos);
  const [x, y] = s.graph.node(s.ids.sampler).pos;
  // decode was added after the sampler, so it is drawn (and hit) on top.
  assert.equal(hitTest(s.scene, x + 50, y - 10).nodeId, s.ids.decode);
});

test("link centres and group titles are hit when no node is there", () => {
  const s = scene();
  s.scene.linkCenters.set(7, [-1000, -1000]);
  assert.deepEqual(hitTest(s.scene, -1004, -997), { kind: "link-center", linkId: 7 });
  const group = s.graph.addGroup("G", [-3000, -3000, 400, 300]);
  assert.deepEqual(hitTest(s.scene, -2900, -2990), { kind: "group-title", group });
  assert.deepEqual(hitTest(s.scene, -2605, -2705), { kind: "group-resize", group });
  assert.equal(hitTest(s.scene, -2900, -2800), null, "a group's body is empty canvas (pans)");
});

test("canLink: type-compatible, opposite direction, other node only", () => {
  const s = scene();
  const sampler = s.graph.node(s.ids.sampler);
  const fromLatent = { nodeId: s.ids.latent, slot: 0, direction: "output", type: "LATENT" };
  assert.ok(canLink(fromLatent, sampler, "input", 3));
  assert.ok(!canLink(fromLatent, sampler, "input", 0), "LATENT into MODEL");
  assert.ok(!canLink(fromLatent, sampler, "output", 0), "output to output");
  const fromSamplerInput = { nodeId: s.ids.sampler, slot: 0, direction: "input", type: "MODEL" };
  assert.ok(canLink(fromSamplerInput, s.graph.node(s.ids.ckpt), "output", 0));
  assert.ok(!canLink(fromSamplerInput, s.graph.node(s.ids.ckpt), "output", 1));
  assert.ok(!canLink(fromSamplerInput, sampler, "output", 0), "not to itself");
});

test("findDropTarget: exact slot, refused slot, node body, widget row", () => {
  const s = scene();
  const fromLatent = { nodeId: s.ids.latent, slot: 0, direction: "output", type: "LATENT" };
  const [ix, iy] = slotAt(s, s.ids.sampler, "input", 3);
  assert.deepEqual(findDropTarget(s.scene, fromLatent, ix, iy, objectInfo), { nodeId: s.ids.sampler, direction: "input", slot: 3 });
  const [mx, my] = slotAt(s, s.ids.sampler, "input", 0);
  assert.equal(findDropTarget(s.scene, fromLatent, mx, my, objectInfo), null, "an incompatible slot refuses");
  const decode = s.graph.node(s.ids.decode);
  assert.deepEqual(
    findDropTarget(s.scene, fromLatent, decode.pos[0] + 60, decode.pos[1] + 45, objectInfo),
    { nodeId: decode.id, direction: "input", slot: 0 },
    "dropped on the body: the first compatible input",
  );
  const save = s.graph.node(s.ids.save);
  assert.equal(findDropTarget(s.scene, fromLatent, save.pos[0] + 60, save.pos[1] + 45, objectInfo), null);
  // An INT output dropped on the seed widget converts it to an input.
  const fromInt = { nodeId: s.ids.latent, slot: 0, direction: "output", type: "INT" };
  const sampler = s.graph.node(s.ids.sampler);
  const seed = s.scene.layout(sampler).widgets.find((row) => row.name === "seed");
  assert.deepEqual(findDropTarget(s.scene, fromInt, sampler.pos[0] + 80, sampler.pos[1] + seed.y + 5, objectInfo), {
    nodeId: sampler.id,
    direction: "input",
    slot: -1,
    widget: "seed",
  });
  const cfg = s.scene.layout(sampler).widgets.find((row) => row.name === "cfg");
  assert.equal(findDropTarget(s.scene, fromInt, sampler.pos[0] + 80, sampler.pos[1] + cfg.y + 5, objectInfo), null, "INT is not FLOAT");
});

test("box selection in any drag direction; nodes inside a group", () => {
  const s = scene();
  const sampler = s.graph.node(s.ids.sampler);
  const decode = s.graph.node(s.ids.decode);
  const box = [decode.pos[0] + 10, decode.pos[1] + 10, sampler.pos[0] + 20 - (decode.pos[0] + 10), -20];
  assert.deepEqual(nodesInBox(s.scene, box).sort(), [s.ids.sampler, s.ids.decode].sort());
  const layout = s.scene.layout(decode);
  const group = s.graph.addGroup("G", [decode.pos[0] - 10, decode.pos[1] - TITLE_H - 50, layout.w + 20, layout.h + TITLE_H + 60]);
  assert.deepEqual(nodesInGroup(s.scene, group), [s.ids.decode]);
});
