"""Running from the editor against the real server (tiny random-weight model, latent2rgb previews):
Ctrl+Enter queues, the sampler shows running/progress/preview, SaveImage shows the output and the
gallery lists it; a graph the server refuses shows the error on the offending node and input."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.browser.loom_editor import DEMO_CHECKPOINT, ROOT, Editor

pytestmark = pytest.mark.browser


def _calls_for(calls: list[dict[str, Any]], node_id: int, key: str) -> list[dict[str, Any]]:
    return [call for call in calls if call["id"] == node_id and call.get(key)]


def _seed(history_item: dict[str, Any], sampler: int) -> Any:
    return history_item["prompt"][2].get(str(sampler), {}).get("inputs", {}).get("seed")


def test_queue_shows_progress_preview_output_and_gallery(editor: Editor) -> None:
    ids = editor.small_default_graph(steps=4)
    editor.set_widget(ids["sampler"], "seed", 1234)
    editor.set_widget(ids["sampler"], "seed", "fixed", kind="control")
    editor.record_states()
    editor.show_panel("queue-panel", "queue-toggle")  # for the screenshot of the running queue
    editor.app("app.canvas.fitView();")

    editor.focus_canvas()
    editor.press("Control+Enter")
    sampler, save = ids["sampler"], ids["save"]
    editor.wait_state("the sampler marked running", lambda calls: _calls_for(calls, sampler, "running"))
    calls = editor.wait_state("progress on the sampler", lambda calls: _calls_for(calls, sampler, "progress"))
    try:
        editor.shot("queue-running")
    finally:
        shot = editor.page.evaluate("() => window.__loomRunningShot")
        if shot and shot.startswith("data:image/png;base64,"):
            (editor.artifacts / "queue-running-canvas.png").write_bytes(base64.b64decode(shot.split(",", 1)[1]))
    calls = editor.wait_state("a live preview on the sampler", lambda calls: _calls_for(calls, sampler, "preview"))
    calls = editor.wait_state("output images on SaveImage", lambda calls: _calls_for(calls, save, "images"))

    progress = [call["progress"] for call in _calls_for(calls, sampler, "progress")]
    assert all(0 <= p["value"] <= p["max"] for p in progress)
    assert progress[-1]["max"] == 4, progress
    images = _calls_for(calls, save, "images")[-1]["images"]
    assert len(images) == 1
    response = editor.page.request.get(urljoin(editor.server.url + "/", images[0]))
    assert response.status == 200 and response.body()[:8] == b"\x89PNG\r\n\x1a\n"
    editor.shot("output-image")

    filename = (
        images[0].split("filename=")[1].split("&")[0] if "filename=" in images[0] else images[0].rsplit("/", 1)[-1]
    )
    editor.show_panel("gallery", "gallery-toggle")
    try:
        editor.page.wait_for_function(
            "(name) => [...document.querySelectorAll('[data-testid=gallery-item]')].some((i) => i.outerHTML.includes(name))",
            arg=filename,
            timeout=10_000,
        )
    except Exception:
        shown = editor.page.get_by_test_id("gallery").evaluate_all("(items) => items.map((i) => i.outerHTML).join(' ')")
        raise AssertionError(f"no gallery-item shows {filename}; the gallery holds: {shown[:800]}") from None

    history = editor.server.request("GET", "/history")[1]
    ran = [item for item in history.values() if _seed(item, sampler) == 1234]
    assert ran and ran[-1]["status"]["status_str"] == "success"


def test_queue_button_and_seed_control_after_generate(editor: Editor) -> None:
    ids = editor.small_default_graph(steps=2)
    sampler = ids["sampler"]
    editor.set_widget(sampler, "seed", 500)
    editor.set_widget(sampler, "seed", "increment", kind="control")
    editor.record_states()
    editor.page.get_by_test_id("queue-button").click()
    editor.wait_state("output images on SaveImage", lambda calls: _calls_for(calls, ids["save"], "images"))
    # The prompt ran with the value shown when it was queued; the widget then moved on.
    history = editor.server.request("GET", "/history")[1]
    seeds = [_seed(item, sampler) for item in history.values()]
    assert 500 in seeds
    assert editor.widget(sampler, "seed") == 501
    expect(editor.page.get_by_test_id("queue-panel")).to_be_attached()


def test_validation_error_shown_on_node_and_input(editor: Editor) -> None:
    ids = editor.small_default_graph(steps=2)
    sampler = ids["sampler"]
    editor.app("app.graph.disconnect(arg[0], arg[1]);", [sampler, editor.input_slot(sampler, "model")])
    editor.record_states()
    editor.page.get_by_test_id("queue-button").click()
    calls = editor.wait_state("an error on the sampler", lambda calls: _calls_for(calls, sampler, "error"), timeout=15)
    error = _calls_for(calls, sampler, "error")[-1]["error"]
    assert "model" in error["inputs"], error
    panel = editor.page.get_by_test_id("error-panel")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text("model")
    editor.shot("validation-error")
    assert not editor.server.request("GET", "/queue")[1]["queue_pending"]


def test_queue_panel_reorder_cancel_clear_interrupt(editor: Editor) -> None:
    ids = editor.small_default_graph(steps=1000)  # the server's cap; runs until interrupted
    editor.set_widget(ids["sampler"], "seed", "increment", kind="control")  # three distinct prompts
    editor.show_panel("queue-panel", "queue-toggle")
    for _ in range(3):
        editor.page.get_by_test_id("queue-button").click()
    items = editor.page.get_by_test_id("queue-item")
    running = editor.page.locator('[data-testid="queue-item"][data-state="running"]')
    pending = editor.page.locator('[data-testid="queue-item"][data-state="pending"]')
    expect(running).to_have_count(1)
    expect(pending).to_have_count(2)
    running_id = running.get_attribute("data-prompt-id")

    def pending_ids() -> list[str]:
        return [item.get_attribute("data-prompt-id") for item in pending.all()]

    def server_pending() -> list[str]:
        queue = editor.server.request("GET", "/queue")[1]
        return [item[1] for item in sorted(queue["queue_pending"], key=lambda item: item[0])]

    first, second = pending_ids()
    assert server_pending() == [first, second]
    pending.first.get_by_test_id("queue-down").click()  # reorder: the first pending runs later
    expect(pending.first).to_have_attribute("data-prompt-id", second)
    assert server_pending() == [second, first]
    pending.last.get_by_test_id("queue-cancel").click()
    expect(pending).to_have_count(1)
    assert server_pending() == [second]
    editor.shot("queue-panel")
    editor.page.get_by_test_id("queue-clear").click()
    expect(pending).to_have_count(0)
    assert server_pending() == []
    editor.page.get_by_test_id("queue-interrupt").click()
    expect(items).to_have_count(0)
    item = editor.server.wait_history(running_id, timeout=30)
    kinds = [message[0] for message in item["status"]["messages"]]
    assert "execution_interrupted" in kinds, item["status"]


def test_img2img_with_uploaded_image(editor: Editor, tmp_path: Path) -> None:
    workflow = json.loads((ROOT / "tests" / "execution" / "workflows" / "img2img_v04.json").read_text())
    editor.load(workflow)
    editor.app("app.canvas.fitView();")
    load, scale, sampler, save = 2, 3, 7, 9
    assert [editor.node(i)["type"] for i in (load, scale, sampler, save)] == [
        "LoadImage",
        "ImageScale",
        "KSamplerAdvanced",
        "SaveImage",
    ]
    editor.set_widget(1, "ckpt_name", DEMO_CHECKPOINT)
    editor.set_widget(scale, "width", 64)
    editor.set_widget(scale, "height", 64)
    editor.set_widget(sampler, "steps", 4)
    editor.set_widget(sampler, "start_at_step", 2)
    picture = tmp_path / "browser-upload.png"
    Image.new("RGB", (48, 40), (200, 30, 30)).save(picture)

    with editor.page.expect_file_chooser() as chooser:
        editor.click(editor.widget_center(load, "upload"))
    chooser.value.set_files(str(picture))
    editor.page.wait_for_function(
        "(id) => window.loom.app.graph.getWidget(id, 'image', window.loom.app.objectInfo) !== 'example.png'",
        arg=load,
        timeout=10_000,
    )
    uploaded = editor.widget(load, "image")
    assert uploaded.endswith(".png")
    data = editor.server.view(uploaded, "", "input")
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (48, 40)

    editor.record_states()
    editor.focus_canvas()
    editor.press("Control+Enter")
    calls = editor.wait_state("output images on SaveImage", lambda calls: _calls_for(calls, save, "images"))
    assert len(_calls_for(calls, save, "images")[-1]["images"]) == 1
    editor.shot("img2img-uploaded")
