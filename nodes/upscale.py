"""Upscale model nodes: UpscaleModelLoader and ImageUpscaleWithModel (ComfyUI's
comfy_extras/nodes_upscale_model.py, V3 schema: combos render as ["COMBO", {"options": [...]}]).

The loader reads files from the `upscale_models` folders of the `paths` service (core.paths
ModelPaths) and, where the process has a model manager (the `models` service), hands it the
weights to place: they move to the compute device for a run and are offloaded under memory
pressure like any other model. ImageUpscaleWithModel runs the model on 512 px tiles overlapping
by 32, halving the tile on out-of-memory errors, reports progress per tile (which also honours
interrupts) and returns an IMAGE clamped to 0..1.

torch is imported inside run(): the server imports node modules before anything needs torch.
"""

from __future__ import annotations

import logging
from typing import Any

from core.runtime import services
from nodes.api import Choice, Input, Node, NodeRuntime, NodeSpec, Output

log = logging.getLogger(__name__)

KIND = "upscale_models"


def _upscale_model_names() -> list[str]:
    """The combo's choices: every upscale model file in the configured folders (none without
    the `paths` service, as for the other model loaders)."""
    paths = services().get("paths")
    if paths is None:
        return []
    try:
        return paths.list(KIND)
    except OSError as exc:  # an unreadable folder must not break /object_info
        log.warning("cannot list %s: %s", KIND, exc)
        return []


class UpscaleModelLoader(Node):
    """Loads an upscale model (ESRGAN / Real-ESRGAN, SRVGGNetCompact, SwinIR) from models/upscale_models."""

    spec = NodeSpec(
        id="UpscaleModelLoader",
        display_name="Load Upscale Model",
        category="loaders",
        inputs=(Choice("model_name", _upscale_model_names),),
        outputs=(Output("UPSCALE_MODEL"),),
    )

    def run(self, ctx: NodeRuntime, model_name: str) -> tuple[Any]:
        from diffusion.upscale import load_upscale_model

        model = load_upscale_model(ctx.service("paths").resolve(KIND, model_name))
        manager = ctx.services.get("models")
        if manager is not None:  # without one (tests, scripts) the model runs where its weights are
            model.manage(manager)
        return (model,)


class ImageUpscaleWithModel(Node):
    """Upscales an image with an upscale model, tile by tile."""

    spec = NodeSpec(
        id="ImageUpscaleWithModel",
        display_name="Upscale Image (using Model)",
        category="image/upscaling",
        inputs=(Input("upscale_model", "UPSCALE_MODEL"), Input("image", "IMAGE")),
        outputs=(Output("IMAGE"),),
    )

    def run(self, ctx: NodeRuntime, upscale_model: Any, image: Any) -> tuple[Any]:
        import torch

        from diffusion.upscale import UpscaleModel
        from diffusion.upscale.tiling import upscale_image

        ctx.check_interrupted()
        if isinstance(upscale_model, UpscaleModel):
            result = upscale_model.upscale_image(image, progress=ctx.progress, check=ctx.check_interrupted)
        else:
            # A model object from a custom node, shaped like ComfyUI's (callable, `.scale`).
            with torch.no_grad():
                result = upscale_image(
                    upscale_model,
                    image,
                    scale=int(upscale_model.scale),
                    out_channels=int(getattr(upscale_model, "output_channels", 3)),
                    device=getattr(upscale_model, "device", None),
                    progress=ctx.progress,
                    check=ctx.check_interrupted,
                )
        log.debug("upscaled %s to %s", tuple(image.shape), tuple(result.shape))
        return (result,)


NODES = [UpscaleModelLoader, ImageUpscaleWithModel]

__all__ = ["KIND", "NODES", "ImageUpscaleWithModel", "UpscaleModelLoader"]
