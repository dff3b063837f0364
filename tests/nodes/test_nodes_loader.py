"""Custom package loading: isolation, failures, ordering, flags, web folders, prestartup."""

from __future__ import annotations

import logging
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from nodes.builtin import build_registry, builtin_registry
from nodes.loader import discover_packages, load_custom_nodes, run_prestartup_scripts
from nodes.registry import NodeRegistry


def _write(root: Path, relative: str, source: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


def _v1_module(class_type: str, value: Any, extra: str = "") -> str:
    return f"""
        class Node:
            CATEGORY = "tests"
            RETURN_TYPES = ("STRING",)
            FUNCTION = "go"

            @classmethod
            def INPUT_TYPES(cls):
                return {{"required": {{}}}}

            def go(self):
                return ({value!r},)

        NODE_CLASS_MAPPINGS = {{{class_type!r}: Node}}
        {extra}
    """


def test_fixture_folder_loads_good_packages_and_reports_bad_ones(
    packages_dir: Path, run_node: Any, caplog: pytest.LogCaptureFixture
) -> None:
    registry = NodeRegistry()
    with caplog.at_level(logging.INFO):
        reports = load_custom_nodes(registry, [packages_dir])
    by_name = {report.name: report for report in reports}
    # sorted order; .disabled, _private, folders without __init__.py and non-.py files are skipped
    assert [report.name for report in reports] == [
        "broken_pack",
        "contract_pack",
        "exiting_pack",
        "good_pack",
        "single_file_nodes",
    ]

    good = by_name["good_pack"]
    assert good.ok and good.error is None
    assert good.nodes == ["GoodShout", "GoodDeclared"]
    assert good.web_directory == (packages_dir / "good_pack" / "js").resolve()
    assert good.module_name == "loom_custom_nodes.good_pack"
    assert run_node(registry["GoodShout"], {"text": "hey"}) == ("HEY!",)
    assert run_node(registry["GoodDeclared"], {"value": 4}) == (8,)  # relative imports resolved
    assert registry.sources["GoodShout"] == "good_pack"
    assert registry.display_names["GoodShout"] == "Good Shout"
    assert registry.object_info()["GoodDeclared"]["python_module"] == "custom_nodes.good_pack"

    single = by_name["single_file_nodes"]
    assert single.ok and single.nodes == ["SingleFileEcho"] and single.web_directory is None
    assert run_node(registry["SingleFileEcho"], {"value": 7}) == (7,)

    broken = by_name["broken_pack"]
    assert not broken.ok and broken.nodes == []
    assert "RuntimeError: broken_pack cannot find its model files" in broken.error
    assert "Traceback" in broken.error and "__init__.py" in broken.error

    exiting = by_name["exiting_pack"]
    assert not exiting.ok and "SystemExit: 3" in exiting.error

    contract = by_name["contract_pack"]
    assert contract.ok and contract.nodes == ["ContractOk"]
    assert set(contract.node_errors) == {"ContractNoComma", "ContractBadRun"}
    assert "trailing comma" in contract.node_errors["ContractNoComma"]
    assert "requires 'value'" in contract.node_errors["ContractBadRun"]

    assert set(registry) == {"GoodShout", "GoodDeclared", "SingleFileEcho", "ContractOk"}
    # failed packages leave nothing behind in sys.modules
    assert "loom_custom_nodes.broken_pack" not in sys.modules
    assert "Import times for custom nodes:" in caplog.text
    assert "(IMPORT FAILED): " + str(packages_dir.resolve() / "broken_pack") in caplog.text


def test_relative_imports_use_the_package_being_loaded_not_a_previous_one(tmp_path: Path) -> None:
    # Two loads of a package with the same name from different places (tests, reloads): the
    # second must import its own submodules, not reuse the first one's from sys.modules.
    for version in ("one", "two"):
        root = tmp_path / version
        _write(root, "pack/__init__.py", "from .values import NODE_CLASS_MAPPINGS\n")
        _write(root, "pack/values.py", _v1_module("Versioned", version))
        registry = NodeRegistry()
        (report,) = load_custom_nodes(registry, [root])
        assert report.ok, report.error
        assert registry["Versioned"].execute(registry["Versioned"].create(), {}) == (version,)


def test_import_isolation_two_packages_never_share_module_state(tmp_path: Path) -> None:
    for name in ("pack_a", "pack_b"):
        _write(tmp_path, f"{name}/__init__.py", "from .state import NODE_CLASS_MAPPINGS\n")
        _write(tmp_path, f"{name}/state.py", _v1_module(f"Node_{name}", name))
    registry = NodeRegistry()
    reports = load_custom_nodes(registry, [tmp_path])
    assert [report.ok for report in reports] == [True, True]
    assert sys.modules["loom_custom_nodes.pack_a.state"] is not sys.modules["loom_custom_nodes.pack_b.state"]
    assert registry["Node_pack_b"].execute(registry["Node_pack_b"].create(), {}) == ("pack_b",)


def test_later_package_wins_a_clash_and_builtins_always_win(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write(tmp_path, "a_pack.py", _v1_module("Shared", "from a"))
    _write(tmp_path, "b_pack.py", _v1_module("Shared", "from b"))
    _write(tmp_path, "c_pack.py", _v1_module("StringConcatenate", "impostor"))
    registry = builtin_registry()
    builtin_concat = registry["StringConcatenate"]
    with caplog.at_level(logging.WARNING):
        reports = load_custom_nodes(registry, [tmp_path])
    assert registry.sources["Shared"] == "b_pack"
    assert registry["Shared"].execute(registry["Shared"].create(), {}) == ("from b",)
    assert registry["StringConcatenate"] is builtin_concat
    assert reports[2].ok and reports[2].skipped == ["StringConcatenate"] and reports[2].nodes == []
    assert "later package wins" in caplog.text and "built-in wins" in caplog.text


def test_disabled_loads_only_whitelisted_packages(tmp_path: Path) -> None:
    _write(tmp_path, "keep/__init__.py", _v1_module("Kept", 1))
    _write(tmp_path, "drop/__init__.py", _v1_module("Dropped", 2))
    _write(tmp_path, "single.py", _v1_module("Single", 3))

    registry = NodeRegistry()
    reports = load_custom_nodes(registry, [tmp_path], disabled=True, whitelist=["keep", "single.py"])
    assert [report.name for report in reports] == ["keep", "single"]
    assert set(registry) == {"Kept", "Single"}

    nothing = NodeRegistry()
    assert load_custom_nodes(nothing, [tmp_path], disabled=True) == [] and len(nothing) == 0

    # without `disabled` the whitelist restricts nothing (ComfyUI's flag semantics)
    everything = NodeRegistry()
    load_custom_nodes(everything, [tmp_path], whitelist=["keep"])
    assert set(everything) == {"Kept", "Dropped", "Single"}


def test_several_folders_load_in_order_and_same_names_get_distinct_modules(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    _write(first, "pack/__init__.py", _v1_module("First", 1))
    _write(second, "pack/__init__.py", _v1_module("Second", 2))
    registry = NodeRegistry()
    reports = load_custom_nodes(registry, [first, tmp_path / "missing", second])
    assert [report.path for report in reports] == [(first / "pack").resolve(), (second / "pack").resolve()]
    assert [report.module_name for report in reports] == ["loom_custom_nodes.pack", "loom_custom_nodes.pack_2"]
    assert set(registry) == {"First", "Second"}


def test_odd_package_names_are_sanitised(tmp_path: Path) -> None:
    _write(tmp_path, "ComfyUI-Some.Pack/__init__.py", _v1_module("Odd", 1))
    _write(tmp_path, "3d-tools.py", _v1_module("ThreeD", 2))
    registry = NodeRegistry()
    reports = load_custom_nodes(registry, [tmp_path])
    assert [report.module_name for report in reports] == [
        "loom_custom_nodes._3d_tools",
        "loom_custom_nodes.ComfyUI_Some_Pack",
    ]
    assert all(report.ok for report in reports)
    assert registry.object_info()["Odd"]["python_module"] == "custom_nodes.ComfyUI-Some.Pack"


def test_web_directory_from_pyproject_and_missing_web_folders(tmp_path: Path) -> None:
    _write(tmp_path, "tomlweb/__init__.py", _v1_module("TomlWeb", 1))
    _write(tmp_path, "tomlweb/pyproject.toml", '[project]\nname = "x"\n\n[tool.comfy]\nweb = "frontend"\n')
    _write(tmp_path, "tomlweb/frontend/main.js", "// js\n")
    _write(tmp_path, "nowebdir/__init__.py", _v1_module("NoWeb", 1, 'WEB_DIRECTORY = "./missing"'))
    reports = {report.name: report for report in load_custom_nodes(NodeRegistry(), [tmp_path])}
    assert reports["tomlweb"].web_directory == (tmp_path / "tomlweb" / "frontend").resolve()
    assert reports["nowebdir"].ok and reports["nowebdir"].web_directory is None


def test_package_without_nodes_is_reported(tmp_path: Path) -> None:
    _write(tmp_path, "empty/__init__.py", 'WEB_DIRECTORY = "web"\n')
    _write(tmp_path, "empty/web/a.js", "// js\n")
    _write(tmp_path, "v3/__init__.py", "async def comfy_entrypoint():\n    return None\n")
    _write(tmp_path, "badshape/__init__.py", "NODE_CLASS_MAPPINGS = ['x']\nNODES = []\n")
    reports = {report.name: report for report in load_custom_nodes(NodeRegistry(), [tmp_path])}
    assert not reports["empty"].ok and "neither NODE_CLASS_MAPPINGS nor NODES" in reports["empty"].error
    assert reports["empty"].web_directory == (tmp_path / "empty" / "web").resolve()
    assert "comfy_entrypoint" in reports["v3"].error
    assert not reports["badshape"].ok and "NODE_CLASS_MAPPINGS must be a dict" in reports["badshape"].error


def test_prestartup_scripts_run_before_imports_and_their_errors_are_contained(tmp_path: Path) -> None:
    log_file = tmp_path / "order.log"
    record = f"open({str(log_file)!r}, 'a').write"
    _write(tmp_path, "early/prestartup_script.py", f"{record}('prestartup early\\n')\n")
    _write(tmp_path, "early/__init__.py", f"{record}('import early\\n')\n" + textwrap.dedent(_v1_module("Early", 1)))
    _write(tmp_path, "late/prestartup_script.py", "raise ValueError('prestartup exploded')\n")
    _write(tmp_path, "late/__init__.py", f"{record}('import late\\n')\n" + textwrap.dedent(_v1_module("Late", 2)))

    registry = NodeRegistry()
    reports = load_custom_nodes(registry, [tmp_path])
    assert log_file.read_text().splitlines() == ["prestartup early", "import early", "import late"]
    assert all(report.ok for report in reports) and set(registry) == {"Early", "Late"}

    prestartup = run_prestartup_scripts([tmp_path])
    assert [(report.name, report.ok) for report in prestartup] == [("early", True), ("late", False)]
    assert "ValueError: prestartup exploded" in prestartup[1].error

    log_file.unlink()
    load_custom_nodes(NodeRegistry(), [tmp_path], run_prestartup=False)
    assert log_file.read_text().splitlines() == ["import early", "import late"]


def test_discover_packages_lists_what_would_load(packages_dir: Path, tmp_path: Path) -> None:
    names = [name for name, _ in discover_packages([packages_dir])]
    assert names == ["broken_pack", "contract_pack", "exiting_pack", "good_pack", "single_file_nodes"]
    assert discover_packages([tmp_path / "nope"]) == []


def test_build_registry_combines_builtins_and_packages(packages_dir: Path) -> None:
    registry, reports = build_registry([packages_dir])
    assert "StringConcatenate" in registry and "GoodShout" in registry
    assert registry.sources["PrimitiveInt"] == "builtin"
    assert len(reports) == 5

    registry, reports = build_registry([packages_dir], disable_custom_nodes=True, whitelist=["single_file_nodes"])
    assert [report.name for report in reports] == ["single_file_nodes"]
    assert "GoodShout" not in registry and "SingleFileEcho" in registry
