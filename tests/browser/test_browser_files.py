"""Workflow files in the editor: a PNG the run saved, dropped on the canvas, gives the same graph
back; ComfyUI UI-format workflows (0.4 and 1.0) load and convert to the same API prompt as the
server's converter (`main.py convert`, execution/workflow.py); open tabs come back after a reload."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from nodes.pngmeta import read_png_metadata
from tests.browser.loom_editor import ROOT, Editor
from tests.server.live_server import LiveServer

pytestmark = pytest.mark.browser

UI_WORKFLOWS = sorted((ROOT / "tests" / "execution" / "workflows").glob("*.json"))


def _server_conversion(server: LiveServer, path: Path) -> dict[str, Any]:
    """The API prompt Loom's own converter makes of a UI workflow, with the test server's nodes."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "convert", str(path), "--base-directory", str(server.base)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"main.py convert {path.name} failed:\n{done.stderr[-2000:]}"
    return json.loads(done.stdout)


def test_drop_png_with_workflow_gives_the_same_graph_back(editor: Editor) -> None:
    ids = editor.small_default_graph(steps=2)
    editor.set_widget(ids["sampler"], "seed", "fixed", kind="control")
    queued = editor.app("return await app.queuePrompt();")
    item = editor.server.wait_history(queued["prompt_id"], timeout=120)
    assert item["status"]["status_str"] == "success", item["status"]
    image = item["outputs"][str(ids["save"])]["images"][0]
    png = editor.server.view(image["filename"], image["subfolder"], image["type"])
    embedded = read_png_metadata(png)
    assert embedded["workflow"] is not None and embedded["prompt"] is not None, "the saved PNG carries no workflow"
    expected_nodes = sorted(embedded["workflow"]["nodes"], key=lambda node: node["id"])
    sent_prompt = embedded["prompt"]

    # Replace the graph by something else, then drop the PNG on the canvas.
    editor.app("app.graph.removeNode(arg);", ids["save"])
    editor.drop_file(image["filename"], png, "image/png")
    editor.page.wait_for_function(
        "(count) => window.loom.app.graph.nodes.size === count", arg=len(expected_nodes), timeout=10_000
    )
    state = editor.state()
    assert state["nodes"] == expected_nodes
    assert state["links"] == sorted(
        embedded["workflow"]["links"], key=lambda link: link[0] if isinstance(link, list) else link["id"]
    )
    prompt = editor.prompt()
    assert {k: (v["class_type"], v["inputs"]) for k, v in prompt.items()} == {
        k: (v["class_type"], v["inputs"]) for k, v in sent_prompt.items()
    }
    editor.shot("png-dropped")


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=[path.stem for path in UI_WORKFLOWS])
def test_load_comfyui_workflow_matches_server_conversion(editor: Editor, path: Path) -> None:
    workflow = json.loads(path.read_text())
    editor.open_file(path)
    editor.page.wait_for_function(
        "(count) => window.loom.app.graph.nodes.size === count", arg=len(workflow["nodes"]), timeout=10_000
    )
    assert {node["id"] for node in editor.nodes().values()} == {int(node["id"]) for node in workflow["nodes"]}
    assert editor.prompt() == _server_conversion(editor.server, path)


def test_drop_workflow_json(editor: Editor) -> None:
    path = ROOT / "tests" / "execution" / "workflows" / "default_txt2img_v1.json"
    workflow = json.loads(path.read_text())
    editor.drop_file(path.name, path.read_bytes(), "application/json")
    editor.page.wait_for_function(
        "(count) => window.loom.app.graph.nodes.size === count", arg=len(workflow["nodes"]), timeout=10_000
    )
    assert editor.prompt() == _server_conversion(editor.server, path)


def test_tabs_restored_after_reload(editor: Editor) -> None:
    tabs = editor.page.get_by_test_id("tab")
    expect(tabs).to_have_count(1)
    first_state = editor.state()
    editor.page.get_by_test_id("new-tab").click()
    expect(tabs).to_have_count(2)
    marker = "tab-restore-marker"
    path = ROOT / "tests" / "execution" / "workflows" / "reroutes_v04.json"
    workflow = json.loads(path.read_text())
    workflow["nodes"][0]["title"] = marker
    editor.load(workflow)
    second_state = editor.state()
    assert second_state != first_state
    active = tabs.evaluate_all("(items) => items.findIndex((t) => t.classList.contains('active'))")
    assert active == 1
    # Let the app persist (whatever storage it uses; localStorage is checked first).
    try:
        editor.page.wait_for_function(
            "(m) => Object.keys(localStorage).some((k) => (localStorage.getItem(k) || '').includes(m))",
            arg=marker,
            timeout=5_000,
        )
    except Exception:
        editor.page.wait_for_timeout(1_000)

    editor.reload()
    expect(tabs).to_have_count(2)
    assert tabs.evaluate_all("(items) => items.findIndex((t) => t.classList.contains('active'))") == 1
    assert editor.state() == second_state
    tabs.nth(0).click()
    editor.page.wait_for_function(
        "(count) => window.loom.app.graph.nodes.size === count", arg=len(first_state["nodes"])
    )
    assert editor.state() == first_state


def test_save_to_server_reopen_and_export_api(editor: Editor) -> None:
    sampler = editor.node_of_type("KSampler")
    editor.type_into_widget(sampler, "steps", "13")
    name = "browser-save-test"
    editor.focus_canvas()
    editor.press("Control+S")  # the first save asks for a name
    editor.page.wait_for_function("() => document.activeElement?.tagName === 'INPUT'", timeout=5_000)
    editor.press("Control+A")
    editor.page.keyboard.type(name)
    editor.press("Enter")
    saved_name = f"{name}.json"
    status, body = 0, None
    for _ in range(100):
        status, body = editor.server.request("GET", f"/userdata/{quote('workflows/' + saved_name, safe='')}")
        if status == 200:
            break
        editor.page.wait_for_timeout(50)
    assert status == 200, f"Ctrl+S saved no workflows/{saved_name} on the server: {status} {body!r}"
    saved = json.loads(body) if isinstance(body, bytes) else body
    expected = editor.state()
    assert sorted(saved["nodes"], key=lambda node: node["id"]) == expected["nodes"]

    with editor.page.expect_download() as download:
        editor.page.get_by_test_id("export-api-button").click()
    exported = json.loads(Path(download.value.path()).read_text())
    assert exported == editor.prompt()
    assert exported[str(sampler)]["inputs"]["steps"] == 13

    # From another tab, reopen it from the server's list in the Open dialog.
    editor.page.get_by_test_id("new-tab").click()
    editor.app("app.graph.removeNode(arg);", sampler)
    editor.page.get_by_test_id("load-button").click()
    editor.page.locator(f'[data-testid="workflow-file"][data-name="{saved_name}"]').click()
    editor.page.wait_for_function("(id) => window.loom.app.graph.nodes.has(id)", arg=sampler, timeout=10_000)
    assert editor.state()["nodes"] == expected["nodes"]
