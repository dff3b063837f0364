"""A 500-node graph: it renders, and the frame time of a scripted pan (~60 requestAnimationFrame
frames) is measured and printed. No timing assertion: headless software rendering on a shared CI
machine says little about a person's GPU; the figure is for reading (and kept as an artifact)."""

from __future__ import annotations

import json

import pytest

from tests.browser.loom_editor import Editor

pytestmark = pytest.mark.browser

NODES = 500
FRAMES = 60

# 100 chains of 5 nodes (checkpoint -> 2 encoders -> sampler <- latent), laid out on a grid.
BUILD = """async (count) => {
  const { Graph } = await import("/graph/model.js");
  const { toWorkflow } = await import("/graph/serialize.js");
  const info = window.loom.app.objectInfo;
  const graph = new Graph();
  const types = ["CheckpointLoaderSimple", "CLIPTextEncode", "CLIPTextEncode", "EmptyLatentImage", "KSampler"];
  for (let i = 0; i < count; i++) {
    const col = i % 25, row = Math.floor(i / 25);
    graph.createNode(types[i % 5], info, {pos: [col * 460, row * 330], size: [400, 260]});
  }
  for (let base = 1; base + 4 <= count; base += 5) {
    graph.connect(base, 1, base + 1, 0);
    graph.connect(base, 1, base + 2, 0);
    graph.connect(base, 0, base + 4, 0);
    graph.connect(base + 1, 0, base + 4, 1);
    graph.connect(base + 2, 0, base + 4, 2);
    graph.connect(base + 3, 0, base + 4, 3);
  }
  return toWorkflow(graph);
}"""

PAN = """async (frames) => {
  const canvas = window.loom.app.canvas;
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  canvas.resetFrameStats();
  const stamps = [];
  await new Promise((resolve) => {
    let i = 0;
    const step = (now) => {
      stamps.push(now);
      const v = canvas.getViewport();
      canvas.setViewport({offset: [v.offset[0] - 12, v.offset[1] - 5], scale: v.scale});
      if (++i >= frames) resolve(); else requestAnimationFrame(step);
    };
    requestAnimationFrame(step);
  });
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const gaps = stamps.slice(1).map((t, k) => t - stamps[k]);
  const stats = canvas.frameStats();
  return {...stats, interval: gaps.reduce((a, b) => a + b, 0) / gaps.length, worstInterval: Math.max(...gaps)};
}"""


def test_500_node_graph_pan_frame_time(editor: Editor, capsys: pytest.CaptureFixture[str]) -> None:
    workflow = editor.page.evaluate(BUILD, NODES)
    editor.load(workflow, new_tab=True)
    assert len(editor.node_ids()) == NODES
    results = {}
    # Zoomed in (most nodes culled), then the whole graph in view (every node drawn, simplified).
    editor.app("app.canvas.setViewport({offset: [0, 0], scale: 1});")
    results["scale 1"] = editor.page.evaluate(PAN, FRAMES)
    editor.app("app.canvas.fitView();")
    editor.shot("500-nodes")
    results["fit view"] = editor.page.evaluate(PAN, FRAMES)
    lines = [
        f"500-node pan, {label}: {r['frames']} frames drawn, draw avg {r['avgMs']:.2f} ms max {r['maxMs']:.2f} ms, "
        f"frame interval avg {r['interval']:.1f} ms worst {r['worstInterval']:.1f} ms"
        for label, r in results.items()
    ]
    (editor.artifacts / "frame-time.json").write_text(json.dumps(results, indent=2))
    with capsys.disabled():
        print("\n" + "\n".join(lines))  # noqa: T201 -- the figure is the point of this test
    for label, r in results.items():
        assert r["frames"] > 0, f"nothing was drawn while panning ({label}): {r}"
