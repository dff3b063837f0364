"""Widgets edited by mouse and keyboard on the canvas: INT/FLOAT (drag, arrows, typed), STRING
multiline typing, COMBO chosen from its searchable list, BOOLEAN toggled by a click."""

from __future__ import annotations

import pytest

from tests.browser.loom_editor import Editor

pytestmark = pytest.mark.browser


def test_number_widgets_drag_arrows_and_typing(editor: Editor) -> None:
    sampler = editor.node_of_type("KSampler")
    assert editor.widget(sampler, "steps") == 20
    # Typed value.
    editor.type_into_widget(sampler, "steps", "7")
    assert editor.widget(sampler, "steps") == 7
    # Arrows: right steps up, left steps down (step 1).
    rect = editor.widget_rect(sampler, "steps")
    middle = rect["y"] + rect["h"] / 2
    editor.click((rect["x"] + rect["w"] - 6, middle))
    assert editor.widget(sampler, "steps") == 8
    editor.click((rect["x"] + 6, middle))
    editor.click((rect["x"] + 6, middle))
    assert editor.widget(sampler, "steps") == 6
    # Drag sideways: right increases, left decreases, and a drag never opens the typing field.
    center = (rect["x"] + rect["w"] / 2, middle)
    editor.drag(center, (center[0] + 90, middle))
    dragged = editor.widget(sampler, "steps")
    assert dragged > 6
    editor.drag(center, (center[0] - 40, middle))
    assert editor.widget(sampler, "steps") < dragged
    assert editor.page.evaluate("() => document.activeElement?.tagName") not in ("INPUT", "TEXTAREA")
    # FLOAT typed, then clamped to the declared max.
    editor.type_into_widget(sampler, "cfg", "6.5")
    assert editor.widget(sampler, "cfg") == 6.5
    editor.type_into_widget(sampler, "denoise", "3")
    assert (
        editor.widget(sampler, "denoise") == editor.object_info()["KSampler"]["input"]["required"]["denoise"][1]["max"]
    )


def test_multiline_text_typing(editor: Editor) -> None:
    encoder = next(node_id for node_id, node in editor.nodes().items() if node["type"] == "CLIPTextEncode")
    editor.click(editor.widget_center(encoder, "text"))
    editor.page.wait_for_function("() => document.activeElement?.tagName === 'TEXTAREA'", timeout=5_000)
    editor.press("Control+A")
    editor.page.keyboard.type("a red fox")
    editor.press("Enter")  # a newline in a multiline field, not a commit
    editor.page.keyboard.type("in the snow")
    editor.focus_canvas()
    assert editor.widget(encoder, "text") == "a red fox\nin the snow"
    assert editor.prompt()[str(encoder)]["inputs"]["text"] == "a red fox\nin the snow"


def test_combo_choice_by_search(editor: Editor) -> None:
    sampler = editor.node_of_type("KSampler")
    options = editor.object_info()["KSampler"]["input"]["required"]["sampler_name"][0]
    choice = "ddpm" if "ddpm" in options else options[-1]
    assert editor.widget(sampler, "sampler_name") != choice
    editor.click(editor.widget_center(sampler, "sampler_name"))
    editor.page.wait_for_function("() => document.activeElement?.tagName === 'INPUT'", timeout=5_000)
    editor.shot("combo-list")
    editor.page.keyboard.type(choice)
    editor.press("Enter")
    assert editor.widget(sampler, "sampler_name") == choice
    # The arrows cycle through the options.
    rect = editor.widget_rect(sampler, "scheduler")
    schedulers = editor.object_info()["KSampler"]["input"]["required"]["scheduler"][0]
    first = editor.widget(sampler, "scheduler")
    editor.click((rect["x"] + rect["w"] - 6, rect["y"] + rect["h"] / 2))
    assert editor.widget(sampler, "scheduler") == schedulers[(schedulers.index(first) + 1) % len(schedulers)]


def test_boolean_toggle(editor: Editor) -> None:
    # Setup through the model: a node with BOOLEAN widgets, the view centred on it.
    node = editor.app("return app.graph.createNode('StringContains', app.objectInfo, {pos: [2000, 2000]}).id;")
    editor.app("app.canvas.setViewport({offset: [-2000 + 80, -2000 + 80], scale: 1});")
    assert editor.widget(node, "case_sensitive") is True
    editor.click(editor.widget_center(node, "case_sensitive"))
    assert editor.widget(node, "case_sensitive") is False
    editor.click(editor.widget_center(node, "case_sensitive"))
    assert editor.widget(node, "case_sensitive") is True
