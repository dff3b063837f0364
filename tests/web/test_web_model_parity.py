"""The web editor's serialiser (web/graph/serialize.js) gives the same API prompt as the server's
converter (execution.workflow) for every saved workflow fixture (spec §9)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from execution.workflow import workflow_to_prompt
from nodes.builtin import builtin_registry

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "execution" / "workflows"
SCRIPT = Path(__file__).with_name("parity_convert.mjs")
CASES = sorted(path.name for path in FIXTURES.glob("*.json"))

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node not found on PATH: the JS model cannot be run")


@pytest.fixture(scope="module")
def js_prompts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    object_info = tmp_path_factory.mktemp("web") / "object_info.json"
    object_info.write_text(json.dumps(builtin_registry().object_info()))
    files = [str(FIXTURES / name) for name in CASES]
    assert NODE is not None
    done = subprocess.run(
        [NODE, str(SCRIPT), str(object_info), *files], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return {Path(name).name: prompt for name, prompt in json.loads(done.stdout).items()}


@pytest.mark.parametrize("name", CASES)
def test_js_prompt_matches_python_converter(name: str, js_prompts: dict[str, Any]) -> None:
    registry = builtin_registry()

    def lookup(class_type: str) -> Any:
        definition = registry.get(class_type)
        return definition.spec() if definition is not None else None

    expected = workflow_to_prompt(json.loads((FIXTURES / name).read_text()), lookup)
    assert expected, f"{name} converted to an empty prompt"
    assert js_prompts[name] == expected
