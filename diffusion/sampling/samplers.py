"""Samplers in the k-diffusion shape, part 1: shared helpers and the classic Karras-style solvers.

Every sampler is one function

    sample_x(model, x, sigmas, *, extra_args=None, callback=None, disable=None, **options) -> x

where `model(x, sigma, **extra_args)` is a denoiser returning the estimate of the clean sample
(D(x, sigma) in Karras et al. 2022) and carrying `.model_sampling`; `x` is the initial noisy sample
already scaled to sigmas[0]; `callback` receives {'x', 'i', 'sigma', 'sigma_hat', 'denoised'} once
per step. Randomness comes only from `noise_sampler` or from extra_args["seed"] (see noise.py), so
a run is reproducible. `disable` is accepted for call compatibility with ComfyUI's KSAMPLER (Loom
shows no progress bars here; progress goes through the callback).

The update rules follow ComfyUI's comfy/k_diffusion/sampling.py (itself k-diffusion) step for step,
including its end-of-schedule special cases, so the same seed gives the same latent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor

from diffusion.sampling.guidance import set_post_cfg_function
from diffusion.sampling.noise import NoiseSampler, default_noise_sampler

log = logging.getLogger(__name__)

StepCallback = Callable[[dict[str, Any]], None]


class Denoiser(Protocol):
    """What a sampler calls: D(x, sigma) -> denoised, plus the model's sigma conventions."""

    model_sampling: Any

    def __call__(self, x: Tensor, sigma: Tensor, **extra_args: Any) -> Tensor: ...


# -- helpers ------------------------------------------------------------------------------------


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dims so a per-batch value broadcasts over (B, C, H, W)."""
    return v[(...,) + (None,) * (ndim - v.ndim)]


def to_d(x: Tensor, sigma: Tensor, denoised: Tensor) -> Tensor:
    """Denoiser output -> derivative dx/dsigma of the probability-flow ODE (Karras eq. 4)."""
    return (x - denoised) / append_dims(sigma, x.ndim)


def get_ancestral_step(sigma_from: Tensor, sigma_to: Tensor, eta: float = 1.0) -> tuple[Tensor, Tensor]:
    """Split a step sigma_from -> sigma_to into a deterministic step down to sigma_down and fresh
    noise of std sigma_up (sigma_down^2 + sigma_up^2 = sigma_to^2); eta scales the noise."""
    if not eta:
        return sigma_to, 0.0  # type: ignore[return-value]
    sigma_up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def half_log_snr(sigma: Tensor) -> Tensor:
    """lambda = log(alpha / sigma_vp) = -log(sigma) for the VP models Loom samples (SD1/2/XL)."""
    return sigma.log().neg()


def sigma_from_half_log_snr(lam: Tensor) -> Tensor:
    return lam.neg().exp()


def ei_h_phi_1(h: Tensor) -> Tensor:
    """h * phi_1(h) of exponential integrators."""
    return torch.expm1(h)


def ei_h_phi_2(h: Tensor) -> Tensor:
    """h * phi_2(h) of exponential integrators."""
    return (torch.expm1(h) - h) / h


def extra(extra_args: dict[str, Any] | None) -> dict[str, Any]:
    return {} if extra_args is None else extra_args


def seed_of(extra_args: dict[str, Any]) -> int | None:
    return extra_args.get("seed")


def ancestral_noise(x: Tensor, extra_args: dict[str, Any], noise_sampler: NoiseSampler | None) -> NoiseSampler:
    return default_noise_sampler(x, seed=seed_of(extra_args)) if noise_sampler is None else noise_sampler


def capture_uncond(extra_args: dict[str, Any]) -> tuple[dict[str, Any], Callable[[], Tensor]]:
    """For CFG++ samplers: install a post-CFG hook that records the unconditional prediction
    (and forces the uncond pass even at cfg 1). Returns new extra_args and a getter."""
    box: list[Tensor | None] = [None]

    def post_cfg(args: dict[str, Any]) -> Tensor:
        box[0] = args["uncond_denoised"]
        return args["denoised"]

    model_options = dict(extra_args.get("model_options", {}))
    new_args = dict(extra_args)
    new_args["model_options"] = set_post_cfg_function(model_options, post_cfg, disable_cfg1_optimization=True)

    def get() -> Tensor:
        assert box[0] is not None, "the guidance wrapper never reported an unconditional prediction"
        return box[0]

    return new_args, get


def _churn(x: Tensor, sigma: Tensor, n: int, s_churn: float, s_tmin: float, s_tmax: float, s_noise: float):
    """Karras Alg. 2 "churn": raise sigma by gamma and add matching noise (off by default)."""
    gamma = min(s_churn / n, 2**0.5 - 1) if (s_churn > 0 and s_tmin <= sigma <= s_tmax) else 0.0
    sigma_hat = sigma * (gamma + 1)
    if gamma > 0:
        eps = torch.randn_like(x) * s_noise
        x = x + eps * (sigma_hat**2 - sigma**2) ** 0.5
    return x, sigma_hat


def _report(callback: StepCallback | None, x: Tensor, i: int, sigma: Tensor, sigma_hat: Tensor, denoised: Tensor):
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})


# -- Euler / Heun / DPM-2 (Karras et al. 2022, Alg. 1-2) ------------------------------------------------


@torch.no_grad()
def sample_euler(model, x, sigmas, *, extra_args=None, callback=None, disable=None,
                 s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):  # fmt: skip
    """Euler steps on the probability-flow ODE (Karras et al. 2022, Alg. 2)."""
    extra_args = extra(extra_args)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas[i], len(sigmas) - 1, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        x = x + d * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_euler_ancestral(model, x, sigmas, *, extra_args=None, callback=None, disable=None,
                           eta=1.0, s_noise=1.0, noise_sampler=None):  # fmt: skip
    """Euler step down to sigma_down, then add noise up to sigma_next (ancestral sampling)."""
    extra_args = extra(extra_args)
    noise_sampler = ancestral_noise(x, extra_args, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigma_down == 0:
            x = denoised
        else:
            d = to_d(x, sigmas[i], denoised)
            x = x + d * (sigma_down - sigmas[i]) + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_heun(model, x, sigmas, *, extra_args=None, callback=None, disable=None,
                s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):  # fmt: skip
    """Heun's second-order method (Karras et al. 2022, Alg. 2); Euler on the last step to 0."""
    extra_args = extra(extra_args)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas[i], len(sigmas) - 1, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = model(x_2, sigmas[i + 1] * s_in, **extra_args)
            d_2 = to_d(x_2, sigmas[i + 1], denoised_2)
            x = x + (d + d_2) / 2 * dt
    return x


@torch.no_grad()
def sample_heunpp2(model, x, sigmas, *, extra_args=None, callback=None, disable=None,
                   s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):  # fmt: skip
    """Heun++ (Carzit's sd-webui-samplers-scheduler): up to three slope evaluations per step,
    weighted by sigma / (k * sigma_0); Heun before the last step, Euler on it."""
    extra_args = extra(extra_args)
    s_in = x.new_ones([x.shape[0]])
    s_end = sigmas[-1]
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas[i], len(sigmas) - 1, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == s_end:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        denoised_2 = model(x_2, sigmas[i + 1] * s_in, **extra_args)
        d_2 = to_d(x_2, sigmas[i + 1], denoised_2)
        if sigmas[i + 2] == s_end:
            w2 = sigmas[i + 1] / (2 * sigmas[0])
            x = x + (d * (1 - w2) + d_2 * w2) * dt
            continue
        x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
        denoised_3 = model(x_3, sigmas[i + 2] * s_in, **extra_args)
        d_3 = to_d(x_3, sigmas[i + 2], denoised_3)
        w = 3 * sigmas[0]
        w2, w3 = sigmas[i + 1] / w, sigmas[i + 2] / w
        x = x + ((1 - w2 - w3) * d + w2 * d_2 + w3 * d_3) * dt
    return x


@torch.no_grad()
def sample_dpm_2(model, x, sigmas, *, extra_args=None, callback=None, disable=None,
                 s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):  # fmt: skip
    """DPM-Solver-2 style midpoint steps (in log sigma) with Karras' Alg. 2 framing."""
    extra_args = extra(extra_args)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas[i], len(sigmas) - 1, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:
            sigma_mid = sigma_hat.log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigma_hat)
            denoised_2 = model(x_2, sigma_mid * s_in, **extra_args)
            d_2 = to_d(x_2, sigma_mid, denoised_2)
            x = x + d_2 * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(model, x, sigmas, *, extra_args=None, callback=None, disable=None,
                           eta=1.0, s_noise=1.0, noise_sampler=None):  # fmt: skip
    """Ancestral sampling with DPM-Solver-2 midpoint steps."""
    extra_args = extra(extra_args)
    noise_sampler = ancestral_noise(x, extra_args, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            denoised_2 = model(x_2, sigma_mid * s_in, **extra_args)
            d_2 = to_d(x_2, sigma_mid, denoised_2)
            x = x + d_2 * (sigma_down - sigmas[i])
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


# -- linear multistep -------------------------------------------------------------------------------

# 8-point Gauss-Legendre nodes/weights on [-1, 1]: exact for polynomials up to degree 15, so the
# Lagrange-basis integrals below (degree <= 3) come out exact, as scipy's adaptive quad does.
_GL_NODES = (-0.9602898564975363, -0.7966664774136267, -0.525532409916329, -0.1834346424956498,
             0.1834346424956498, 0.525532409916329, 0.7966664774136267, 0.9602898564975363)  # fmt: skip
_GL_WEIGHTS = (0.1012285362903763, 0.2223810344533745, 0.3137066458778873, 0.362683783378362,
               0.362683783378362, 0.3137066458778873, 0.2223810344533745, 0.1012285362903763)  # fmt: skip


def linear_multistep_coeff(order: int, t: list[float], i: int, j: int) -> float:
    """Integral over [t_i, t_{i+1}] of the Lagrange basis polynomial of point t_{i-j}."""
    if order - 1 > i:
        raise ValueError(f"LMS order {order} is too high for step {i}")

    def basis(tau: float) -> float:
        prod = 1.0
        for k in range(order):
            if j != k:
                prod *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        return prod

    a, b = t[i], t[i + 1]
    half, mid = (b - a) / 2, (a + b) / 2
    return half * sum(w * basis(mid + half * n) for n, w in zip(_GL_NODES, _GL_WEIGHTS, strict=True))


@torch.no_grad()
def sample_lms(model, x, sigmas, *, extra_args=None, callback=None, disable=None, order=4):
    """Linear multistep (Adams-Bashforth in sigma) over the last `order` slopes."""
    extra_args = extra(extra_args)
    s_in = x.new_ones([x.shape[0]])
    t = [float(s) for s in sigmas.detach().cpu()]
    ds: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        ds.append(to_d(x, sigmas[i], denoised))
        if len(ds) > order:
            ds.pop(0)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            cur_order = min(i + 1, order)
            coeffs = [linear_multistep_coeff(cur_order, t, i, j) for j in range(cur_order)]
            x = x + sum(c * d for c, d in zip(coeffs, reversed(ds), strict=False))
    return x


# -- DDPM / LCM (one generic step per sigma) ----------------------------------------------------------


def _ddpm_step(x: Tensor, sigma: Tensor, sigma_prev: Tensor, eps: Tensor, noise_sampler: NoiseSampler) -> Tensor:
    """Ho et al. 2020, eq. 11 posterior mean (+ posterior noise) in VP space."""
    alpha_cumprod = 1 / ((sigma * sigma) + 1)
    alpha_cumprod_prev = 1 / ((sigma_prev * sigma_prev) + 1)
    alpha = alpha_cumprod / alpha_cumprod_prev
    mu = (1.0 / alpha).sqrt() * (x - (1 - alpha) * eps / (1 - alpha_cumprod).sqrt())
    if sigma_prev > 0:
        mu += ((1 - alpha) * (1.0 - alpha_cumprod_prev) / (1.0 - alpha_cumprod)).sqrt() * noise_sampler(
            sigma, sigma_prev
        )
    return mu


@torch.no_grad()
def sample_ddpm(model, x, sigmas, *, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """DDPM ancestral steps, taken in VP space (x / sqrt(1 + sigma^2)) and mapped back."""
    extra_args = extra(extra_args)
    noise_sampler = ancestral_noise(x, extra_args, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        eps = (x - denoised) / sigmas[i]
        x = _ddpm_step(x / torch.sqrt(1.0 + sigmas[i] ** 2.0), sigmas[i], sigmas[i + 1], eps, noise_sampler)
        if sigmas[i + 1] != 0:
            x *= torch.sqrt(1.0 + sigmas[i + 1] ** 2.0)
    return x


@torch.no_grad()
def sample_lcm(model, x, sigmas, *, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """Latent Consistency Model sampling: jump to the denoised estimate, re-noise to the next sigma."""
    extra_args = extra(extra_args)
    noise_sampler = ancestral_noise(x, extra_args, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            x = model.model_sampling.noise_scaling(sigmas[i + 1], noise_sampler(sigmas[i], sigmas[i + 1]), x)
    return x


def sample_ddim(model, x, sigmas, **kwargs):
    """ComfyUI's "ddim": plain Euler steps (Euler on the probability-flow ODE is DDIM with eta 0).
    What makes it differ from "euler" is inpainting: its masked-area noise is a fresh draw from
    seed + 1 rather than the initial noise (see ksampler.RANDOM_INPAINT_NOISE)."""
    return sample_euler(model, x, sigmas, **kwargs)
