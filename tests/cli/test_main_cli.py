"""`main.py run` and `main.py convert` end to end, as a user runs them (a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FAILING_PACK = '''
class AlwaysFails:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": ""})}}
    RETURN_TYPES = ("STRING",)
    FUNCTION = "go"
    CATEGORY = "testing"
    def go(self, text):
        raise ValueError("the disk is on fire: " + text)

NODE_CLASS_MAPPINGS = {"AlwaysFails": AlwaysFails}
'''


def run_main(*args: str, base: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(ROOT / "main.py"), *args, "--base-directory", str(base)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=base)


def concat_prompt(b: str = "world") -> dict:
    return {
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "hello"}},
        "2": {"class_type": "StringConcatenate", "inputs": {"string_a": ["1", 0], "string_b": b, "delimiter": ", "}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}, "_meta": {"title": "Show"}},
    }


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "custom_nodes").mkdir()
    return tmp_path


def test_run_api_prompt_prints_progress_and_outputs(base: Path) -> None:
    (base / "wf.json").write_text(json.dumps(concat_prompt()))
    done = run_main("run", "wf.json", base=base)
    assert done.returncode == 0, done.stderr
    assert "node 3 text: hello, world" in done.stdout
    assert "success: 3 node(s) ran" in done.stdout
    assert "[1/3] node" in done.stderr and "PreviewAny 'Show'" in done.stderr


def test_run_accepts_a_saved_post_body_and_ui_workflow(base: Path) -> None:
    (base / "body.json").write_text(json.dumps({"prompt": concat_prompt("there"), "client_id": "x"}))
    done = run_main("run", "body.json", "--quiet", base=base)
    assert done.returncode == 0, done.stderr
    assert "hello, there" in done.stdout
    assert done.stderr == ""

    ui = {
        "version": 0.4,
        "nodes": [
            {"id": 1, "type": "PrimitiveString", "mode": 0, "widgets_values": ["hi"],
             "outputs": [{"name": "STRING", "type": "STRING", "links": [1]}]},
            {"id": 2, "type": "PreviewAny", "mode": 0, "widgets_values": [],
             "inputs": [{"name": "source", "type": "*", "link": 1}]},
            {"id": 3, "type": "Note", "mode": 0, "widgets_values": ["just a note"]},
        ],
        "links": [[1, 1, 0, 2, 0, "STRING"]],
    }  # fmt: skip
    (base / "ui.json").write_text(json.dumps(ui))
    converted = run_main("convert", "ui.json", base=base)
    assert converted.returncode == 0, converted.stderr
    prompt = json.loads(converted.stdout)
    assert prompt["2"]["inputs"] == {"source": ["1", 0]}
    assert "3" not in prompt  # notes are UI-only
    ran = run_main("run", "ui.json", "-q", base=base)
    assert ran.returncode == 0 and "node 2 text: hi" in ran.stdout


def test_invalid_workflow_exits_2_with_every_error_located(base: Path) -> None:
    prompt = concat_prompt()
    prompt["2"]["inputs"]["delimiter"] = ["99", 0]  # link to a node that does not exist
    prompt["1"]["inputs"] = {}  # required input missing
    (base / "bad.json").write_text(json.dumps(prompt))
    done = run_main("run", "bad.json", base=base)
    assert done.returncode == 2
    assert "node 1 (PrimitiveString) input 'value'" in done.stderr
    assert "Required input is missing" in done.stderr
    assert "node 2 (StringConcatenate) input 'delimiter'" in done.stderr and "99" in done.stderr


def test_failing_node_exits_1_naming_node_and_class(base: Path) -> None:
    (base / "custom_nodes" / "failing.py").write_text(FAILING_PACK)
    prompt = {
        "1": {"class_type": "AlwaysFails", "inputs": {"text": "boom"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    }
    (base / "wf.json").write_text(json.dumps(prompt))
    done = run_main("run", "wf.json", base=base)
    assert done.returncode == 1
    assert "node 1 (AlwaysFails) failed" in done.stderr
    assert "ValueError: the disk is on fire: boom" in done.stderr


def test_extra_custom_nodes_dir_is_loaded(base: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    extra = tmp_path_factory.mktemp("more_nodes")
    (extra / "failing.py").write_text(FAILING_PACK)
    prompt = {"1": {"class_type": "AlwaysFails", "inputs": {"text": "x"}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}  # fmt: skip
    (base / "wf.json").write_text(json.dumps(prompt))
    without = run_main("run", "wf.json", base=base)
    assert without.returncode == 2 and "AlwaysFails" in without.stderr  # unknown class
    with_dir = run_main("run", "wf.json", "--custom-nodes-dir", str(extra), base=base)
    assert with_dir.returncode == 1 and "disk is on fire" in with_dir.stderr


def test_unreadable_and_malformed_files_are_clear_errors(base: Path) -> None:
    done = run_main("run", "missing.json", base=base)
    assert done.returncode == 2 and "cannot read workflow file" in done.stderr
    (base / "broken.json").write_text("{not json")
    done = run_main("run", "broken.json", base=base)
    assert done.returncode == 2 and "is not valid JSON" in done.stderr and "line 1" in done.stderr
    (base / "list.json").write_text("[1, 2]")
    done = run_main("convert", "list.json", base=base)
    assert done.returncode == 2 and "must be a JSON object" in done.stderr


def _png_with(texts: dict[str, str]) -> bytes:
    import io

    from PIL import Image

    from nodes.pngmeta import add_png_text

    buffer = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buffer, format="PNG")
    return add_png_text(buffer.getvalue(), texts)


def test_run_a_png_runs_its_embedded_prompt(base: Path) -> None:
    workflow = {"nodes": [], "links": [], "version": 0.4}
    (base / "saved.png").write_bytes(
        _png_with({"prompt": json.dumps(concat_prompt("png")), "workflow": json.dumps(workflow)})
    )
    done = run_main("run", "saved.png", "-q", base=base)
    assert done.returncode == 0, done.stderr
    assert "node 3 text: hello, png" in done.stdout
    converted = run_main("convert", "saved.png", base=base)
    assert json.loads(converted.stdout) == concat_prompt("png")


def test_png_without_a_workflow_is_a_clear_error(base: Path) -> None:
    (base / "plain.png").write_bytes(_png_with({"Comment": "nothing here"}))
    done = run_main("run", "plain.png", base=base)
    assert done.returncode == 2 and "carries no workflow" in done.stderr
