"""What a ComfyUI user expects beyond the basics: a picture dropped or pasted on the canvas becomes
(or replaces) a LoadImage image, links through reroutes take the colour of the type they carry and are
type-checked by it, a Primitive node takes the type and widget of what it feeds (converting like the
server does), and double-clicking a group's title renames it (undoably)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from playwright.sync_api import expect

from tests.browser.loom_editor import EMPTY_POINT as EMPTY
from tests.browser.loom_editor import ROOT, Editor

pytestmark = pytest.mark.browser

DROP = """async ([name, hex, mime, x, y]) => {
  const bytes = new Uint8Array(hex.match(/../g).map((h) => parseInt(h, 16)));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, {type: mime}));
  const target = document.elementFromPoint(x, y);
  const at = {bubbles: true, cancelable: true, dataTransfer: transfer, clientX: x, clientY: y};
  for (const type of ["dragenter", "dragover", "drop"]) target.dispatchEvent(new DragEvent(type, at));
}"""

# A paste event as Chromium sends it for Ctrl+V with a picture on the system clipboard.
PASTE = """async ([name, hex, mime]) => {
  const bytes = new Uint8Array(hex.match(/../g).map((h) => parseInt(h, 16)));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, {type: mime}));
  const event = new ClipboardEvent("paste", {bubbles: true, cancelable: true, clipboardData: transfer});
  (document.activeElement || document.body).dispatchEvent(event);
  return event.defaultPrevented;
}"""

CLIPBOARD_PICTURE = """async (hex) => {
  const bytes = new Uint8Array(hex.match(/../g).map((h) => parseInt(h, 16)));
  try {
    await navigator.clipboard.write([new ClipboardItem({"image/png": new Blob([bytes], {type: "image/png"})})]);
    return "ok";
  } catch (error) {
    return String(error);
  }
}"""

# The colour drawn at a link's centre dot (at zoom 1, the link centred, nodes left out of that one
# frame so none covers it), and the colour the theme gives a type.
LINK_DOT = """async ([linkId, type]) => {
  const app = window.loom.app;
  const c = app.canvas;
  const link = app.graph.links.get(linkId);
  const a = c.toGraph(c.slotPos(link.origin_id, "output", link.origin_slot));
  const b = c.toGraph(c.slotPos(link.target_id, "input", link.target_slot));
  const mid = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
  c.setViewport({scale: 1, offset: [c.el.clientWidth / 2 - mid[0], c.el.clientHeight / 2 - mid[1]]});
  const order = c.frame.order;
  c.frame.order = () => [];
  try { c.draw(); } finally { c.frame.order = order; }
  const center = c.linkCenters.get(linkId);
  if (!center) return null;
  const [sx, sy] = c.toScreen(center);
  const dpr = window.devicePixelRatio || 1;
  const pixel = c.ctx.getImageData(Math.round(sx * dpr), Math.round(sy * dpr), 1, 1).data;
  c.requestDraw();
  const theme = await import(new URL("canvas/theme.js", document.baseURI).href);
  const hex = theme.typeColor(type);
  const want = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  return {got: [pixel[0], pixel[1], pixel[2]], want};
}"""


def _picture(size: tuple[int, int], color: tuple[int, int, int], fmt: str = "PNG", **params: Any) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt, **params)
    return buffer.getvalue()


def _spot(editor: Editor) -> tuple[float, float]:
    """An empty page point with room around it for a new node, as far as the canvas allows."""
    for margin in (200, 120):
        if editor.page.evaluate(EMPTY, margin):
            return editor.empty_point(margin)
    return editor.empty_point()


def _drop(editor: Editor, name: str, data: bytes, mime: str, point: tuple[float, float]) -> None:
    editor.page.evaluate(DROP, [name, data.hex(), mime, point[0], point[1]])


def _load_images(editor: Editor) -> dict[int, dict[str, Any]]:
    return {node_id: node for node_id, node in editor.nodes().items() if node["type"] == "LoadImage"}


def _wait_image(editor: Editor, node_id: int, not_value: str | None, timeout: float = 10_000) -> str:
    editor.page.wait_for_function(
        """([id, old]) => {
          const app = window.loom.app;
          if (!app.graph.nodes.has(id)) return false;
          const value = app.graph.getWidget(id, "image", app.objectInfo);
          return typeof value === "string" && value !== old;
        }""",
        arg=[node_id, not_value],
        timeout=timeout,
    )
    return editor.widget(node_id, "image")


def _wait_new_load_image(editor: Editor, before: set[int]) -> int:
    editor.page.wait_for_function(
        "(before) => [...window.loom.app.graph.nodes.values()].some((n) => n.type === 'LoadImage' && !before.includes(n.id))",
        arg=sorted(before),
        timeout=10_000,
    )
    added = set(_load_images(editor)) - before
    assert len(added) == 1, f"expected one new LoadImage node, got {added}"
    return added.pop()


def _uploaded_size(editor: Editor, name: str) -> tuple[int, int]:
    subfolder, _, filename = name.rpartition("/")
    with Image.open(io.BytesIO(editor.server.view(filename, subfolder, "input"))) as image:
        return image.size


def test_dropped_picture_adds_or_replaces_a_load_image(editor: Editor) -> None:
    stem = uuid.uuid4().hex[:8]
    before = set(_load_images(editor))
    point = editor.empty_point()
    _drop(editor, f"drop-{stem}.png", _picture((40, 24), (10, 200, 30)), "image/png", point)
    load = _wait_new_load_image(editor, before)
    first = _wait_image(editor, load, None)
    assert _uploaded_size(editor, first) == (40, 24), "the upload is not the dropped picture"
    drop_at = editor.page_to_graph(point)
    pos = editor.node(load)["pos"]
    assert abs(pos[0] - drop_at[0]) <= 1 and abs(pos[1] - drop_at[1]) <= 1, (pos, drop_at)
    assert editor.prompt()[str(load)]["inputs"]["image"] == first
    editor.shot("picture-dropped")

    # A JPEG dropped on that node replaces its picture; no new node.
    editor.app("app.canvas.fitView();")
    count = len(editor.node_ids())
    _drop(editor, f"drop-{stem}.jpg", _picture((30, 50), (200, 20, 20), "JPEG"), "image/jpeg", editor.title_point(load))
    second = _wait_image(editor, load, first)
    assert _uploaded_size(editor, second) == (30, 50)
    assert len(editor.node_ids()) == count
    editor.focus_canvas()
    editor.press("Control+Z")
    assert editor.widget(load, "image") == first, "undo did not bring the first picture back"
    editor.press("Control+Z")
    assert load not in editor.node_ids(), "undo did not remove the node the drop added"

    # A PNG that carries a workflow still opens that workflow (no upload, no LoadImage).
    workflow = editor.workflow()
    kept = [node for node in workflow["nodes"] if node["type"] != "SaveImage"]
    workflow["nodes"] = kept
    ids = {node["id"] for node in kept}
    workflow["links"] = [link for link in workflow["links"] if link[1] in ids and link[3] in ids]
    link_ids = {link[0] for link in workflow["links"]}
    for node in kept:
        for output in node.get("outputs") or []:
            output["links"] = [link for link in output.get("links") or [] if link in link_ids]
    info = PngInfo()
    info.add_text("workflow", json.dumps(workflow))
    _drop(editor, f"flow-{stem}.png", _picture((8, 8), (0, 0, 0), pnginfo=info), "image/png", editor.empty_point())
    editor.page.wait_for_function("(n) => window.loom.app.graph.nodes.size === n", arg=len(kept), timeout=10_000)
    assert {node["type"] for node in editor.nodes().values()} == {node["type"] for node in kept}


def test_pasted_picture_becomes_a_load_image_at_the_mouse(editor: Editor) -> None:
    context = editor.page.context
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=editor.server.url)
    try:
        # Nodes copied earlier do not win over a picture put on the system clipboard since.
        sampler = editor.node_of_type("KSampler")
        editor.select_node(sampler)
        editor.press("Control+C")
        written = editor.page.evaluate(CLIPBOARD_PICTURE, _picture((16, 12), (1, 2, 3)).hex())
        assert written == "ok", f"the test could not put a picture on the clipboard: {written}"
        before = set(_load_images(editor))
        count = len(editor.node_ids())
        point = editor.empty_point()
        editor.page.mouse.move(*point)
        editor.press("Control+V")
        load = _wait_new_load_image(editor, before)
        name = _wait_image(editor, load, None)
        assert _uploaded_size(editor, name) == (16, 12)
        assert len(editor.node_ids()) == count + 1, "the copied nodes were pasted too"
        at = editor.page_to_graph(point)
        pos = editor.node(load)["pos"]
        assert abs(pos[0] - at[0]) <= 1 and abs(pos[1] - at[1]) <= 1, (pos, at)

        # Text on the clipboard: Ctrl+V pastes the copied nodes as before.
        editor.page.evaluate("() => navigator.clipboard.writeText('just text')")
        editor.page.mouse.move(*editor.empty_point())
        editor.press("Control+V")
        types = [node["type"] for node in editor.nodes().values()]
        assert len(types) == count + 2 and types.count("KSampler") == 2, types

        # The paste event as such (what the browser sends for Ctrl+V) is handled, not left to it.
        before = set(_load_images(editor))
        editor.page.mouse.move(*editor.empty_point())
        picture = _picture((8, 8), (9, 9, 9), "WEBP").hex()
        assert editor.page.evaluate(PASTE, [f"paste-{uuid.uuid4().hex[:8]}.webp", picture, "image/webp"])
        _wait_new_load_image(editor, before)
    finally:
        context.clear_permissions()


def test_links_through_reroutes_carry_their_type(editor: Editor) -> None:
    ckpt = editor.node_of_type("CheckpointLoaderSimple")
    decode = editor.node_of_type("VAEDecode")
    sampler = editor.node_of_type("KSampler")
    assert editor.node(ckpt)["outputs"][2]["type"] == "VAE"
    reroute = editor.add_node("Reroute", _spot(editor), query="reroute")
    editor.drag(editor.slot_point(ckpt, "output", 2), editor.slot_point(reroute, "input", 0))
    assert editor.input_link(reroute, "") is not None
    editor.connect(reroute, 0, decode, "vae")
    out = editor.input_link(decode, "vae")
    assert out is not None and out["origin_id"] == reroute, "the reroute output did not connect to the VAE input"

    # The link out of the reroute is drawn in VAE's colour, not the untyped one.
    dot = editor.page.evaluate(LINK_DOT, [out["id"], "VAE"])
    assert dot is not None and dot["got"] == dot["want"], f"link colour {dot}"

    # Checked as VAE: the MODEL input refuses it.
    before = editor.state()
    editor.connect(reroute, 0, sampler, "model")
    assert editor.state() == before, "a VAE reroute was linked to a MODEL input"

    # A second reroute inserted on that link (its menu): the chain still carries VAE.
    center = editor.app("app.canvas.draw(); return app.canvas.linkCenters.get(arg);", out["id"])
    assert center is not None
    editor.app("app.openContextMenu(null, [300, 300], arg[1], {linkId: arg[0]});", [out["id"], center])
    editor.page.locator('[data-testid="menu-item"][data-action="insert-reroute"]').click()
    last = editor.input_link(decode, "vae")
    assert last is not None and last["origin_id"] not in (reroute, ckpt)
    assert editor.node(last["origin_id"])["type"] == "Reroute"
    dot = editor.page.evaluate(LINK_DOT, [last["id"], "VAE"])
    assert dot is not None and dot["got"] == dot["want"], f"link colour after two reroutes {dot}"
    assert editor.prompt()[str(decode)]["inputs"]["vae"] == [str(ckpt), 2]
    editor.shot("reroute-typed")


def _server_conversion(editor: Editor, workflow: dict[str, Any], folder: Path) -> dict[str, Any]:
    path = folder / "primitive.json"
    path.write_text(json.dumps(workflow))
    done = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "convert", str(path), "--base-directory", str(editor.server.base)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"main.py convert failed:\n{done.stderr[-2000:]}"
    return json.loads(done.stdout)


def test_primitive_takes_the_widget_it_feeds(editor: Editor, tmp_path: Path) -> None:
    sampler = editor.node_of_type("KSampler")
    latent = editor.node_of_type("EmptyLatentImage")
    steps = editor.widget(sampler, "steps")
    prim = editor.add_node("PrimitiveNode", _spot(editor), query="primitive")
    assert editor.node(prim)["outputs"][0]["type"] == "*"

    # Refused on a socket that is no widget.
    before = editor.state()
    editor.connect(prim, 0, sampler, "model")
    assert editor.state() == before, "a Primitive was linked to a MODEL input"

    # Dropped on the steps widget: converted, linked, typed INT, the value taken over.
    editor.drag(editor.slot_point(prim, "output", 0), editor.widget_center(sampler, "steps"))
    link = editor.input_link(sampler, "steps")
    assert link is not None and link["origin_id"] == prim
    output = editor.node(prim)["outputs"][0]
    assert (output["type"], output["name"], output.get("widget")) == ("INT", "INT", {"name": "steps"})
    assert editor.node(prim)["widgets_values"] == [steps, "fixed"]
    editor.widget_rect(prim, "steps")  # it shows the mirrored widget
    editor.widget_rect(prim, "control_after_generate")

    # Typed INT now: a FLOAT widget refuses it.
    before = editor.state()
    editor.drag(editor.slot_point(prim, "output", 0), editor.widget_center(sampler, "cfg"))
    assert editor.state() == before, "an INT Primitive was linked to a FLOAT widget"

    # Another INT widget takes it; the value stays the primitive's.
    editor.drag(editor.slot_point(prim, "output", 0), editor.widget_center(latent, "width"))
    width = editor.input_link(latent, "width")
    assert width is not None and width["origin_id"] == prim
    assert editor.node(prim)["widgets_values"] == [steps, "fixed"]

    # Its value feeds the prompt, as the server's converter reads the saved workflow.
    editor.type_into_widget(prim, "steps", "7")
    assert editor.node(prim)["widgets_values"][0] == 7
    prompt = editor.prompt()
    assert prompt[str(sampler)]["inputs"]["steps"] == 7
    assert prompt[str(latent)]["inputs"]["width"] == 7
    assert str(prim) not in prompt
    server = _server_conversion(editor, editor.workflow(), tmp_path)
    assert {k: (v["class_type"], v["inputs"]) for k, v in server.items()} == {
        k: (v["class_type"], v["inputs"]) for k, v in prompt.items()
    }
    editor.shot("primitive-steps")


def test_double_click_group_title_renames_it(editor: Editor) -> None:
    decode, save = editor.node_of_type("VAEDecode"), editor.node_of_type("SaveImage")
    editor.select_node(decode)
    editor.select_node(save, additive=True)
    editor.press("Control+G")
    group = editor.state()["groups"][-1]
    x, y, _w, _h = group["bounding"]
    editor.page.mouse.dblclick(*editor.graph_to_page([x + 40, y + 14]))
    field = editor.page.locator("input:focus")
    expect(field).to_have_value(group["title"])
    editor.press("Control+A")
    editor.page.keyboard.type("Decode and save")
    editor.press("Enter")
    assert editor.state()["groups"][-1]["title"] == "Decode and save"
    editor.focus_canvas()
    editor.press("Control+Z")
    assert editor.state()["groups"][-1]["title"] == group["title"]
    editor.press("Control+Y")
    assert editor.state()["groups"][-1]["title"] == "Decode and save"
