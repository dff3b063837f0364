"""Model loader nodes: CheckpointLoaderSimple, CheckpointLoader (with an LDM yaml config, deprecated),
DiffusersLoader, VAELoader, UNETLoader, CLIPLoader, DualCLIPLoader (spec §5.1, names, inputs and
outputs as ComfyUI's nodes.py).

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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


# -- LDM yaml configs (CheckpointLoader) -------------------------------------------------------------


@dataclass(frozen=True)
class LdmConfig:
    """What Loom takes from an LDM inference yaml (v1-inference.yaml, v2-inference-v.yaml ...).

    The architecture is always read from the weights; the yaml only says how to sample and encode:
    `model.params.parameterization` ("v" -> v-prediction), `model.params.scale_factor` and
    `model.params.cond_stage_config.params.layer_idx` (a CLIP layer, as ComfyUI applies it)."""

    parameterization: str | None = None
    scale_factor: float | None = None
    clip_layer: int | None = None


def read_ldm_config(path: Path) -> LdmConfig:
    """Parse an LDM yaml with yaml.safe_load; ModelError saying what is wrong when it cannot be used."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"config '{path.name}' cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ModelError(f"config '{path.name}' is not valid YAML: {exc}") from exc
    model = data.get("model") if isinstance(data, Mapping) else None
    params = model.get("params") if isinstance(model, Mapping) else None
    if not isinstance(params, Mapping):
        raise ModelError(f"config '{path.name}' is not an LDM model config: it has no model.params mapping")
    kind = params.get("parameterization")
    if kind is not None and not isinstance(kind, str):
        raise ModelError(f"config '{path.name}': model.params.parameterization must be a string, not {kind!r}")
    scale = params.get("scale_factor")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale <= 0):
        raise ModelError(f"config '{path.name}': model.params.scale_factor must be a positive number, not {scale!r}")
    cond = params.get("cond_stage_config")
    cond_params = cond.get("params") if isinstance(cond, Mapping) else None
    layer = cond_params.get("layer_idx") if isinstance(cond_params, Mapping) else None
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int)):
        raise ModelError(f"config '{path.name}': cond_stage_config.params.layer_idx must be an integer, not {layer!r}")
    return LdmConfig(kind, None if scale is None else float(scale), layer)


def apply_ldm_config(config: LdmConfig, model: Any, clip: Any, source: str) -> tuple[Any, Any]:
    """Clones of the loaded MODEL / CLIP with what the yaml says (the cached originals stay as they are)."""
    from dataclasses import replace

    from diffusion.sampling.model_sampling import make_model_sampling

    model = model.clone()
    if config.parameterization == "v":
        # As ComfyUI: a fresh discrete v-prediction sampling; a zero-terminal-SNR checkpoint keeps it.
        zsnr = bool(getattr(model.model_sampling, "zsnr", False))
        model.add_object_patch("model_sampling", make_model_sampling("v_prediction", zsnr))
    elif config.parameterization not in (None, "eps"):
        log.warning("%s: parameterization %r is not used (only 'v' changes the sampling)", source,
                    config.parameterization)  # fmt: skip
    fmt = model.latent_format
    if config.scale_factor is not None and config.scale_factor != fmt.scale_factor:
        log.info("%s: latent scale factor %g (the %s default is %g)", source, config.scale_factor,
                 model.family.name, fmt.scale_factor)  # fmt: skip
        model.latent_format = replace(fmt, scale_factor=config.scale_factor)
    if clip is not None and config.clip_layer is not None:
        clip = clip.clone()
        clip.clip_layer(config.clip_layer)
    return model, clip


# -- text encoder files ------------------------------------------------------------------------------

FAMILY_ENCODERS = {"sdxl": ("clip_l", "clip_g")}
"""The encoders a DualCLIPLoader `type` combines (ComfyUI's CLIPType for two files)."""


def encoder_kinds(paths: Sequence[Path], clip_type: str) -> list[str] | None:
    """Which encoder each file holds, using the loader's `type` as a hint; None: let the loader decide.

    The depth of the weights names the encoder (32 layers CLIP-G, 24 CLIP-H, 12 CLIP-L) as in
    ComfyUI. Only when depth cannot tell the files apart (narrow test or truncated encoders read as
    the same kind) is the wider file taken as the larger encoder of the pair `clip_type` names.
    Only safetensors headers are read here (a pickle would have to be loaded whole); None as well
    when a file cannot be read: the load itself then reports what is wrong with it."""
    wanted = FAMILY_ENCODERS.get(clip_type)
    if wanted is None or len(paths) != len(wanted):
        return None
    from diffusion.families.base import CLIP_L, text_config_from_state_dict
    from diffusion.loading import SAFETENSORS_SUFFIXES, LazyStateDict, classify_text_encoder, text_encoder_weights

    if not all(p.suffix.lower() in SAFETENSORS_SUFFIXES for p in paths):
        return None
    found: list[tuple[str, int]] = []
    try:
        for path in paths:
            with LazyStateDict(path) as sd:
                weights = text_encoder_weights(sd)
                width = text_config_from_state_dict(weights, CLIP_L).hidden_size
                found.append((classify_text_encoder(weights), width))
    except ModelError as exc:
        log.debug("cannot read the text encoders for a type hint: %s", exc)
        return None
    kinds = [kind for kind, _ in found]
    if len(set(kinds)) == len(kinds):
        return kinds  # depth told them apart (an unusable pair is the loader's error to report)
    by_width = sorted(range(len(found)), key=lambda i: found[i][1])
    for rank, index in enumerate(by_width):  # `wanted` runs from the narrowest encoder to the widest
        kinds[index] = wanted[rank]
    log.info("text encoders %s taken as %s (by width, for type %s)", [p.name for p in paths], kinds, clip_type)
    return kinds


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


class CheckpointLoader(Node):
    """Loads a checkpoint with an LDM yaml config (deprecated in ComfyUI): the weights give the
    architecture, the yaml the parameterization (v-prediction), scale factor and CLIP layer."""

    spec = NodeSpec(
        id="CheckpointLoader",
        display_name="Load Checkpoint With Config (DEPRECATED)",
        category="advanced/loaders",
        deprecated=True,
        inputs=(
            Choice("config_name", model_files("configs"), legacy=True),
            Choice("ckpt_name", model_files("checkpoints"), legacy=True),
        ),
        outputs=(Output("MODEL"), Output("CLIP"), Output("VAE")),
    )

    def run(self, ctx: NodeRuntime, config_name: str, ckpt_name: str) -> tuple[Any, Any, Any]:
        config = read_ldm_config(resolve_model(ctx, "configs", config_name))
        model, clip, vae = manager(ctx).load_checkpoint(resolve_model(ctx, "checkpoints", ckpt_name))
        model, clip = apply_ldm_config(config, model, clip, f"{ckpt_name} with {config_name}")
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
        kinds = encoder_kinds(files, type)
        if kinds is None:
            return (manager(ctx).load_text_encoders(files),)
        return (manager(ctx).load_text_encoders(files, kinds=kinds),)


NODES = [CheckpointLoaderSimple, CheckpointLoader, DiffusersLoader, VAELoader, UNETLoader, CLIPLoader, DualCLIPLoader]

__all__ = [
    "NODES",
    "CLIPLoader",
    "CheckpointLoader",
    "CheckpointLoaderSimple",
    "DiffusersLoader",
    "DualCLIPLoader",
    "LdmConfig",
    "UNETLoader",
    "VAELoader",
    "apply_ldm_config",
    "diffusers_folders",
    "encoder_kinds",
    "manager",
    "model_files",
    "read_ldm_config",
    "resolve_model",
]
