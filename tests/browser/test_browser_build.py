"""Building graphs in the editor by mouse and keyboard: the first-start graph, then txt2img from an
empty tab (double-click -> search -> type -> Enter for every node, links dragged socket to socket)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.loom_editor import DEMO_CHECKPOINT, Editor, expected_widget_inputs

pytestmark = pytest.mark.browser

TXT2IMG_TYPES = [
    "CheckpointLoaderSimple",
    "CLIPTextEncode",
    "CLIPTextEncode",
    "EmptyLatentImage",
    "KSampler",
    "VAEDecode",
    "SaveImage",
]


def test_default_workflow_on_first_start(editor: Editor) -> None:
    types = sorted(node["type"] for node in editor.nodes().values())
    assert types == sorted(TXT2IMG_TYPES)
    assert len(editor.links()) == 9
    prompt = editor.prompt()
    assert sorted(entry["class_type"] for entry in prompt.values()) == sorted(TXT2IMG_TYPES)
    sampler = next(entry for entry in prompt.values() if entry["class_type"] == "KSampler")
    # The first checkpoint the server lists is chosen (the demo model here).
    ckpt_id = sampler["inputs"]["model"][0]
    assert prompt[ckpt_id]["inputs"]["ckpt_name"] == DEMO_CHECKPOINT
    expect(editor.page.get_by_test_id("status")).to_have_attribute("data-state", "open")
    editor.shot("default-graph")


def _empty_tab(editor: Editor) -> None:
    tabs = editor.page.get_by_test_id("tab")
    before = tabs.count()
    editor.page.get_by_test_id("new-tab").click()
    expect(tabs).to_have_count(before + 1)
    if editor.node_ids():  # a new tab may start with the default graph: clear it by keyboard
        editor.focus_canvas()
        editor.app("app.canvas.selectAll();")
        editor.press("Delete")
    assert editor.node_ids() == set(), "a new tab with everything deleted still has nodes"


def _free_spot(editor: Editor, column_x: float, width: float = 300) -> tuple[float, float]:
    """A page point in graph column [column_x, column_x + width) below every node there."""
    bottom = 0.0
    for node in editor.nodes().values():
        x, y = node["pos"]
        if x < column_x + width and x + node["size"][0] > column_x:
            bottom = max(bottom, y + node["size"][1])
    return editor.graph_to_page([column_x + 10, bottom + 70])


def test_build_txt2img_by_mouse_and_keyboard(editor: Editor) -> None:
    _empty_tab(editor)
    width, _ = editor.canvas_size()
    scale = min(1.0, width / 1500)
    editor.app("app.canvas.setViewport({offset: [20, 40], scale: arg});", scale)
    ids: dict[str, int] = {}
    ids["ckpt"] = editor.add_node("CheckpointLoaderSimple", _free_spot(editor, 0), query="Load Checkpoint")
    ids["latent"] = editor.add_node("EmptyLatentImage", _free_spot(editor, 0), query="empty latent")
    right = max(node["pos"][0] + node["size"][0] for node in editor.nodes().values()) + 60
    ids["pos"] = editor.add_node("CLIPTextEncode", _free_spot(editor, right), query="CLIPTextEncode")
    ids["neg"] = editor.add_node("CLIPTextEncode", _free_spot(editor, right), query="CLIPTextEncode")
    right = max(node["pos"][0] + node["size"][0] for node in editor.nodes().values()) + 60
    ids["sampler"] = editor.add_node("KSampler", _free_spot(editor, right), query="KSampler")
    right = max(node["pos"][0] + node["size"][0] for node in editor.nodes().values()) + 60
    ids["decode"] = editor.add_node("VAEDecode", _free_spot(editor, right), query="vae decode")
    ids["save"] = editor.add_node("SaveImage", _free_spot(editor, right), query="save image")

    def shoot_while_dragging() -> None:
        editor.shot("link-dragging")

    editor.connect(ids["ckpt"], 0, ids["sampler"], "model", before_release=shoot_while_dragging)
    editor.connect(ids["ckpt"], 1, ids["pos"], "clip")
    editor.connect(ids["ckpt"], 1, ids["neg"], "clip")
    editor.connect(ids["pos"], 0, ids["sampler"], "positive")
    editor.connect(ids["neg"], 0, ids["sampler"], "negative")
    editor.connect(ids["latent"], 0, ids["sampler"], "latent_image")
    editor.connect(ids["sampler"], 0, ids["decode"], "samples")
    editor.connect(ids["ckpt"], 2, ids["decode"], "vae")
    editor.connect(ids["decode"], 0, ids["save"], "images")
    assert len(editor.links()) == 9, editor.links()

    editor.type_into_widget(ids["pos"], "text", "a glass bottle landscape")
    editor.type_into_widget(ids["neg"], "text", "text, watermark")
    editor.type_into_widget(ids["sampler"], "seed", "42")
    editor.type_into_widget(ids["latent"], "width", "64")
    editor.shot("txt2img-built")

    info = editor.object_info()
    expected: dict[str, Any] = {}
    links = {
        "sampler": {
            "model": ("ckpt", 0),
            "positive": ("pos", 0),
            "negative": ("neg", 0),
            "latent_image": ("latent", 0),
        },
        "pos": {"clip": ("ckpt", 1)},
        "neg": {"clip": ("ckpt", 1)},
        "decode": {"samples": ("sampler", 0), "vae": ("ckpt", 2)},
        "save": {"images": ("decode", 0)},
    }
    typed = {
        ("pos", "text"): "a glass bottle landscape",
        ("neg", "text"): "text, watermark",
        ("sampler", "seed"): 42,
        ("latent", "width"): 64,
    }
    for key, node_id in ids.items():
        class_type = editor.node(node_id)["type"]
        inputs = expected_widget_inputs(info, class_type)
        inputs.update({name: value for (k, name), value in typed.items() if k == key})
        inputs.update({name: [str(ids[origin]), slot] for name, (origin, slot) in links.get(key, {}).items()})
        expected[str(node_id)] = {"class_type": class_type, "inputs": inputs}
    prompt = editor.prompt()
    assert {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()} == expected
    assert expected[str(ids["ckpt"])]["inputs"]["ckpt_name"] == DEMO_CHECKPOINT
