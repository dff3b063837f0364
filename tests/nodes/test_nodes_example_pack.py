"""The shipped example package loads and its nodes behave as documented."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from core.errors import Interrupted
from core.runtime import NodeRuntime
from nodes.builtin import builtin_registry
from nodes.loader import load_custom_nodes
from nodes.registry import NodeRegistry

CUSTOM_NODES = Path(__file__).resolve().parents[2] / "custom_nodes"
PACK = CUSTOM_NODES / "example_pack"


@pytest.fixture(scope="module")
def loaded() -> tuple[NodeRegistry, Any]:
    registry = builtin_registry()
    reports = load_custom_nodes(registry, [CUSTOM_NODES], disabled=True, whitelist=["example_pack"])
    assert [report.name for report in reports] == ["example_pack"]
    return registry, reports[0]


def test_example_pack_loads_both_forms_and_its_web_folder(loaded: tuple[NodeRegistry, Any]) -> None:
    registry, report = loaded
    assert report.ok, report.error
    assert report.node_errors == {} and report.skipped == []
    assert report.nodes == ["ExampleRepeatText", "ExampleShowText", "ExampleReadTextFile", "ExampleCountWords"]
    assert report.web_directory == (PACK / "web").resolve()
    assert any(path.suffix == ".js" for path in report.web_directory.iterdir())
    info = registry.object_info()
    assert info["ExampleRepeatText"]["display_name"] == "Repeat Text (example)"
    assert info["ExampleShowText"]["output_node"] is True
    assert info["ExampleReadTextFile"]["input"]["required"]["file"][1]["options"] == ["hello.txt"]
    for class_type in report.nodes:
        assert info[class_type]["python_module"] == "custom_nodes.example_pack"


def test_v1_nodes(loaded: tuple[NodeRegistry, Any], run_node: Any) -> None:
    registry, _ = loaded
    repeat = registry["ExampleRepeatText"]
    assert run_node(repeat, {"text": "ab", "times": 3}) == ("ab ab ab",)
    assert run_node(repeat, {"text": "ab", "times": 2, "separator": "-"}) == ("ab-ab",)
    assert repeat.validate({"separator": "a\nb", "times": 2}, None).startswith("separator must be on one line")
    assert repeat.validate({"separator": None}, None) is True
    show = registry["ExampleShowText"]
    assert run_node(show, {"text": "hi"}) == {"ui": {"text": ["hi"]}, "result": ("hi",)}


def test_read_text_file_fingerprint_and_validation(loaded: tuple[NodeRegistry, Any], run_node: Any) -> None:
    registry, _ = loaded
    read = registry["ExampleReadTextFile"]
    spec = read.spec()
    assert spec.has_fingerprint and spec.validation is not None
    assert read.validate({"file": "hello.txt"}, None) is True
    assert "no text file named" in read.validate({"file": "missing.txt"}, None)
    assert "is not a file of" in read.validate({"file": "../__init__.py"}, None)
    assert read.fingerprint({"file": "hello.txt"}) == (PACK / "texts" / "hello.txt").stat().st_mtime_ns
    assert math.isnan(read.fingerprint({"file": "missing.txt"}))
    (text,) = run_node(read, {"file": "hello.txt"})
    assert text == (PACK / "texts" / "hello.txt").read_text(encoding="utf-8")


def test_count_words_reports_progress_and_stops_on_interrupt(loaded: tuple[NodeRegistry, Any], run_node: Any) -> None:
    registry, _ = loaded
    count = registry["ExampleCountWords"]
    progress: list[tuple[Any, ...]] = []
    runtime = NodeRuntime(node_id="4", class_type="ExampleCountWords", report_progress=lambda *a: progress.append(a))
    result = run_node(count, {"text": "a bb ccc\n\ndd", "min_length": 2}, runtime)
    assert result == (3, "3 words in 3 lines")
    assert progress == [(1, 3, None), (2, 3, None), (3, 3, None)]

    def interrupted() -> None:
        raise Interrupted("stop")

    stopping = NodeRuntime(node_id="4", class_type="ExampleCountWords", interrupt_check=interrupted)
    with pytest.raises(Interrupted):
        run_node(count, {"text": "a\nb", "min_length": 1}, stopping)
