"""ComfyUI parity through the nodes: the golden API workflows (shared/golden/workflows) run unchanged
through Loom's validator and Executor on the full-size random SD1.5 checkpoint, and the latents their
SaveLatent nodes write match ComfyUI's (golden README: max|ours - ref| / max|ref| <= 1e-3).

Only the checkpoint file name is adapted: the workflows name it sd15_random.safetensors, the test
cache holds it as tests/utils/checkpoints.cached_checkpoint names it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from core.config import Config
from core.paths import ModelPaths
from core.runtime import install_services
from diffusion.memory import ModelManager, device_policy
from execution.cache import make_cache
from execution.executor import Executor
from execution.validate import validate_prompt
from nodes.builtin import builtin_registry
from nodes.latent_io import load_latent_file
from tests.utils.shared import GOLDEN

CASES = ("txt2img_dpmpp_2m_karras", "img2img_euler_normal_d06")
"""Two of the three cases (each takes about a minute on CI's CPU): together they cover a multistep
sampler with the karras schedule, LoadImage -> VAEEncode and denoise < 1. The third
(txt2img_euler_normal) is checked through the handles in tests/diffusion/test_handles.py."""
TOLERANCE = 1e-3

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (GOLDEN / "workflows").is_dir(), reason="golden workflows not available"),
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.utils.checkpoints import cached_checkpoint

    checkpoint = cached_checkpoint("sd15", tiny=False, dtype=torch.float16)
    root = tmp_path_factory.mktemp("golden")
    for kind in ("input", "output", "temp"):
        (root / kind).mkdir()
    shutil.copy(GOLDEN / "inputs" / "img2img_input.png", root / "input" / "img2img_input.png")
    paths = ModelPaths(root / "models")
    paths.add("checkpoints", checkpoint.parent)  # the 2 GB file stays where the cache keeps it
    services = {
        "config": Config(base_dir=root),
        "paths": paths,
        "models": ModelManager(device_policy(device="cpu"), max_cached=1),
        "input_dir": root / "input",
        "output_dir": root / "output",
        "temp_dir": root / "temp",
    }
    return root, services, checkpoint.name, builtin_registry()


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    assert ours.shape == reference.shape
    return float((ours.float() - reference.float()).abs().max() / reference.float().abs().max())


@pytest.mark.parametrize("case", CASES)
def test_golden_workflow_reproduces_comfyui_latents(setup: Any, case: str) -> None:
    root, services, checkpoint_name, registry = setup
    prompt = json.loads((GOLDEN / "workflows" / f"{case}.json").read_text())
    savers = {}
    for node_id, node in prompt.items():
        if node["class_type"] == "CheckpointLoaderSimple":
            node["inputs"]["ckpt_name"] = checkpoint_name
        if node["class_type"] == "SaveLatent":
            node["inputs"]["filename_prefix"] = f"{case}/{node_id}"
            savers[node_id] = node
    install_services(services)
    try:
        checked = validate_prompt(prompt, registry)
        assert checked.ok, (checked.error, checked.node_errors)
        result = Executor(registry, make_cache(), services).execute(checked.prompt, case, checked.outputs)
    finally:
        install_services(None)
    assert result.success, result.error
    assert savers
    for node_id in savers:
        (entry,) = result.outputs[node_id]["latents"]
        ours = load_latent_file(Path(root / "output" / entry["subfolder"] / entry["filename"]))["samples"]
        reference = load_file(GOLDEN / "latents" / f"{case}_{node_id}_0.latent.safetensors")["latent_tensor"]
        assert relative_error(ours, reference) <= TOLERANCE, f"{case} node {node_id}"
