"""Golden parity with ComfyUI: every workflow in shared/golden/workflows/ through the product path.

The path a user's prompt takes: a base directory with models/checkpoints/sd15_random.safetensors
(the recipe's full-size random SD1.5 file, shared/golden/README.md) and input/img2img_input.png,
the built-in registry and services as main.py builds them, validate_prompt, then the Executor.
Every SaveLatent node's file is compared with ComfyUI's latent for that node
(`latents/<case>_<node>_0.latent.safetensors`, key `latent_tensor`):
max|ours - ref| / max|ref| <= 1e-3 (the README's tolerance; a wrong layer, schedule or noise gives
errors of order 1, a correct implementation about 1e-5). `pytest -s` prints the measured errors;
they are also recorded as junit properties.

One test also runs `python main.py run <txt2img workflow>` as a subprocess against the same base
directory and checks the PNG it writes (and the `prompt` text chunk inside it) and its latent.

The checkpoint is generated once into the test cache (tests/utils/checkpoints.py, ~40 s) and the
engine (registry, services, executor) is shared by the module, so the checkpoint loads once and
the text encodings are cached between workflows, as they would be on a server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.utils.shared import GOLDEN

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-3
CHECKPOINT_NAME = "sd15_random.safetensors"
INPUT_IMAGE = "img2img_input.png"
CLI_CASE = "txt2img_euler_normal"

if not (GOLDEN / "workflows").is_dir():
    pytest.skip(
        f"the shared golden folder is absent ({GOLDEN}/workflows not found); set LOOM_SHARED_DIR or "
        "LOOM_GOLDEN_DIR to run the parity tests",
        allow_module_level=True,
    )

CASES = sorted(path.stem for path in (GOLDEN / "workflows").glob("*.json"))


def load_workflow(case: str) -> dict[str, Any]:
    return json.loads((GOLDEN / "workflows" / f"{case}.json").read_text(encoding="utf-8"))


def save_latent_nodes(prompt: dict[str, Any]) -> list[str]:
    return sorted(node_id for node_id, node in prompt.items() if node["class_type"] == "SaveLatent")


def show(line: str) -> None:
    """The measured figure on the terminal with `pytest -s` (captured, so silent, otherwise)."""
    print("\n" + line)  # noqa: T201 -- the parity figures are this test's report


def relative_error(ours: Any, ref: Any) -> float:
    """max|ours - ref| / max|ref| (the golden README's measure)."""
    if tuple(ours.shape) != tuple(ref.shape):
        raise AssertionError(f"latent shape {tuple(ours.shape)}, ComfyUI's is {tuple(ref.shape)}")
    ours, ref = ours.double(), ref.double()
    return float((ours - ref).abs().max() / ref.abs().max())


def golden_latent(case: str, node_id: str) -> Any:
    from safetensors.torch import load_file

    path = GOLDEN / "latents" / f"{case}_{node_id}_0.latent.safetensors"
    if not path.is_file():
        raise AssertionError(f"{case}: no golden latent for SaveLatent node {node_id} ({path.name} missing)")
    return load_file(str(path))["latent_tensor"]


def saved_latent(output_dir: Path, ui: dict[str, Any], where: str) -> Any:
    """The latent a SaveLatent node wrote, found through its ui output (as the editor would)."""
    from safetensors.torch import load_file

    entries = ui.get("latents") or []
    if len(entries) != 1:
        raise AssertionError(f"{where}: expected one saved latent in the ui output, got {ui}")
    entry = entries[0]
    path = output_dir / entry.get("subfolder", "") / entry["filename"]
    assert path.is_file(), f"{where}: SaveLatent reported {path}, which does not exist"
    return load_file(str(path))["latent_tensor"]


# -- the product's engine, once per module -----------------------------------------------------


@dataclass
class Engine:
    base: Path
    config: Any
    services: dict[str, Any]
    registry: Any
    executor: Any


def link_model(source: Path, target: Path) -> None:
    """A hard link to the cached checkpoint (no 2 GB copy), or a copy across file systems.

    Not a symlink: core.paths resolves a model name to its real path and refuses one outside the
    models folder, so a symlinked checkpoint file is listed and validates but does not load."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/checkpoints/<the golden checkpoint> (linked from the test cache) and input/<image>."""
    import torch

    from tests.utils.checkpoints import cached_checkpoint

    checkpoint = cached_checkpoint("sd15", tiny=False, seed=0, dtype=torch.float16)
    base = tmp_path_factory.mktemp("golden_base")
    (base / "models" / "checkpoints").mkdir(parents=True)
    link_model(checkpoint.resolve(), base / "models" / "checkpoints" / CHECKPOINT_NAME)
    (base / "input").mkdir()
    shutil.copyfile(GOLDEN / "inputs" / INPUT_IMAGE, base / "input" / INPUT_IMAGE)
    (base / "custom_nodes").mkdir()
    return base


@pytest.fixture(scope="module")
def engine(base_dir: Path) -> Iterator[Engine]:
    from core import runtime
    from core.config import Config
    from execution.cache import cache_for_policy
    from execution.executor import Executor
    from main import build_registry, build_services

    previous = dict(runtime.services())  # build_services installs its own; give them back after
    config = Config.from_args(["--base-directory", str(base_dir), "--cpu"], base_dir=base_dir)
    services = build_services(config)
    registry = build_registry(config, services)
    executor = Executor(registry, cache_for_policy(config.cache), services)
    yield Engine(base_dir, config, services, registry, executor)
    models = services.get("models")
    unload = getattr(models, "unload_all", None) or getattr(models, "free", None)
    if unload is not None:
        unload()  # the 4 GB of weights should not outlive this module
    runtime.install_services(previous)


def run_prompt(engine: Engine, prompt: dict[str, Any], case: str) -> Any:
    from execution.validate import validate_prompt

    validation = validate_prompt(prompt, engine.registry)
    assert validation.ok and not validation.node_errors, (
        f"{case}: the golden workflow does not validate: {validation.error} {validation.node_errors}"
    )
    result = engine.executor.execute(validation.prompt, f"golden-{case}-{uuid.uuid4().hex[:8]}", validation.outputs)
    assert result.success, f"{case}: execution failed: {result.error}"
    return result


# -- tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_golden_workflow_matches_comfyui(engine: Engine, case: str, record_property: Any) -> None:
    prompt = load_workflow(case)
    nodes = save_latent_nodes(prompt)
    assert nodes, f"{case}: the golden workflow has no SaveLatent node to compare"
    result = run_prompt(engine, prompt, case)
    errors = {}
    for node_id in nodes:
        where = f"{case} node {node_id}"
        assert node_id in result.outputs, f"{where}: SaveLatent produced no ui output ({sorted(result.outputs)})"
        ours = saved_latent(engine.config.output_path, result.outputs[node_id], where)
        errors[node_id] = relative_error(ours, golden_latent(case, node_id))
        record_property(f"rel_err_{case}_{node_id}", f"{errors[node_id]:.3e}")
        show(f"{where}: max|ours - ComfyUI| / max|ComfyUI| = {errors[node_id]:.3e}")
    worst = {node_id: err for node_id, err in errors.items() if not err <= TOLERANCE}
    assert not worst, f"{case}: relative error above {TOLERANCE:g} at SaveLatent node(s) {worst}"


def test_cli_run_writes_png_with_prompt_and_matching_latent(base_dir: Path, tmp_path: Path) -> None:
    """`python main.py run <golden txt2img workflow>` as a user runs it (own output folder)."""
    from safetensors.torch import load_file

    from nodes.pngmeta import read_png_metadata

    workflow = GOLDEN / "workflows" / f"{CLI_CASE}.json"
    output = tmp_path / "output"
    cmd = [sys.executable, str(ROOT / "main.py"), "run", str(workflow), "--quiet", "--cpu",
           "--base-directory", str(base_dir), "--output-directory", str(output)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=280, cwd=base_dir, check=False)
    assert done.returncode == 0, f"main.py run failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-4000:]}"

    pngs = sorted(output.glob(f"{CLI_CASE}_*.png"))
    assert len(pngs) == 1, f"expected one {CLI_CASE}_*.png in {output}, found {sorted(output.rglob('*'))}"
    assert pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = read_png_metadata(pngs[0])["prompt"]
    expected = load_workflow(CLI_CASE)
    assert stored is not None, f"{pngs[0].name} has no `prompt` text chunk"
    assert {k: (v["class_type"], v["inputs"]) for k, v in stored.items()} == {
        k: (v["class_type"], v["inputs"]) for k, v in expected.items()
    }

    latents = sorted((output / "latents").glob(f"{CLI_CASE}_*.latent"))
    assert len(latents) == 1, f"expected one saved latent, found {latents}"
    error = relative_error(load_file(str(latents[0]))["latent_tensor"], golden_latent(CLI_CASE, "10"))
    show(f"{CLI_CASE} via main.py run: relative error {error:.3e}")
    assert error <= TOLERANCE, f"main.py run: relative error {error:.3e} above {TOLERANCE:g}"
