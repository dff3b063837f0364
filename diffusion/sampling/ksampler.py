"""KSampler orchestration: schedule -> sigmas, initial noise, guidance, sampler, latent in/out.

Mirrors comfy.sample.sample / comfy.samplers.KSampler / CFGGuider so that a workflow and seed give
ComfyUI's numbers. Interfaces other parts of Loom code against:

MODEL (the `model` argument) - any object with
    .model_sampling   ModelSamplingDiscrete (or the same interface: sigmas, sigma_min/max, timestep(),
                      sigma(), percent_to_sigma(), calculate_input(), calculate_denoised(),
                      noise_scaling(), inverse_noise_scaling())
    .apply_model(x, t, c_crossattn, y=None, control=None) -> Tensor
                      x: (B, C, H, W) network input, ALREADY scaled (model_sampling.calculate_input);
                      t: (B,) float32 timesteps (model_sampling.timestep(sigma).float());
                      c_crossattn: (B, T, D) text context; y: (B, adm) SDXL vector (only passed when
                      a cond provides one); c_concat is passed too when a cond carries it.
                      Returns the RAW network output (eps or v) in float32; dtype/device casts of the
                      inputs are the handle's business. This module turns it into D(x, sigma).
    optional .extra_conds(cond_dict, x, sigma, *, prompt_type, latent_image, denoise_mask, seed)
                      -> dict[str, Tensor], called ONCE per conditioning entry before the loop, with
                      x = the initial noise and sigma = sigmas[0]. cond_dict is the entry's options
                      (pooled_output, width, height, crop_w, target_width, aesthetic_score...) over
                      ComfyUI's sampling params: prompt_type ("positive"/"negative"), width/height
                      defaulting to the latent size * 8, latent_image (model space), denoise_mask
                      (B, C, h, w), seed, noise, device; the four keywords repeat those params.
                      Returns extra model inputs: SDXL {"y": (1, 2816)}, inpainting models
                      {"c_concat": (1, 5, h, w)} (apply_model then concatenates it to x on
                      channels). A cond dict may also carry a ready "y" tensor itself.
    optional .latent_format  with .scale_factor (0.18215 SD1/2, 0.13025 SDXL) and/or
                      process_in(latent) / process_out(latent); .latent_channels (for empty latents)
    optional .model_options  dict of ComfyUI-style sampler hooks (see guidance.py)
    optional .load_device    where sampling runs (default: the latent's device)

CONDITIONING: ComfyUI's list of [tensor (1, T, D), dict]; dict keys honoured: pooled_output (for
extra_conds), area ((h, w, y, x) latent units or ("percentage", ...)), strength, mask (+ mask_strength,
set_area_to_bounds), start_percent, end_percent, control (an object with get_control()), y.

PROGRESS: callback(step, x0, x, total_steps) once per sampler step (x0 = the denoised estimate in
model space, for previews) - ComfyUI's signature. Each network evaluation first calls the current
node runtime's check_interrupted() (core.runtime), so /interrupt stops a run between evaluations.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from core import runtime
from core.errors import EngineError
from diffusion.sampling import SAMPLERS, SCHEDULERS
from diffusion.sampling.guidance import CFGDenoiser, convert_cond, prepare_conds, repeat_to_batch_size
from diffusion.sampling.noise import cpu_generator, prepare_noise

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, Tensor, Tensor, int], None]

DISCARD_PENULTIMATE_SIGMA = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})
"""Samplers for which KSampler schedules n + 1 steps and drops the second-to-last sigma."""
RANDOM_INPAINT_NOISE = frozenset({"ddim"})
"""Samplers whose inpainting blend uses fresh noise from seed + 1 instead of the initial noise."""

__all__ = [
    "Sampler",
    "calculate_sigmas",
    "common_ksampler",
    "fix_empty_latent_channels",
    "guided_sample",
    "is_max_denoise",
    "ksampler_sigmas",
    "prepare_mask",
    "prepare_noise",
    "process_latent_in",
    "process_latent_out",
    "sample",
    "sample_custom",
    "sampler_object",
    "slice_sigmas",
]


# -- sigmas -----------------------------------------------------------------------------------------


def calculate_sigmas(model_sampling: Any, scheduler: str, steps: int) -> Tensor:
    """The named schedule for `steps` steps (BasicScheduler at denoise 1)."""
    return SCHEDULERS.resolve(scheduler)(model_sampling, steps)


def ksampler_sigmas(model_sampling: Any, sampler_name: str, scheduler: str, steps: int, denoise: float = 1.0) -> Tensor:
    """KSampler's sigmas: denoise d < 1 schedules int(steps / d) steps and keeps the last steps + 1;
    some samplers get one extra step with the penultimate sigma dropped (spec §6.4)."""
    if steps < 1:
        raise EngineError(f"steps must be at least 1, got {steps}")

    def for_steps(n: int) -> Tensor:
        discard = sampler_name in DISCARD_PENULTIMATE_SIGMA
        sigmas = calculate_sigmas(model_sampling, scheduler, n + 1 if discard else n)
        return torch.cat([sigmas[:-2], sigmas[-1:]]) if discard else sigmas

    if denoise is None or denoise > 0.9999:
        return for_steps(steps)
    if denoise <= 0.0:
        return torch.FloatTensor([])
    return for_steps(int(steps / denoise))[-(steps + 1) :]


def slice_sigmas(
    sigmas: Tensor, start_step: int | None = None, last_step: int | None = None, force_full_denoise: bool = False
) -> Tensor | None:
    """KSamplerAdvanced's window: cut at last_step (last sigma forced to 0 when force_full_denoise),
    then start at start_step. None means "nothing to do": return the latent unchanged."""
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[: last_step + 1]
        if force_full_denoise:
            sigmas = sigmas.clone()
            sigmas[-1] = 0
    if start_step is not None:
        if start_step < len(sigmas) - 1:
            sigmas = sigmas[start_step:]
        else:
            return None
    return sigmas


# -- samplers as objects (the SAMPLER socket type) ----------------------------------------------


@dataclass(frozen=True)
class Sampler:
    """A sampler function plus its options, ready to run inside guided_sample (ComfyUI's KSAMPLER)."""

    name: str
    function: Callable[..., Tensor]
    extra_options: Mapping[str, Any] = field(default_factory=dict)
    random_inpaint_noise: bool = False

    def sample(self, denoiser: CFGDenoiser, sigmas: Tensor, extra_args: dict, callback: ProgressCallback | None,
               noise: Tensor, latent_image: Tensor, denoise_mask: Tensor | None = None) -> Tensor:  # fmt: skip
        ms = denoiser.model_sampling
        mask_noise = noise
        if self.random_inpaint_noise:
            seed = extra_args.get("seed")
            gen = cpu_generator((seed if seed is not None else 41) + 1)
            mask_noise = torch.randn(noise.shape, generator=gen, device="cpu").to(noise.dtype).to(noise.device)
        model_k = InpaintDenoiser(denoiser, sigmas, latent_image, mask_noise)
        extra_args = {**extra_args, "denoise_mask": denoise_mask}
        x = ms.noise_scaling(sigmas[0], noise, latent_image, is_max_denoise(ms, sigmas[0]))
        total = len(sigmas) - 1
        k_callback = None
        if callback is not None:
            k_callback = lambda d: callback(d["i"], d["denoised"], d["x"], total)  # noqa: E731
        samples = self.function(model_k, x, sigmas, extra_args=extra_args, callback=k_callback, **self.extra_options)
        return ms.inverse_noise_scaling(sigmas[-1], samples)


def is_max_denoise(model_sampling: Any, first_sigma: Tensor) -> bool:
    """Sampling starts at (or above) the top of the table: full txt2img, noise gets sqrt(1 + sigma^2)."""
    max_sigma, sigma = float(model_sampling.sigma_max), float(first_sigma)
    return math.isclose(max_sigma, sigma, rel_tol=1e-05) or sigma > max_sigma


def sampler_object(name: str, **extra_options: Any) -> Sampler:
    """The registered sampler `name` (KSamplerSelect), with optional solver options (eta, s_noise...)."""
    return Sampler(name, SAMPLERS.resolve(name), dict(extra_options), name in RANDOM_INPAINT_NOISE)


class InpaintDenoiser:
    """Keeps the unmasked region on the noised original (x0-inpainting, KSamplerX0Inpaint): before
    each evaluation x = x*m + (latent + noise*sigma)*(1-m); after it, D = D*m + latent*(1-m)."""

    def __init__(self, inner: CFGDenoiser, sigmas: Tensor, latent_image: Tensor, noise: Tensor) -> None:
        self.inner_model = inner
        self.sigmas = sigmas
        self.latent_image = latent_image
        self.noise = noise

    @property
    def model_sampling(self) -> Any:
        return self.inner_model.model_sampling

    def __call__(self, x: Tensor, sigma: Tensor, denoise_mask: Tensor | None = None,
                 model_options: dict | None = None, seed: int | None = None, **_: Any) -> Tensor:  # fmt: skip
        model_options = model_options or {}
        if denoise_mask is not None:
            if "denoise_mask_function" in model_options:
                extra = {"model": self.inner_model, "sigmas": self.sigmas}
                denoise_mask = model_options["denoise_mask_function"](sigma, denoise_mask, extra_options=extra)
            latent_mask = 1.0 - denoise_mask
            sigma_b = sigma.reshape([sigma.shape[0]] + [1] * (self.noise.ndim - 1))
            noised = self.model_sampling.noise_scaling(sigma_b, self.noise, self.latent_image)
            x = x * denoise_mask + noised * latent_mask
        out = self.inner_model(x, sigma, model_options=model_options, seed=seed)
        if denoise_mask is not None:
            out = out * denoise_mask + self.latent_image * latent_mask
        return out


# -- latents and masks --------------------------------------------------------------------------------


def process_latent_in(model: Any, latent: Tensor) -> Tensor:
    """Stored latent -> model space (x scale_factor)."""
    fmt = getattr(model, "latent_format", None)
    if fmt is None:
        return latent
    if hasattr(fmt, "process_in"):
        return fmt.process_in(latent)
    return latent * fmt.scale_factor


def process_latent_out(model: Any, latent: Tensor) -> Tensor:
    """Model space -> stored latent (/ scale_factor)."""
    fmt = getattr(model, "latent_format", None)
    if fmt is None:
        return latent
    if hasattr(fmt, "process_out"):
        return fmt.process_out(latent)
    return latent / fmt.scale_factor


def fix_empty_latent_channels(model: Any, latent: Tensor) -> Tensor:
    """An all-zero latent with the wrong channel count becomes zeros with the model's count."""
    channels = getattr(getattr(model, "latent_format", None), "latent_channels", None)
    if channels and latent.shape[1] != channels and torch.count_nonzero(latent) == 0:
        return torch.zeros((latent.shape[0], channels, *latent.shape[2:]), dtype=latent.dtype, device=latent.device)
    return latent


def prepare_mask(noise_mask: Tensor, shape: Sequence[int], device: torch.device | str) -> Tensor:
    """(B, H, W) or (H, W) mask -> (B, C, h, w) at the latent size (bilinear), on `device`."""
    mask = noise_mask.reshape((-1, 1, noise_mask.shape[-2], noise_mask.shape[-1]))
    mask = torch.nn.functional.interpolate(mask, size=tuple(shape[2:]), mode="bilinear")
    if mask.shape[1] < shape[1]:
        mask = mask.repeat((1, shape[1], 1, 1))[:, : shape[1]]
    return repeat_to_batch_size(mask, shape[0]).to(device)


# -- the pipeline ---------------------------------------------------------------------------------------


def _interrupt_check() -> Callable[[], None] | None:
    rt = runtime.current()
    return rt.check_interrupted if rt is not None else None


def guided_sample(
    model: Any,
    noise: Tensor,
    positive: Sequence,
    negative: Sequence,
    cfg: float,
    sampler: Sampler,
    sigmas: Tensor,
    latent_image: Tensor,
    *,
    denoise_mask: Tensor | None = None,
    callback: ProgressCallback | None = None,
    seed: int | None = None,
    model_options: Mapping[str, Any] | None = None,
) -> Tensor:
    """Run `sampler` over `sigmas` with CFG (CFGGuider.sample). Returns the stored-scale latent on the CPU."""
    if sigmas.shape[-1] == 0:
        return latent_image
    device = getattr(model, "load_device", None) or latent_image.device
    noise, latent, sigmas = noise.to(device), latent_image.to(device), sigmas.to(device)
    if noise.shape != latent.shape:
        raise EngineError(f"noise shape {tuple(noise.shape)} does not match the latent's {tuple(latent.shape)}")
    if denoise_mask is not None:
        denoise_mask = prepare_mask(denoise_mask, noise.shape, device)
    if torch.count_nonzero(latent) > 0:  # an empty latent stays exactly zero
        latent = process_latent_in(model, latent)
    conds = {"positive": convert_cond(positive, "positive"), "negative": convert_cond(negative, "negative")}
    conds = prepare_conds(model, conds, noise, sigmas[0], latent_image=latent, denoise_mask=denoise_mask, seed=seed)
    options = {**getattr(model, "model_options", {}), **(model_options or {})}
    extra_args = {"model_options": options, "seed": seed}
    denoiser = CFGDenoiser(model, conds, cfg, _interrupt_check())
    samples = sampler.sample(denoiser, sigmas, extra_args, callback, noise, latent, denoise_mask)
    return process_latent_out(model, samples.to(torch.float32)).cpu()


def sample(
    model: Any,
    noise: Tensor | None,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Sequence,
    negative: Sequence,
    latent_image: Tensor,
    *,
    denoise: float = 1.0,
    start_step: int | None = None,
    last_step: int | None = None,
    force_full_denoise: bool = False,
    noise_mask: Tensor | None = None,
    seed: int | None = None,
    callback: ProgressCallback | None = None,
    disable_noise: bool = False,
    sigmas: Tensor | None = None,
) -> Tensor:
    """comfy.sample.sample: KSampler / KSamplerAdvanced on a latent tensor (stored scale, CPU out).

    `noise=None` draws it from `seed` (prepare_noise); `disable_noise` uses zeros. Unknown sampler or
    scheduler names raise (ComfyUI silently falls back to euler/simple; validation prevents them).
    """
    sampler = sampler_object(sampler_name)
    if disable_noise:
        noise = torch.zeros(latent_image.size(), dtype=latent_image.dtype, layout=latent_image.layout, device="cpu")
    elif noise is None:
        if seed is None:
            raise EngineError("sample() needs either a noise tensor or a seed to draw it from")
        noise = prepare_noise(latent_image, seed)
    if sigmas is None:
        sigmas = ksampler_sigmas(model.model_sampling, sampler_name, scheduler, steps, denoise)
    window = slice_sigmas(sigmas, start_step, last_step, force_full_denoise)
    if window is None:
        return latent_image
    return guided_sample(model, noise, positive, negative, cfg, sampler, window, latent_image,
                         denoise_mask=noise_mask, callback=callback, seed=seed)  # fmt: skip


def sample_custom(
    model: Any,
    noise: Tensor,
    cfg: float,
    sampler: Sampler | str,
    sigmas: Tensor,
    positive: Sequence,
    negative: Sequence,
    latent_image: Tensor,
    *,
    noise_mask: Tensor | None = None,
    callback: ProgressCallback | None = None,
    seed: int | None = None,
) -> Tensor:
    """comfy.sample.sample_custom: SamplerCustom with explicit SAMPLER and SIGMAS."""
    if isinstance(sampler, str):
        sampler = sampler_object(sampler)
    return guided_sample(model, noise, positive, negative, cfg, sampler, sigmas, latent_image,
                         denoise_mask=noise_mask, callback=callback, seed=seed)  # fmt: skip


def common_ksampler(
    model: Any,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Sequence,
    negative: Sequence,
    latent: Mapping[str, Any],
    *,
    denoise: float = 1.0,
    disable_noise: bool = False,
    start_step: int | None = None,
    last_step: int | None = None,
    force_full_denoise: bool = False,
    callback: ProgressCallback | None = None,
) -> dict[str, Any]:
    """What the KSampler / KSamplerAdvanced nodes do with a LATENT dict (nodes.common_ksampler):
    noise from seed (+ batch_index), the latent's noise_mask, and a new LATENT dict back."""
    if "samples" not in latent:
        raise EngineError("LATENT input has no 'samples' tensor")
    latent_image = fix_empty_latent_channels(model, latent["samples"])
    if disable_noise:
        noise = torch.zeros(latent_image.size(), dtype=latent_image.dtype, layout=latent_image.layout, device="cpu")
    else:
        noise = prepare_noise(latent_image, seed, latent.get("batch_index"))
    samples = sample(model, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                     denoise=denoise, start_step=start_step, last_step=last_step,
                     force_full_denoise=force_full_denoise, noise_mask=latent.get("noise_mask"), seed=seed,
                     callback=callback)  # fmt: skip
    out = dict(latent)
    out["samples"] = samples
    return out
