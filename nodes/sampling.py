"""KSampler and KSamplerAdvanced (spec §5.1, §6), plus the per-step progress and live previews every
sampler node shares.

The nodes are thin: diffusion.sampling.ksampler.common_ksampler draws the noise from the seed (as
ComfyUI does, bit for bit), builds the sigmas, runs the sampler with CFG and hands back a new LATENT.
Each sampler step reports `ctx.progress(step + 1, total, preview)`, which also raises Interrupted
when the prompt is interrupted; the guidance loop checks for an interrupt before every network call.

Previews (`--preview-method` auto / latent2rgb / taesd, or the prompt's extra_data.preview_method)
turn the denoised estimate into a small image with TAESD (models/vae_approx) or the family's
latent->RGB projection (diffusion/previews.py chooses), at most one every PREVIEW_INTERVAL seconds
and always on the last step.

Sampler and scheduler names are listed here, not read from diffusion.sampling, because registering
the nodes must not import torch (the server lists nodes before the engine loads);
tests/nodes/test_nodes_engine_sampling.py checks they equal the engine's registries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from nodes.api import Choice, Float, Input, Int, Node, NodeRuntime, NodeSpec, Output

log = logging.getLogger(__name__)

SAMPLER_NAMES: tuple[str, ...] = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "exp_heun_2_x0", "exp_heun_2_x0_sde", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive",
    "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m",
    "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "res_multistep",
    "res_multistep_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp",
    "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver",
    "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
)  # fmt: skip
"""KSampler.SAMPLERS in ComfyUI's combo order (spec §6.1)."""

SCHEDULER_NAMES: tuple[str, ...] = (
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal", "linear_quadratic",
    "kl_optimal",
)  # fmt: skip
"""KSampler.SCHEDULERS in ComfyUI's combo order."""

MAX_SEED = 0xFFFFFFFFFFFFFFFF
PREVIEW_INTERVAL = 0.25
"""Seconds between two live previews of one sampler run (encoding one costs a few ms; the editor
cannot show more than a few per second anyway)."""

StepCallback = Callable[[int, Any, Any, int], None]


# -- progress and previews -------------------------------------------------------------------------------


def preview_method(ctx: NodeRuntime) -> str:
    """The preview method for this prompt: `--preview-method`, unless the prompt's
    extra_data.preview_method overrides it ("default" keeps the configured one)."""
    from diffusion.previews import resolve_method

    config = ctx.services.get("config")
    # The executor does not hand extra_data to nodes yet; a runtime that carries it is honoured.
    extra_data = getattr(ctx, "extra_data", None)
    return resolve_method(getattr(config, "preview_method", "none"), extra_data)


def latent_previewer(ctx: NodeRuntime, model: Any) -> Callable[[Any], Any] | None:
    """x0 (model space, (B, C, h, w)) -> a PIL preview of the first item, or None when previews
    are off (--preview-method none, the default) or the model's latent format has no previewer.
    TAESD or latent2rgb as diffusion.previews.select_previewer decides; at most --preview-size."""
    method = preview_method(ctx)
    if method == "none":
        return None
    from diffusion.previews import select_previewer

    config = ctx.services.get("config")
    fmt = getattr(model, "latent_format", None)
    device = getattr(model, "load_device", "cpu")
    max_size = getattr(config, "preview_size", None)
    try:
        return select_previewer(method, fmt, paths=ctx.services.get("paths"), device=device, max_size=max_size)
    except Exception:  # previews are a nicety: never let them fail the sampling run
        log.warning("cannot set up %s previews; sampling without them", method, exc_info=True)
        return None


def step_callback(ctx: NodeRuntime, model: Any, x0_output: dict[str, Any] | None = None) -> StepCallback:
    """The sampler callback(step, x0, x, total): progress (+ a throttled preview) for this node.
    With `x0_output`, the latest denoised estimate is kept there (SamplerCustom's second output)."""
    from diffusion.previews import budgeted

    # Budgeted: a preview slower than its share of a step (TAESD on a CPU) is shown less often.
    previewer = budgeted(latent_previewer(ctx, model))
    last = [float("-inf")]

    def callback(step: int, x0: Any, x: Any, total: int) -> None:
        if x0_output is not None:
            x0_output["x0"] = x0
        preview = None
        now = time.monotonic()
        if previewer is not None and (now - last[0] >= PREVIEW_INTERVAL or step + 1 >= total):
            last[0] = now
            try:
                preview = previewer(x0, force=step + 1 >= total)
            except Exception:  # a failed preview must never fail the sampling run
                log.warning("live preview failed; continuing without it", exc_info=True)
        ctx.progress(step + 1, total, preview)

    return callback


def _sample(ctx: NodeRuntime, model: Any, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
            positive: Any, negative: Any, latent: dict[str, Any], **options: Any) -> tuple[dict[str, Any]]:  # fmt: skip
    import torch

    from diffusion.sampling.ksampler import common_ksampler

    if model is None:
        raise ValueError("model input is invalid: None (the checkpoint or loader produced no diffusion model)")
    with torch.no_grad():  # not inference_mode: the executor's mutation guard reads version counters
        out = common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent,
                              callback=step_callback(ctx, model), **options)  # fmt: skip
    return (out,)


# -- nodes -----------------------------------------------------------------------------------------------


class KSampler(Node):
    """Uses the provided model, positive and negative conditioning to denoise the latent image."""

    spec = NodeSpec(
        id="KSampler",
        display_name="KSampler",
        category="sampling",
        inputs=(
            Input("model", "MODEL", tooltip="The model used for denoising the input latent."),
            Int(
                "seed",
                0,
                min=0,
                max=MAX_SEED,
                control_after_generate=True,
                tooltip="The random seed used for creating the noise.",
            ),
            Int("steps", 20, min=1, max=10000, tooltip="The number of steps used in the denoising process."),
            Float(
                "cfg",
                8.0,
                min=0.0,
                max=100.0,
                step=0.1,
                round=0.01,
                tooltip="The Classifier-Free Guidance scale balances creativity and adherence to the prompt. "
                "Higher values result in images more closely matching the prompt however too high values will "
                "negatively impact quality.",
            ),
            Choice(
                "sampler_name",
                SAMPLER_NAMES,
                legacy=True,
                tooltip="The algorithm used when sampling, this can affect the quality, speed, and style of "
                "the generated output.",
            ),
            Choice(
                "scheduler",
                SCHEDULER_NAMES,
                legacy=True,
                tooltip="The scheduler controls how noise is gradually removed to form the image.",
            ),
            Input(
                "positive",
                "CONDITIONING",
                tooltip="The conditioning describing the attributes you want to include in the image.",
            ),
            Input(
                "negative",
                "CONDITIONING",
                tooltip="The conditioning describing the attributes you want to exclude from the image.",
            ),
            Input("latent_image", "LATENT", tooltip="The latent image to denoise."),
            Float(
                "denoise",
                1.0,
                min=0.0,
                max=1.0,
                step=0.01,
                tooltip="The amount of denoising applied, lower values will maintain the structure of the "
                "initial image allowing for image to image sampling.",
            ),
        ),
        outputs=(Output("LATENT", tooltip="The denoised latent."),),
    )

    def run(self, ctx: NodeRuntime, model: Any, seed: int, steps: int, cfg: float, sampler_name: str,
            scheduler: str, positive: Any, negative: Any, latent_image: dict[str, Any],
            denoise: float = 1.0) -> tuple[dict[str, Any]]:  # fmt: skip
        return _sample(ctx, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                       denoise=denoise)  # fmt: skip


class KSamplerAdvanced(Node):
    spec = NodeSpec(
        id="KSamplerAdvanced",
        display_name="KSampler (Advanced)",
        category="sampling",
        inputs=(
            Input("model", "MODEL"),
            Choice("add_noise", ("enable", "disable"), legacy=True),
            Int("noise_seed", 0, min=0, max=MAX_SEED, control_after_generate=True),
            Int("steps", 20, min=1, max=10000),
            Float("cfg", 8.0, min=0.0, max=100.0, step=0.1, round=0.01),
            Choice("sampler_name", SAMPLER_NAMES, legacy=True),
            Choice("scheduler", SCHEDULER_NAMES, legacy=True),
            Input("positive", "CONDITIONING"),
            Input("negative", "CONDITIONING"),
            Input("latent_image", "LATENT"),
            Int("start_at_step", 0, min=0, max=10000),
            Int("end_at_step", 10000, min=0, max=10000),
            Choice("return_with_leftover_noise", ("disable", "enable"), legacy=True),
        ),
        outputs=(Output("LATENT"),),
    )

    def run(self, ctx: NodeRuntime, model: Any, add_noise: str, noise_seed: int, steps: int, cfg: float,
            sampler_name: str, scheduler: str, positive: Any, negative: Any, latent_image: dict[str, Any],
            start_at_step: int, end_at_step: int, return_with_leftover_noise: str,
            denoise: float = 1.0) -> tuple[dict[str, Any]]:  # fmt: skip
        return _sample(ctx, model, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative,
                       latent_image, denoise=denoise, disable_noise=add_noise == "disable",
                       start_step=start_at_step, last_step=end_at_step,
                       force_full_denoise=return_with_leftover_noise != "enable")  # fmt: skip


NODES = [KSampler, KSamplerAdvanced]

__all__ = [
    "MAX_SEED",
    "NODES",
    "PREVIEW_INTERVAL",
    "SAMPLER_NAMES",
    "SCHEDULER_NAMES",
    "KSampler",
    "KSamplerAdvanced",
    "latent_previewer",
    "preview_method",
    "step_callback",
]
