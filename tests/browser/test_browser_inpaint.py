"""Inpainting in the editor by mouse and keyboard: the first-start txt2img graph turned into an inpaint
graph (LoadImage -> VAEEncodeForInpaint -> KSampler), a picture uploaded, a mask painted in the mask
editor with mouse strokes (brush size by keyboard, one stroke undone), saved through /upload/mask, and
the graph run. The server's copy of the mask is checked pixel by pixel against the strokes."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.browser.loom_editor import Editor

pytestmark = pytest.mark.browser

SIZE = 64  # picture and generation size (a multiple of 8 for the VAE)
PICTURE_RGB = (40, 160, 90)

# Strokes in picture pixels; the last one is undone before saving.
KEPT_STROKES = [((10.0, 14.0), (50.0, 14.0)), ((20.0, 24.0), (20.0, 52.0))]
UNDONE_STROKE = ((44.0, 40.0), (56.0, 56.0))
ERASED_STROKE = ((44.0, 4.0), (44.0, 24.0))  # with the eraser, across the first stroke


def _free_spot(editor: Editor, column_x: float, width: float = 320) -> tuple[float, float]:
    """A page point in graph column [column_x, column_x + width) below every node there."""
    bottom = 0.0
    for node in editor.nodes().values():
        x, y = node["pos"]
        if x < column_x + width and x + node["size"][0] > column_x:
            bottom = max(bottom, y + node["size"][1])
    return editor.graph_to_page([column_x + 10, bottom + 60])


def _segment_distance(point: tuple[float, float], segment: tuple[tuple[float, float], ...]) -> float:
    (ax, ay), (bx, by) = segment
    px, py = point
    dx, dy = bx - ax, by - ay
    length = dx * dx + dy * dy
    t = 0.0 if length == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / length))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


def _mask_view(editor: Editor) -> tuple[float, float, float]:
    """(scale, x, y) of the picture on the mask canvas, page px = canvas origin + x + picture px * scale."""
    canvas = editor.page.get_by_test_id("mask-canvas")
    box = canvas.bounding_box()
    assert box is not None, "the mask canvas is not displayed"
    scale, x, y = (float(part) for part in (canvas.get_attribute("data-view") or "").split())
    return scale, box["x"] + x, box["y"] + y


def _paint(editor: Editor, stroke: tuple[tuple[float, float], ...]) -> None:
    scale, x0, y0 = _mask_view(editor)
    (ax, ay), (bx, by) = stroke
    editor.drag((x0 + ax * scale, y0 + ay * scale), (x0 + bx * scale, y0 + by * scale), steps=16)


def _build_inpaint_graph(editor: Editor) -> dict[str, int]:
    """The default graph with LoadImage + VAEEncodeForInpaint feeding the sampler instead of the
    empty latent, added through the search and wired by dragging links."""
    ids = editor.small_default_graph(steps=2)
    editor.app("app.canvas.setViewport({offset: [30, 40], scale: 0.55});")
    ids["load"] = editor.add_node("LoadImage", _free_spot(editor, 0), query="load image")
    right = max(node["pos"][0] + node["size"][0] for node in editor.nodes().values() if node["id"] == ids["load"])
    ids["encode"] = editor.add_node("VAEEncodeForInpaint", _free_spot(editor, right + 60), query="VAE encode inpaint")
    editor.select_node(ids["latent"])
    editor.press("Delete")
    assert ids["latent"] not in editor.node_ids()
    editor.focus_canvas()
    editor.press(".")  # fit the view to the graph
    editor.connect(ids["load"], 0, ids["encode"], "pixels")
    editor.connect(ids["load"], 1, ids["encode"], "mask")
    editor.connect(ids["ckpt"], 2, ids["encode"], "vae")
    editor.connect(ids["encode"], 0, ids["sampler"], "latent_image")
    for name, origin in (("pixels", (ids["load"], 0)), ("mask", (ids["load"], 1)), ("vae", (ids["ckpt"], 2))):
        link = editor.input_link(ids["encode"], name)
        assert link and (link["origin_id"], link["origin_slot"]) == origin, (name, link)
    link = editor.input_link(ids["sampler"], "latent_image")
    assert link and link["origin_id"] == ids["encode"], link
    return ids


def _upload_picture(editor: Editor, load: int, path: Path) -> str:
    picture = Image.new("RGB", (SIZE, SIZE), PICTURE_RGB)
    picture.paste((230, 220, 40), (0, 0, SIZE // 2, SIZE // 2))
    picture.save(path)
    before = editor.widget(load, "image")
    with editor.page.expect_file_chooser() as chooser:
        editor.click(editor.widget_center(load, "upload"))
    chooser.value.set_files(str(path))
    editor.page.wait_for_function(
        "([id, before]) => window.loom.app.graph.getWidget(id, 'image', window.loom.app.objectInfo) !== before",
        arg=[load, before],
        timeout=10_000,
    )
    return editor.widget(load, "image")


def _image_area_point(editor: Editor, node_id: int) -> tuple[float, float]:
    """The page point at the centre of a node's picture area."""
    point = editor.app(
        """const node = app.graph.node(arg);
           const [x, y, w, h] = app.canvas.layoutOf(node).image;
           return app.canvas.toScreen([node.pos[0] + x + w / 2, node.pos[1] + y + h / 2]);""",
        node_id,
    )
    return editor._on_canvas(editor._page_point(point), f"the picture of node {node_id}")


def _check_mask_pixels(alpha: Image.Image, brush: int) -> None:
    """Painted (alpha 0) within the kept strokes outside the erased one, untouched (alpha 255)
    elsewhere; the undone stroke left nothing. Antialiased edge pixels (within one pixel of a brush
    edge) are not judged."""
    radius = brush / 2
    painted, clear, erased = 0, 0, 0
    wrong: list[str] = []
    for y in range(SIZE):
        for x in range(SIZE):
            centre = (x + 0.5, y + 0.5)
            distance = min(_segment_distance(centre, stroke) for stroke in KEPT_STROKES)
            rubbed = _segment_distance(centre, ERASED_STROKE)
            value = alpha.getpixel((x, y))
            if distance <= radius - 1 and rubbed >= radius + 1:
                painted += 1
                if value > 8:
                    wrong.append(f"({x},{y}) on a stroke has alpha {value}")
            elif distance >= radius + 1 or rubbed <= radius - 1:
                clear += 1
                erased += distance <= radius - 1
                if value != 255:
                    wrong.append(f"({x},{y}) {distance:.1f} px from the strokes has alpha {value}")
    assert painted > 100 and clear > 1000 and erased > 10, (painted, clear, erased)
    assert not wrong, f"{len(wrong)} mask pixels are wrong: {wrong[:12]}"


def test_inpaint_with_mask_painted_in_the_editor(editor: Editor, tmp_path: Path) -> None:
    ids = _build_inpaint_graph(editor)
    load, save = ids["load"], ids["save"]
    uploaded = _upload_picture(editor, load, tmp_path / "inpaint-source.png")
    assert not uploaded.startswith("clipspace/"), uploaded

    # Double-click on the picture opens the editor; Escape cancels it and changes nothing.
    editor.page.mouse.dblclick(*_image_area_point(editor, load))
    dialog = editor.page.get_by_test_id("mask-editor")
    expect(dialog).to_be_visible()
    editor.press("Escape")
    expect(dialog).to_be_hidden()
    assert editor.widget(load, "image") == uploaded

    # The node's context menu opens it too.
    editor.page.mouse.click(*editor.title_point(load), button="right")
    editor.page.locator('[data-testid="menu-item"][data-action="mask-editor"]').click()
    expect(dialog).to_be_visible()
    editor.page.wait_for_function(
        "() => (document.querySelector('[data-testid=mask-canvas]')?.dataset.view || '').length > 0"
    )
    size_label = editor.page.get_by_test_id("mask-brush-size-label")
    start = int((size_label.text_content() or "").split()[0])
    for _ in range(4):
        editor.press("]")
    brush = int((size_label.text_content() or "").split()[0])
    assert brush > start, f"']' did not grow the brush ({start} -> {brush})"
    editor.press("[")
    smaller = int((size_label.text_content() or "").split()[0])
    assert smaller < brush
    editor.press("]")
    brush = int((size_label.text_content() or "").split()[0])

    for stroke in KEPT_STROKES:
        _paint(editor, stroke)
    _paint(editor, UNDONE_STROKE)
    editor.shot("mask-editor")
    editor.press("Control+z")  # undoes the last stroke only
    editor.press("e")
    expect(editor.page.get_by_test_id("mask-eraser")).to_have_attribute("aria-pressed", "true")
    _paint(editor, ERASED_STROKE)
    editor.page.get_by_test_id("mask-clear").click()
    editor.page.get_by_test_id("mask-undo").click()  # the clear is one undo step too
    editor.page.get_by_test_id("mask-fit").click()
    editor.page.get_by_test_id("mask-save").click()
    expect(dialog).to_be_hidden()
    masked = editor.widget(load, "image")
    assert masked.startswith("clipspace/") and masked.endswith(" [input]"), masked
    # The change is one undoable step of the graph.
    editor.focus_canvas()
    editor.press("Control+z")
    assert editor.widget(load, "image") == uploaded
    editor.press("Control+y")
    assert editor.widget(load, "image") == masked

    name = masked[len("clipspace/") : -len(" [input]")]
    data = editor.server.view(name, "clipspace", "input")
    with Image.open(io.BytesIO(data)) as stored:
        assert stored.mode == "RGBA" and stored.size == (SIZE, SIZE)
        assert stored.getpixel((SIZE - 2, SIZE - 2))[:3] == PICTURE_RGB  # the picture itself is kept
        _check_mask_pixels(stored.getchannel("A"), brush)
    # What LoadImage's MASK output will carry: 1 where painted (the server's own decoder).
    from nodes.image_io import decode_image_file

    stored_path = tmp_path / "stored-mask.png"
    stored_path.write_bytes(data)
    _, mask = decode_image_file(stored_path)
    assert tuple(mask.shape) == (1, SIZE, SIZE)
    (ax, ay), _ = KEPT_STROKES[0]
    assert float(mask[0, int(ay), int(ax) + 4]) > 0.95 and float(mask[0, SIZE - 2, 2]) == 0.0

    editor.record_states()
    editor.focus_canvas()
    editor.press("Control+Enter")
    calls = editor.wait_state("output images on SaveImage", lambda calls: _output_calls(calls, save))
    images = _output_calls(calls, save)[-1]["images"]
    assert len(images) == 1
    history = editor.server.request("GET", "/history")[1]
    runs = [item for item in history.values() if _ran_with(item, load, masked)]
    assert runs and runs[-1]["status"]["status_str"] == "success", runs[-1:] or history
    editor.shot("inpaint-output")


def _output_calls(calls: list[dict[str, Any]], node_id: int) -> list[dict[str, Any]]:
    return [call for call in calls if call["id"] == node_id and call.get("images")]


def _ran_with(history_item: dict[str, Any], load: int, image: str) -> bool:
    entry = history_item["prompt"][2].get(str(load), {})
    return entry.get("class_type") == "LoadImage" and entry.get("inputs", {}).get("image") == image


# ---------------------------------------------------------------------- small editor fixes
# (textarea overlays under other nodes, the favicon, closing a tab with unsaved changes, the
# extension shim's `api`) -- kept with the mask editor's test, which came with them.


def _textarea(editor: Editor, node_id: int) -> Any:
    return editor.page.locator(f'[data-testid="widget-textarea"][data-node-id="{node_id}"]')


def test_textarea_hidden_under_a_node_dragged_over_it(editor: Editor) -> None:
    editor.app("app.canvas.setViewport({offset: [40, 60], scale: 1});")
    texts = [node_id for node_id, node in editor.nodes().items() if node["type"] == "CLIPTextEncode"]
    sampler = editor.node_of_type("KSampler")
    target = texts[0]
    area = _textarea(editor, target)
    expect(area).to_be_visible()
    box = area.bounding_box()
    assert box is not None
    start = editor.title_point(sampler)
    editor.drag(start, (box["x"] + 40, box["y"] + 10))
    expect(area).to_have_count(0)  # the dragged node (drawn on top) covers it: no textarea floats over
    assert not editor.page.evaluate(
        "([x, y]) => document.elementFromPoint(x, y)?.matches('[data-testid=widget-textarea]')",
        [box["x"] + 60, box["y"] + 30],
    )
    editor.focus_canvas()
    editor.press("Control+z")
    expect(area).to_be_visible()


def test_no_404_on_load(editor: Editor) -> None:
    editor.page.wait_for_timeout(300)
    failures = [line for line in editor.console if "404" in line or "favicon" in line.lower()]
    assert not failures, failures
    icon = editor.page.locator('link[rel="icon"]').get_attribute("href") or ""
    assert icon.startswith("data:image/svg+xml,"), icon


def test_closing_a_tab_with_unsaved_changes_asks_first(editor: Editor) -> None:
    tabs = editor.page.get_by_test_id("tab")
    editor.page.get_by_test_id("new-tab").click()
    expect(tabs).to_have_count(2)
    dialog = editor.page.get_by_test_id("confirm-dialog")
    # An unchanged tab closes at once.
    editor.page.locator('[data-testid="tab"].active [data-testid="tab-close"]').click()
    expect(tabs).to_have_count(1)
    expect(dialog).to_have_count(0)
    # A changed one asks: Escape keeps it, confirming closes it.
    editor.small_default_graph()
    editor.page.get_by_test_id("new-tab").click()
    expect(tabs).to_have_count(2)
    dirty = tabs.first
    expect(dirty).to_have_class(re.compile(r"\bdirty\b"))
    dirty.get_by_test_id("tab-close").click()
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("unsaved")
    editor.press("Escape")
    expect(dialog).to_have_count(0)
    expect(tabs).to_have_count(2)
    dirty.get_by_test_id("tab-close").click()
    dialog.get_by_test_id("dialog-ok").click()
    expect(tabs).to_have_count(1)
    expect(tabs.first).not_to_have_class(re.compile(r"\bdirty\b"))


def test_extension_shim_api(editor: Editor) -> None:
    result = editor.page.evaluate(
        """async () => {
          const { api } = await import("/scripts/api.js");
          const seen = [];
          const onStatus = (event) => seen.push(["status", event.detail.n]);
          const onPreview = (event) => seen.push(["b_preview", event.detail instanceof Blob]);
          api.addEventListener("status", onStatus);
          api.addEventListener("b_preview", onPreview);
          const backend = window.loom.app.api;
          backend.dispatchEvent(new CustomEvent("status", { detail: { n: 1 } }));
          backend.dispatchEvent(new CustomEvent("preview", { detail: { blob: new Blob(["x"]), metadata: null } }));
          api.removeEventListener("status", onStatus);
          api.removeEventListener("b_preview", onPreview);
          backend.dispatchEvent(new CustomEvent("status", { detail: { n: 2 } }));
          backend.dispatchEvent(new CustomEvent("preview", { detail: { blob: new Blob(["y"]), metadata: null } }));
          const response = await api.fetchApi("/object_info/KSampler");
          const info = await response.json();
          const missing = await api.fetchApi("/history/no-such-prompt");
          let refused = null;
          try { await api.queuePrompt(0, { output: { "1": { class_type: "NoSuchNode", inputs: {} } } }); }
          catch (error) { refused = error.response; }
          return { seen, url: api.apiURL("/object_info"), file: api.fileURL("/extensions/x.js"),
                   status: response.status, hasSampler: "KSampler" in info, missing: missing.status,
                   refused: refused && typeof refused === "object" && "error" in refused,
                   sameClient: api.clientId === backend.clientId };
        }"""
    )
    assert result["seen"] == [["status", 1], ["b_preview", True]], result
    assert result["url"] == "/api/object_info" and result["file"] == "/extensions/x.js", result
    assert result["status"] == 200 and result["hasSampler"], result
    assert result["missing"] == 200  # ComfyUI answers {} for an unknown prompt id
    assert result["refused"] and result["sameClient"], result
