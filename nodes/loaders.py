"""Model loader nodes: CheckpointLoaderSimple, DiffusersLoader, VAELoader, UNETLoader, CLIPLoader,
DualCLIPLoader (spec §5.1, names, inputs and outputs as ComfyUI's nodes.py).

Loading is the model manager's business (`ctx.service("models")`, a diffusion.memory.ModelManager):
it caches loads across prompts, so a workflow that names the same checkpoint again gets handles over
the same weights without reading the file twice. Files are found through `ctx.service("paths")`
(core.paths.ModelPaths), which refuses names that escape their folder.

The file dropdowns are computed each time the node's spec is requested, from the paths the
composition root installed (core.runtime.services); without them the lists are empty. Nothing here
imports torch at module import: the server lists these nodes before the engine loads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import ModelError
from core.runtime import services
from nodes.api import Choice, Node, NodeRuntime, NodeSpec, Output

log = logging.getLogger(__name__)

CLIP_TYPES = ("stable_diffusion",)
"""CLIPLoader types Loom can build (ComfyUI lists many more families; these are the ones whose
encoders the engine has). CLIP-L gives SD1.x, OpenCLIP-H SD2.x, OpenCLIP-G the SDXL refiner."""
DUAL_CLIP_TYPES = ("sdxl",)
UNET_WEIGHT_DTYPES = ("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2")


# -- folders and the model manager ------------------------------------------------------------------


def model_files(kind: str) -> Callable[[], list[str]]:
    """A combo source: the files of `kind` ("checkpoints", "loras" ...) in every configured folder."""

    def files() -> list[str]:
        paths = services().get("paths")
        if paths is None:
            return []
        try:
            return paths.list(kind)
        except OSError as exc:  # an unreadable folder must not break /object_info
            log.warning("cannot list %s: %s", kind, exc)
            return []

    files.__name__ = f"{kind}_files"
    return files


def resolve_model(ctx: NodeRuntime, kind: str, name: str) -> Path:
    """The file a combo value names (ModelError when it is missing or escapes its folder)."""
    return ctx.service("paths").resolve(kind, name)


def manager(ctx: NodeRuntime) -> Any:
    """The ModelManager every loader and LoRA node goes through."""
    return ctx.service("models")


def diffusers_folders() -> list[str]:
    """Folders under the `diffusers` model folders that hold a model_index.json (relative, "/")."""
    paths = services().get("paths")
    if paths is None:
        return []
    found: set[str] = set()
    for root in paths.folders("diffusers"):
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            if "model_index.json" in filenames:
                found.add(Path(os.path.relpath(dirpath, root)).as_posix())
                dirnames[:] = []  # a pipeline's own subfolders are not models
    return sorted(found)


def _diffusers_path(ctx: NodeRuntime, name: str) -> Path:
    from core.paths import contained

    paths = ctx.service("paths")
    for root in paths.folders("diffusers"):
        candidate = contained(root, name)
        if candidate is not None and (candidate / "model_index.json").is_file():
            return candidate
    searched = ", ".join(str(f) for f in paths.folders("diffusers"))
    raise ModelError(f"diffusers model folder '{name}' not found; looked in: {searched}")


# -- nodes -------------------------------------------------------------------------------------------


class CheckpointLoaderSimple(Node):
    """Loads a diffusion model checkpoint, diffusion models are used to denoise latents."""

    spec = NodeSpec(
        id="CheckpointLoaderSimple",
        display_name="Load Checkpoint",
        category="loaders",
        inputs=(
            Choice(
                "ckpt_name",
                model_files("checkpoints"),
                legacy=True,
                tooltip="The name of the checkpoint (model) to load.",
            ),
        ),
        outputs=(
            Output("MODEL", tooltip="The model used for denoising latents."),
            Output("CLIP", tooltip="The CLIP model used for encoding text prompts."),
            Output("VAE", tooltip="The VAE model used for encoding and decoding images to and from latent space."),
        ),
    )

    def run(self, ctx: NodeRuntime, ckpt_name: str) -> tuple[Any, Any, Any]:
        path = resolve_model(ctx, "checkpoints", ckpt_name)
        model, clip, vae = manager(ctx).load_checkpoint(path)
        log.info("loaded %s (%s)", ckpt_name, model.family.description)
        return model, clip, vae


class DiffusersLoader(Node):
    spec = NodeSpec(
        id="DiffusersLoader",
        category="advanced/loaders/deprecated",
        inputs=(Choice("model_path", diffusers_folders, legacy=True),),
        outputs=(Output("MODEL"), Output("CLIP"), Output("VAE")),
    )

    def run(self, ctx: NodeRuntime, model_path: str) -> tuple[Any, Any, Any]:
        return tuple(manager(ctx).load_diffusers(_diffusers_path(ctx, model_path)))  # type: ignore[return-value]


class VAELoader(Node):
    spec = NodeSpec(
        id="VAELoader",
        display_name="Load VAE",
        category="loaders",
        inputs=(Choice("vae_name", model_files("vae"), legacy=True),),
        outputs=(Output("VAE"),),
    )

    def run(self, ctx: NodeRuntime, vae_name: str) -> tuple[Any]:
        return (manager(ctx).load_vae(resolve_model(ctx, "vae", vae_name)),)


class UNETLoader(Node):
    spec = NodeSpec(
        id="UNETLoader",
        display_name="Load Diffusion Model",
        category="advanced/loaders",
        inputs=(
            Choice("unet_name", model_files("diffusion_models"), legacy=True),
            Choice("weight_dtype", UNET_WEIGHT_DTYPES, legacy=True),
        ),
        outputs=(Output("MODEL"),),
    )

    def run(self, ctx: NodeRuntime, unet_name: str, weight_dtype: str = "default") -> tuple[Any]:
        if weight_dtype != "default":
            # fp8 storage is a memory optimisation for large GPUs; the numbers the engine produces
            # are those of the default dtype, so run with it rather than refuse the workflow.
            log.warning("UNETLoader: weight_dtype %s is not supported yet; loading %s in the default dtype",
                        weight_dtype, unet_name)  # fmt: skip
        return (manager(ctx).load_unet(resolve_model(ctx, "diffusion_models", unet_name)),)


class CLIPLoader(Node):
    """Loads one text encoder file: CLIP-L (SD1.x), OpenCLIP-H (SD2.x) or OpenCLIP-G (SDXL refiner)."""

    spec = NodeSpec(
        id="CLIPLoader",
        display_name="Load CLIP",
        category="advanced/loaders",
        inputs=(
            Choice("clip_name", model_files("text_encoders"), legacy=True),
            Choice("type", CLIP_TYPES, legacy=True),
            Choice("device", ("default", "cpu"), legacy=True, optional=True),
        ),
        outputs=(Output("CLIP"),),
    )

    def run(
        self,
        ctx: NodeRuntime,
        clip_name: str,
        type: str = "stable_diffusion",  # noqa: A002 -- ComfyUI's input name
        device: str = "default",
    ) -> tuple[Any]:
        # The family follows from the encoder itself; `device` is accepted for workflow
        # compatibility, placement is the model manager's (--cpu keeps everything on the CPU).
        return (manager(ctx).load_text_encoders([resolve_model(ctx, "text_encoders", clip_name)]),)


class DualCLIPLoader(Node):
    """Loads two text encoder files used together: CLIP-L and OpenCLIP-G for SDXL."""

    spec = NodeSpec(
        id="DualCLIPLoader",
        category="advanced/loaders",
        inputs=(
            Choice("clip_name1", model_files("text_encoders"), legacy=True),
            Choice("clip_name2", model_files("text_encoders"), legacy=True),
            Choice("type", DUAL_CLIP_TYPES, legacy=True),
            Choice("device", ("default", "cpu"), legacy=True, optional=True),
        ),
        outputs=(Output("CLIP"),),
    )

    def run(
        self,
        ctx: NodeRuntime,
        clip_name1: str,
        clip_name2: str,
        type: str = "sdxl",  # noqa: A002 -- ComfyUI's input name
        device: str = "default",
    ) -> tuple[Any]:
        files = [resolve_model(ctx, "text_encoders", name) for name in (clip_name1, clip_name2)]
        return (manager(ctx).load_text_encoders(files),)


NODES = [CheckpointLoaderSimple, DiffusersLoader, VAELoader, UNETLoader, CLIPLoader, DualCLIPLoader]

__all__ = [
    "NODES",
    "CLIPLoader",
    "CheckpointLoaderSimple",
    "DiffusersLoader",
    "DualCLIPLoader",
    "UNETLoader",
    "VAELoader",
    "diffusers_folders",
    "manager",
    "model_files",
    "resolve_model",
]
