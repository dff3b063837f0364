"""UpscaleModelLoader and ImageUpscaleWithModel (nodes/upscale.py): /object_info as ComfyUI's V3
nodes, loading from the upscale_models folders, tiled upscaling with per-tile progress and
interrupts, run through a NodeRuntime as the executor does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from core.errors import Interrupted, ModelError
from core.paths import ModelPaths
from core.runtime import NodeRuntime, install_services
from diffusion.upscale import UpscaleModel, build_model
from diffusion.upscale.rrdbnet import RRDBConfig
from diffusion.upscale.srvgg import SRVGGConfig
from diffusion.upscale.tiling import tile_count
from nodes import upscale
from nodes.api import DeclarativeNode
from nodes.builtin import BUILTIN_MODULES, builtin_registry
from tests.nodes.conftest import call_node

LOADER = DeclarativeNode(upscale.UpscaleModelLoader)
UPSCALE = DeclarativeNode(upscale.ImageUpscaleWithModel)


def tiny_weights(config: Any, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator("cpu").manual_seed(seed)
    module = config.build()
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return {k: v.contiguous() for k, v in module.state_dict().items()}


@pytest.fixture
def models(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A models folder with two upscalers (one in a subfolder), installed as the `paths` service."""
    folder = tmp_path / "models" / "upscale_models"
    (folder / "real").mkdir(parents=True)
    save_file(tiny_weights(SRVGGConfig(nf=4, num_conv=1, upscale=2)), str(folder / "2x_compact.safetensors"))
    torch.save({"params_ema": tiny_weights(RRDBConfig(nf=4, nb=1, gc=4))}, folder / "real" / "4x_rrdb.pth")
    (folder / "notes.txt").write_text("not a model")
    services = {"paths": ModelPaths(tmp_path / "models")}
    install_services(services)
    yield services
    install_services(None)


class Recorder:
    """A NodeRuntime's progress hook and interrupt check, recording what the node reports."""

    def __init__(self, interrupt_after: int | None = None) -> None:
        self.calls: list[tuple[float, float | None]] = []
        self.interrupt_after = interrupt_after

    def report(self, value: float, total: float | None, preview: Any = None) -> None:
        self.calls.append((value, total))

    def check(self) -> None:
        if self.interrupt_after is not None and len(self.calls) >= self.interrupt_after:
            raise Interrupted("interrupted by the test")

    def runtime(self, services: dict[str, Any]) -> NodeRuntime:
        return NodeRuntime(
            node_id="7",
            class_type="ImageUpscaleWithModel",
            report_progress=self.report,
            interrupt_check=self.check,
            services=services,
        )


def test_object_info_matches_comfyui(models: dict[str, Any]) -> None:
    registry = builtin_registry(("nodes.upscale",))
    loader = registry.object_info_one("UpscaleModelLoader")["UpscaleModelLoader"]
    assert loader["input"] == {
        "required": {"model_name": ["COMBO", {"options": ["2x_compact.safetensors", "real/4x_rrdb.pth"]}]}
    }
    assert loader["input_order"] == {"required": ["model_name"]}
    assert (loader["output"], loader["output_name"], loader["category"], loader["display_name"]) == (
        ["UPSCALE_MODEL"],
        ["UPSCALE_MODEL"],
        "loaders",
        "Load Upscale Model",
    )
    node = registry.object_info_one("ImageUpscaleWithModel")["ImageUpscaleWithModel"]
    assert node["input"] == {"required": {"upscale_model": ["UPSCALE_MODEL"], "image": ["IMAGE"]}}
    assert node["input_order"] == {"required": ["upscale_model", "image"]}
    assert (node["output"], node["category"], node["display_name"]) == (
        ["IMAGE"],
        "image/upscaling",
        "Upscale Image (using Model)",
    )
    json.dumps(registry.object_info())  # what /object_info sends must be JSON
    assert "nodes.upscale" in BUILTIN_MODULES


def test_the_model_list_is_empty_without_the_paths_service() -> None:
    install_services(None)
    assert upscale._upscale_model_names() == []


def test_loader_reads_each_file_and_detects_its_architecture(models: dict[str, Any]) -> None:
    runtime = NodeRuntime(node_id="3", class_type="UpscaleModelLoader", services=models)
    (compact,) = call_node(LOADER, {"model_name": "2x_compact.safetensors"}, runtime)
    (rrdb,) = call_node(LOADER, {"model_name": "real/4x_rrdb.pth"}, runtime)
    assert isinstance(compact, UpscaleModel) and isinstance(rrdb, UpscaleModel)
    assert (compact.architecture, compact.scale) == ("SRVGGNetCompact", 2)
    assert (rrdb.architecture, rrdb.scale, rrdb.config.nf) == ("ESRGAN", 4, 4)
    with pytest.raises(ModelError, match="not found"):
        call_node(LOADER, {"model_name": "missing.pth"}, runtime)
    with pytest.raises(ModelError, match="not found"):
        call_node(LOADER, {"model_name": "../escape.pth"}, runtime)


def test_loader_refuses_an_unknown_layout(models: dict[str, Any]) -> None:
    folder = models["paths"].folders("upscale_models")[0]
    torch.save({"encoder.weight": torch.zeros(3)}, folder / "other.pth")
    runtime = NodeRuntime(node_id="3", class_type="UpscaleModelLoader", services=models)
    with pytest.raises(ModelError, match=r"'other.pth'.*unknown upscale model layout.*encoder\.\*"):
        call_node(LOADER, {"model_name": "other.pth"}, runtime)


def test_loader_hands_the_weights_to_the_model_manager(models: dict[str, Any]) -> None:
    from diffusion.memory import ModelManager, device_policy

    manager = ModelManager(device_policy(device="cpu"))
    runtime = NodeRuntime(node_id="3", class_type="UpscaleModelLoader", services={**models, "models": manager})
    (model,) = call_node(LOADER, {"model_name": "2x_compact.safetensors"}, runtime)
    assert [r.module for r in manager.loaded_models() if r.kind == "upscale"] == [model.model]
    recorder = Recorder()
    pixels = torch.rand(1, 10, 12, 3)
    (out,) = call_node(UPSCALE, {"upscale_model": model, "image": pixels}, recorder.runtime(models))
    assert out.shape == (1, 20, 24, 3)


def test_upscale_runs_tiles_reports_progress_and_clamps(models: dict[str, Any]) -> None:
    runtime = NodeRuntime(node_id="3", class_type="UpscaleModelLoader", services=models)
    (model,) = call_node(LOADER, {"model_name": "2x_compact.safetensors"}, runtime)
    pixels = torch.rand((2, 20, 600, 3), generator=torch.Generator().manual_seed(2))
    recorder = Recorder()
    (out,) = call_node(UPSCALE, {"upscale_model": model, "image": pixels}, recorder.runtime(models))
    assert out.shape == (2, 40, 1200, 3) and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    tiles = tile_count(20, 600, 512, 32)  # 600 px wide: two 512 px tiles overlapping by 32
    assert tiles == 2
    assert recorder.calls == [(i + 1, 2 * tiles) for i in range(2 * tiles)]
    # Away from the seam (input x 480..512) the tiles see what the whole image sees.
    whole = model(pixels.movedim(-1, 1)).movedim(1, -1)
    assert torch.allclose(out[:, :, :900], whole[:, :, :900], atol=1e-5)
    assert (out - whole).abs().max() < 0.1
    assert torch.equal(pixels, torch.rand((2, 20, 600, 3), generator=torch.Generator().manual_seed(2)))


def test_rgba_images_lose_their_alpha(models: dict[str, Any]) -> None:
    model = build_model(tiny_weights(SRVGGConfig(nf=4, num_conv=1, upscale=2)))
    rgba = torch.rand(1, 8, 6, 4)
    (out,) = call_node(UPSCALE, {"upscale_model": model, "image": rgba}, Recorder().runtime(models))
    (rgb,) = call_node(UPSCALE, {"upscale_model": model, "image": rgba[..., :3]}, Recorder().runtime(models))
    assert out.shape == (1, 16, 12, 3) and torch.equal(out, rgb)


def test_an_interrupt_stops_between_tiles(models: dict[str, Any]) -> None:
    calls: list[int] = []
    model = build_model(tiny_weights(SRVGGConfig(nf=4, num_conv=1, upscale=2)))

    def counting(tile: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return model(tile)

    class Wrapped:
        scale = 2
        output_channels = 3

        def __call__(self, tile: torch.Tensor) -> torch.Tensor:
            return counting(tile)

    recorder = Recorder(interrupt_after=1)
    pixels = torch.rand(1, 600, 600, 3)
    with pytest.raises(Interrupted):
        call_node(UPSCALE, {"upscale_model": Wrapped(), "image": pixels}, recorder.runtime(models))
    assert len(calls) == 1 and recorder.calls == [(1, 4)]


def test_a_comfyui_style_model_object_is_accepted(models: dict[str, Any]) -> None:
    """Custom nodes may return their own UPSCALE_MODEL: a callable with `.scale`."""

    class Nearest:
        scale = 3

        def __call__(self, tile: torch.Tensor) -> torch.Tensor:
            return F.interpolate(tile, scale_factor=3, mode="nearest")

    pixels = torch.rand(1, 5, 7, 3)
    (out,) = call_node(UPSCALE, {"upscale_model": Nearest(), "image": pixels}, Recorder().runtime(models))
    expected = F.interpolate(pixels.movedim(-1, 1), scale_factor=3, mode="nearest").movedim(1, -1)
    assert torch.allclose(out, expected)
