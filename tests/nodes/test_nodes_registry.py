"""NodeRegistry: the executor's mapping, clash rules, object_info."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from core.errors import EngineError
from core.runtime import NodeRuntime
from nodes.api import DeclarativeNode, Int, Node, NodeSpec, Output
from nodes.registry import BUILTIN, NodeRegistry


def _v1(return_type: str = "INT", category: str = "tests") -> type:
    class V1:
        CATEGORY = category
        RETURN_TYPES = (return_type,)
        FUNCTION = "go"

        @classmethod
        def INPUT_TYPES(cls) -> dict[str, Any]:
            return {"required": {"value": ("INT", {"default": 1})}}

        def go(self, value: int) -> tuple[Any]:
            return (value,)

    return V1


class Declared(Node):
    spec = NodeSpec(id="Declared", display_name="Declared Node", inputs=[Int("value")], outputs=[Output("INT")])

    def run(self, ctx: NodeRuntime, value: int) -> tuple[int]:
        return (value,)


def test_registry_is_a_mapping_of_definitions() -> None:
    registry = NodeRegistry()
    registry.add_v1_mappings({"A": _v1()}, {"A": "Node A"})
    registry.add_declarative([Declared])
    assert list(registry) == ["A", "Declared"]
    assert len(registry) == 2 and "A" in registry and "Missing" not in registry
    assert registry["Declared"].class_type == "Declared"
    assert registry.get("Missing") is None
    assert dict(registry.display_names) == {"A": "Node A", "Declared": "Declared Node"}
    assert dict(registry.sources) == {"A": BUILTIN, "Declared": BUILTIN}


def test_builtins_win_over_packages(caplog: pytest.LogCaptureFixture) -> None:
    registry = NodeRegistry()
    builtin = _v1("INT")
    registry.add_v1_mappings({"Shared": builtin})
    with caplog.at_level(logging.WARNING):
        report = registry.add_v1_mappings({"Shared": _v1("STRING"), "Own": _v1()}, source="pack_a")
    assert report.skipped == ["Shared"] and report.added == ["Own"]
    assert registry["Shared"].cls is builtin  # type: ignore[attr-defined]
    assert registry.sources["Shared"] == BUILTIN
    assert "built-in wins" in caplog.text and "pack_a" in caplog.text


def test_a_later_package_overwrites_an_earlier_one_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    registry = NodeRegistry()
    first, second = _v1("INT"), _v1("STRING")
    registry.add_v1_mappings({"Shared": first}, source="pack_a")
    with caplog.at_level(logging.WARNING):
        report = registry.add_v1_mappings({"Shared": second}, source="pack_b")
    assert report.added == ["Shared"]
    assert registry["Shared"].cls is second  # type: ignore[attr-defined]
    assert registry.sources["Shared"] == "pack_b"
    assert "pack_b" in caplog.text and "pack_a" in caplog.text and "later package wins" in caplog.text


def test_a_builtin_registered_after_a_package_still_wins() -> None:
    registry = NodeRegistry()
    registry.add_v1_mappings({"Shared": _v1("STRING")}, source="pack_a")
    builtin = _v1("INT")
    registry.add_v1_mappings({"Shared": builtin})
    assert registry["Shared"].cls is builtin  # type: ignore[attr-defined]
    assert registry.sources["Shared"] == BUILTIN


def test_the_same_builtin_twice_is_a_bug() -> None:
    registry = NodeRegistry()
    registry.add_declarative([Declared])
    with pytest.raises(EngineError, match="'Declared' is registered twice"):
        registry.add(DeclarativeNode(Declared))


def test_contract_breaking_classes_fail_alone() -> None:
    class NoComma:
        RETURN_TYPES = "INT"
        FUNCTION = "go"

        @classmethod
        def INPUT_TYPES(cls) -> dict[str, Any]:
            return {"required": {}}

        def go(self) -> tuple[int]:
            return (1,)

    class ExplodingInputs:
        RETURN_TYPES = ("INT",)
        FUNCTION = "go"

        @classmethod
        def INPUT_TYPES(cls) -> dict[str, Any]:
            raise KeyError("checkpoints")

        def go(self) -> tuple[int]:
            return (1,)

    class NotANode:
        pass

    registry = NodeRegistry()
    report = registry.add_v1_mappings(
        {"Good": _v1(), "NoComma": NoComma, "Exploding": ExplodingInputs, "NotANode": NotANode}, source="pack"
    )
    assert report.added == ["Good"]
    assert set(report.failed) == {"NoComma", "Exploding", "NotANode"}
    assert "trailing comma" in report.failed["NoComma"]
    assert "KeyError" in report.failed["Exploding"]
    assert list(registry) == ["Good"]

    class BadDeclared(Node):
        spec = NodeSpec(id="BadDeclared", inputs=[Int("a")])

        def run(self, ctx: NodeRuntime) -> tuple[()]:
            return ()

    declared_report = registry.add_declarative([Declared, BadDeclared, 42], source="pack")  # type: ignore[list-item]
    assert declared_report.added == ["Declared"]
    assert set(declared_report.failed) == {"BadDeclared", "42"}


def test_object_info_skips_nodes_whose_spec_breaks_later(caplog: pytest.LogCaptureFixture) -> None:
    state = {"broken": False}

    class Flaky:
        CATEGORY = "tests"
        RETURN_TYPES = ("INT",)
        FUNCTION = "go"

        @classmethod
        def INPUT_TYPES(cls) -> dict[str, Any]:
            if state["broken"]:
                raise FileNotFoundError("models/checkpoints")
            return {"required": {}}

        def go(self) -> tuple[int]:
            return (1,)

    registry = NodeRegistry()
    registry.add_v1_mappings({"Flaky": Flaky, "Fine": _v1()}, python_module="custom_nodes.pack", source="pack")
    registry.add_declarative([Declared])
    info = registry.object_info()
    assert list(info) == ["Flaky", "Fine", "Declared"]
    assert info["Fine"]["python_module"] == "custom_nodes.pack"
    assert info["Declared"]["display_name"] == "Declared Node"
    assert registry.object_info_one("Fine") == {"Fine": info["Fine"]}
    assert registry.object_info_one("Nope") == {}

    state["broken"] = True
    with caplog.at_level(logging.ERROR):
        info = registry.object_info()
    assert list(info) == ["Fine", "Declared"]
    assert registry.object_info_one("Flaky") == {}
    assert "Flaky" in caplog.text


def test_bad_export_shapes_are_contract_errors() -> None:
    registry = NodeRegistry()
    with pytest.raises(EngineError, match="NODE_CLASS_MAPPINGS must be a dict"):
        registry.add_v1_mappings([_v1()])  # type: ignore[arg-type]
    with pytest.raises(EngineError, match="NODES must be a list"):
        registry.add_declarative(Declared)  # type: ignore[arg-type]
