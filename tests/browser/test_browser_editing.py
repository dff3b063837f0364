"""Editing by mouse and keyboard on the first-start graph: undo/redo restore exactly, copy/paste with
and without links, Delete, Ctrl+B bypass, Ctrl+M mute, Ctrl+G group."""

from __future__ import annotations

import pytest

from tests.browser.loom_editor import Editor

pytestmark = pytest.mark.browser

BYPASS, MUTE, ALWAYS = 4, 2, 0


def test_undo_redo_restore_exactly(editor: Editor) -> None:
    sampler = editor.node_of_type("KSampler")
    save = editor.node_of_type("SaveImage")
    snapshots = [editor.state()]

    # 1. move a node by its title
    start = editor.title_point(sampler)
    editor.drag(start, (start[0] + 60, start[1] + 45))
    snapshots.append(editor.state())
    # 2. add a node from the search
    added = editor.add_node("VAEDecode", editor.empty_point(), query="VAEDecode")
    snapshots.append(editor.state())
    # 3. connect it
    editor.connect(sampler, 0, added, "samples")
    snapshots.append(editor.state())
    # 4. type a widget value
    editor.type_into_widget(sampler, "steps", "9")
    snapshots.append(editor.state())
    # 5. delete a node (and its link)
    editor.select_node(save)
    editor.press("Delete")
    snapshots.append(editor.state())
    for before, after in zip(snapshots, snapshots[1:], strict=False):
        assert before != after, "an action did not change the graph"

    editor.focus_canvas()
    for step in range(len(snapshots) - 1, 0, -1):
        editor.press("Control+Z")
        assert editor.state() == snapshots[step - 1], f"undo #{len(snapshots) - step} did not restore the graph exactly"
    assert editor.app("return app.history.canUndo;") is False
    for step in range(1, len(snapshots)):
        editor.press("Control+Y")
        assert editor.state() == snapshots[step], f"redo #{step} did not restore the graph exactly"
    editor.press("Control+Z")
    editor.press("Control+Shift+Z")  # the other redo shortcut
    assert editor.state() == snapshots[-1]


def test_copy_paste_with_and_without_links(editor: Editor) -> None:
    sampler = editor.node_of_type("KSampler")
    original = editor.node(sampler)
    feeds = {inp["name"]: editor.input_link(sampler, inp["name"]) for inp in original["inputs"]}

    editor.select_node(sampler)
    editor.press("Control+C")
    before = editor.node_ids()
    editor.page.mouse.move(*editor.empty_point())
    editor.press("Control+V")
    pasted = editor.node_ids() - before
    assert len(pasted) == 1, pasted
    copy = editor.node(pasted.pop())
    assert copy["type"] == "KSampler" and copy["widgets_values"] == original["widgets_values"]
    assert all(inp["link"] is None for inp in copy["inputs"]), "Ctrl+V kept input links"

    before = editor.node_ids()
    editor.page.mouse.move(*editor.empty_point())
    editor.press("Control+Shift+V")
    pasted = editor.node_ids() - before
    assert len(pasted) == 1, pasted
    linked = pasted.pop()
    for name, feed in feeds.items():
        link = editor.input_link(linked, name)
        assert link is not None and feed is not None
        assert (link["origin_id"], link["origin_slot"]) == (feed["origin_id"], feed["origin_slot"]), name
    assert editor.input_link(sampler, "model") == feeds["model"], "the original lost its link"

    # Two connected nodes: the link between them is always copied, the one from outside is not.
    decode, save = editor.node_of_type("VAEDecode"), editor.node_of_type("SaveImage")
    editor.select_node(decode)
    editor.select_node(save, additive=True)
    editor.press("Control+C")
    before = editor.node_ids()
    editor.page.mouse.move(*editor.empty_point())
    editor.press("Control+V")
    pasted = editor.node_ids() - before
    types = {editor.node(node_id)["type"]: node_id for node_id in pasted}
    assert sorted(types) == ["SaveImage", "VAEDecode"]
    inner = editor.input_link(types["SaveImage"], "images")
    assert inner is not None and inner["origin_id"] == types["VAEDecode"]
    assert editor.input_link(types["VAEDecode"], "samples") is None


def test_delete_bypass_mute_and_group(editor: Editor) -> None:
    sampler = editor.node_of_type("KSampler")
    save = editor.node_of_type("SaveImage")
    links = len(editor.links())

    editor.select_node(save)
    editor.press("Delete")
    assert save not in editor.node_ids()
    assert len(editor.links()) == links - 1
    editor.press("Control+Z")
    assert save in editor.node_ids()

    editor.select_node(sampler)
    editor.press("Control+B")
    assert editor.node(sampler)["mode"] == BYPASS
    assert str(sampler) not in editor.prompt()
    editor.shot("bypassed-node")
    editor.press("Control+B")
    assert editor.node(sampler)["mode"] == ALWAYS
    editor.press("Control+M")
    assert editor.node(sampler)["mode"] == MUTE
    editor.press("Control+M")
    assert editor.node(sampler)["mode"] == ALWAYS

    decode = editor.node_of_type("VAEDecode")
    editor.select_node(decode)
    editor.select_node(save, additive=True)
    groups = len(editor.state()["groups"])
    editor.press("Control+G")
    state = editor.state()
    assert len(state["groups"]) == groups + 1
    x, y, w, h = state["groups"][-1]["bounding"]
    for node_id in (decode, save):
        node = editor.node(node_id)
        (nx, ny), (nw, nh) = node["pos"], node["size"]
        assert x <= nx and y <= ny and nx + nw <= x + w and ny + nh <= y + h, (
            f"group {state['groups'][-1]} misses node {node_id}"
        )
    editor.shot("group")
