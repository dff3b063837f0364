"""What a running node sees in its NodeRuntime."""

from __future__ import annotations

from core.runtime import current
from execution.executor import Executor
from nodes.compat import v1_definitions


class ReadsRuntime:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "run"

    def run(self):
        runtime = current()
        return {"ui": {"seen": [runtime.extra_data.get("preview_method"), runtime.services.get("answer")]}}


def test_extra_data_and_services_reach_the_node() -> None:
    registry = v1_definitions({"ReadsRuntime": ReadsRuntime})
    executor = Executor(registry, services={"answer": 42})
    prompt = {"1": {"class_type": "ReadsRuntime", "inputs": {}}}
    result = executor.execute(prompt, "p", ["1"], extra_data={"preview_method": "taesd"})
    assert result.outputs["1"] == {"seen": ["taesd", 42]}
