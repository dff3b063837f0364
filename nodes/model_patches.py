"""Nodes that change how a MODEL or CLIP behaves without touching the shared weights:
ModelSamplingDiscrete, CLIPSetLastLayer, LoraLoader, LoraLoaderModelOnly (spec §5.1, §5.5, §7.1).

Each works on a clone of its input handle (diffusion/handles.py): the clone shares the weights and
carries its own patches, so the upstream MODEL / CLIP -- which the executor may have cached and other
nodes may use -- is never changed. LoRA weights are applied by the model manager when the patched
handle runs, and undone when another handle uses the same weights.

ModelSamplingDiscrete's "lcm" and "img_to_img" parameterisations are defined here, as ComfyUI's
nodes_model_advanced.py defines them next to its node; they are built on first use so that importing
this module does not import torch.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from nodes.api import Boolean, Choice, Float, Input, Int, ModelError, Node, NodeRuntime, NodeSpec, Output
from nodes.loaders import model_files, resolve_model

log = logging.getLogger(__name__)

SAMPLING_TYPES = ("eps", "v_prediction", "lcm", "x0", "img_to_img")
LCM_ORIGINAL_STEPS = 50
"""LCM models were distilled on 50 of the 1000 training timesteps (every 20th, ending at 999)."""


# -- model sampling variants ------------------------------------------------------------------------------


@functools.cache
def _lcm_class() -> type:
    import torch

    from diffusion.sampling.model_sampling import ModelSamplingDiscrete

    class LCMSampling(ModelSamplingDiscrete):
        """Latent Consistency Model sampling (Luo et al. 2023): the 50 distilled timesteps, and the
        consistency boundary condition D = c_skip(t) x + c_out(t) x0_eps."""

        def __init__(self, zsnr: bool = False) -> None:
            super().__init__("eps", zsnr=zsnr)
            self.prediction = "lcm"
            total = len(self.sigmas)
            self.skip_steps = total // LCM_ORIGINAL_STEPS
            picked = [self.sigmas[total - 1 - k * self.skip_steps] for k in range(LCM_ORIGINAL_STEPS)]
            self.set_sigmas(torch.stack(picked[::-1]).float())

        def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
            dists = sigma.log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
            index = dists.abs().argmin(dim=0).view(sigma.shape)
            return (index * self.skip_steps + (self.skip_steps - 1)).to(sigma.device)

        def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
            t = (timestep.float().to(self.log_sigmas.device) - (self.skip_steps - 1)) / self.skip_steps
            t = torch.clamp(t, min=0, max=len(self.sigmas) - 1)
            low, high, w = t.floor().long(), t.ceil().long(), t.frac()
            log_sigma = (1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]
            return log_sigma.exp().to(timestep.device)

        def calculate_denoised(self, sigma: torch.Tensor, model_output: torch.Tensor,
                               model_input: torch.Tensor) -> torch.Tensor:  # fmt: skip
            shape = sigma.shape[:1] + (1,) * (model_output.ndim - 1)
            timestep = self.timestep(sigma).view(shape)
            sigma = sigma.view(shape)
            x0 = model_input - model_output * sigma
            sigma_data, scaled = 0.5, timestep * 10.0  # LCM's timestep_scaling
            c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
            c_out = scaled / (scaled**2 + sigma_data**2) ** 0.5
            return c_out * x0 + c_skip * model_input

    return LCMSampling


@functools.cache
def _img_to_img_class() -> type:
    from diffusion.sampling.model_sampling import ModelSamplingDiscrete

    class ImgToImgSampling(ModelSamplingDiscrete):
        """x0 prediction on an unscaled input (models that map an image to an image)."""

        def __init__(self, zsnr: bool = False) -> None:
            super().__init__("x0", zsnr=zsnr)
            self.prediction = "img_to_img"

        def calculate_input(self, sigma: Any, x: Any) -> Any:
            return x

        def calculate_denoised(self, sigma: Any, model_output: Any, model_input: Any) -> Any:
            return model_output

    return ImgToImgSampling


def model_sampling_for(sampling: str, zsnr: bool = False) -> Any:
    """The discrete model sampling ModelSamplingDiscrete installs for `sampling`."""
    from diffusion.sampling.model_sampling import ModelSamplingDiscrete

    if sampling == "lcm":
        return _lcm_class()(zsnr=zsnr)
    if sampling == "img_to_img":
        return _img_to_img_class()(zsnr=zsnr)
    if sampling not in SAMPLING_TYPES:
        raise ValueError(f"unknown sampling '{sampling}'; expected one of {', '.join(SAMPLING_TYPES)}")
    return ModelSamplingDiscrete(sampling, zsnr=zsnr)


# -- LoRA -------------------------------------------------------------------------------------------------


def load_lora_patches(path: Any, handles: list[Any]) -> dict[Any, list[Any]]:
    """The patches a LoRA file holds for the given MODEL / CLIP handles ({(component, param):
    [adapters]}). Keys no handle has are logged by diffusion.lora.load_lora, never silently dropped."""
    from diffusion import loading, lora

    key_map: dict[str, Any] = {}
    shapes: dict[Any, Any] = {}
    for handle in handles:
        key_map.update(handle.lora_key_map())
        shapes.update(handle.patch_shapes())
    with loading.open_state_dict(path) as sd:
        patches, unmatched = lora.load_lora(sd, key_map, shapes)
    if not patches and unmatched:
        # ComfyUI only logs this and runs the prompt as if there were no LoRA; an image made
        # without the LoRA the user asked for is worse than a clear error.
        raise ModelError(
            f"LoRA {path.name} fits no layer of this model: none of its {len(unmatched)} keys match "
            "(is it made for another model family, e.g. an SDXL LoRA on SD1.5?)"
        )
    return patches


def apply_lora(ctx: NodeRuntime, model: Any, clip: Any, lora_name: str, strength_model: float,
               strength_clip: float) -> tuple[Any, Any]:  # fmt: skip
    """(model, clip) with the LoRA added on clones; a handle whose strength is 0 (or that is None)
    comes back unchanged, as it would compute the same numbers."""
    import torch

    targets = [(model, strength_model), (clip, strength_clip)]
    wanted = [(handle, strength) for handle, strength in targets if handle is not None and strength != 0]
    if not wanted:
        return model, clip
    path = resolve_model(ctx, "loras", lora_name)
    with torch.no_grad():
        patches = load_lora_patches(path, [handle for handle, _ in wanted])
    out = []
    for handle, strength in targets:
        if handle is None or strength == 0:
            out.append(handle)
            continue
        patched = handle.clone()
        patched.add_patches(patches, strength)
        out.append(patched)
    return out[0], out[1]


# -- nodes ------------------------------------------------------------------------------------------------


class ModelSamplingDiscrete(Node):
    spec = NodeSpec(
        id="ModelSamplingDiscrete",
        category="advanced/model",
        inputs=(Input("model", "MODEL"), Choice("sampling", SAMPLING_TYPES, legacy=True), Boolean("zsnr", False)),
        outputs=(Output("MODEL"),),
    )

    def run(self, ctx: NodeRuntime, model: Any, sampling: str, zsnr: bool) -> tuple[Any]:
        patched = model.clone()
        patched.add_object_patch("model_sampling", model_sampling_for(sampling, zsnr))
        return (patched,)


class CLIPSetLastLayer(Node):
    spec = NodeSpec(
        id="CLIPSetLastLayer",
        display_name="CLIP Set Last Layer",
        category="conditioning",
        inputs=(Input("clip", "CLIP"), Int("stop_at_clip_layer", -1, min=-24, max=-1, step=1)),
        outputs=(Output("CLIP"),),
    )

    def run(self, ctx: NodeRuntime, clip: Any, stop_at_clip_layer: int) -> tuple[Any]:
        patched = clip.clone()
        patched.clip_layer(stop_at_clip_layer)
        return (patched,)


class LoraLoader(Node):
    """LoRAs are used to modify diffusion and CLIP models, altering the way in which latents are
    denoised such as applying styles. Multiple LoRA nodes can be linked together."""

    spec = NodeSpec(
        id="LoraLoader",
        display_name="Load LoRA",
        category="loaders",
        inputs=(
            Input("model", "MODEL", tooltip="The diffusion model the LoRA will be applied to."),
            Input("clip", "CLIP", tooltip="The CLIP model the LoRA will be applied to."),
            Choice("lora_name", model_files("loras"), legacy=True, tooltip="The name of the LoRA."),
            Float(
                "strength_model",
                1.0,
                min=-100.0,
                max=100.0,
                step=0.01,
                tooltip="How strongly to modify the diffusion model. This value can be negative.",
            ),
            Float(
                "strength_clip",
                1.0,
                min=-100.0,
                max=100.0,
                step=0.01,
                tooltip="How strongly to modify the CLIP model. This value can be negative.",
            ),
        ),
        outputs=(
            Output("MODEL", tooltip="The modified diffusion model."),
            Output("CLIP", tooltip="The modified CLIP model."),
        ),
    )

    def run(self, ctx: NodeRuntime, model: Any, clip: Any, lora_name: str, strength_model: float,
            strength_clip: float) -> tuple[Any, Any]:  # fmt: skip
        return apply_lora(ctx, model, clip, lora_name, strength_model, strength_clip)


class LoraLoaderModelOnly(Node):
    """LoRAs are used to modify the diffusion model, altering the way in which latents are denoised
    such as applying styles. Multiple LoRA nodes can be linked together."""

    spec = NodeSpec(
        id="LoraLoaderModelOnly",
        category="loaders",
        inputs=(
            Input("model", "MODEL"),
            Choice("lora_name", model_files("loras"), legacy=True),
            Float("strength_model", 1.0, min=-100.0, max=100.0, step=0.01),
        ),
        outputs=(Output("MODEL"),),
    )

    def run(self, ctx: NodeRuntime, model: Any, lora_name: str, strength_model: float) -> tuple[Any]:
        return (apply_lora(ctx, model, None, lora_name, strength_model, 0.0)[0],)


NODES = [ModelSamplingDiscrete, CLIPSetLastLayer, LoraLoader, LoraLoaderModelOnly]

__all__ = [
    "NODES",
    "SAMPLING_TYPES",
    "CLIPSetLastLayer",
    "LoraLoader",
    "LoraLoaderModelOnly",
    "ModelSamplingDiscrete",
    "apply_lora",
    "load_lora_patches",
    "model_sampling_for",
]
