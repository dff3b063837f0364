"""Sigma schedules (spec §6.4). Each KSampler scheduler is `fn(model_sampling, steps) -> sigmas`:
a float32 tensor that usually has steps + 1 values ending in 0.

The arithmetic mirrors ComfyUI (comfy/samplers.py, comfy/k_diffusion/sampling.py) operation for
operation, in the same dtypes, so the sigmas are bit-identical; that is what makes a seed reproduce
the same image. The plain `sigmas_*` builders also serve the SIGMAS nodes (KarrasScheduler...).
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor

from diffusion.sampling.model_sampling import ModelSamplingDiscrete

log = logging.getLogger(__name__)


def append_zero(x: Tensor) -> Tensor:
    return torch.cat([x, x.new_zeros([1])])


# -- continuous builders (k-diffusion) ---------------------------------------------------------------


def sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device: str = "cpu") -> Tensor:
    """Karras et al. 2022, eq. 5: interpolate sigma^(1/rho) linearly, then raise to rho."""
    ramp = torch.linspace(0, 1, n, device=device)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return append_zero(sigmas).to(device)


def sigmas_exponential(n: int, sigma_min: float, sigma_max: float, device: str = "cpu") -> Tensor:
    """Uniform in log sigma."""
    sigmas = torch.linspace(math.log(sigma_max), math.log(sigma_min), n, device=device).exp()
    return append_zero(sigmas)


def sigmas_polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0, device: str = "cpu") -> Tensor:
    """A polynomial (degree rho) in log sigma."""
    ramp = torch.linspace(1, 0, n, device=device) ** rho
    sigmas = torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min))
    return append_zero(sigmas)


def sigmas_vp(n: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3, device: str = "cpu") -> Tensor:
    """The continuous VP schedule of Song et al. 2021."""
    t = torch.linspace(1, eps_s, n, device=device)
    sigmas = torch.sqrt(torch.special.expm1(beta_d * t**2 / 2 + beta_min * t))
    return append_zero(sigmas)


def sigmas_laplace(
    n: int, sigma_min: float, sigma_max: float, mu: float = 0.0, beta: float = 0.5, device: str = "cpu"
) -> Tensor:
    """Tiankai et al. 2024: log sigma follows a Laplace quantile function (no trailing zero)."""
    epsilon = 1e-5  # keeps log() finite at the ends
    x = torch.linspace(0, 1, n, device=device)
    lmb = mu - beta * torch.sign(0.5 - x) * torch.log(1 - 2 * torch.abs(0.5 - x) + epsilon)
    return torch.clamp(torch.exp(lmb), min=sigma_min, max=sigma_max)


def sigmas_kl_optimal(n: int, sigma_min: float, sigma_max: float) -> Tensor:
    """Optimal schedule under the KL bound (AUTOMATIC1111 PR 15608): linear in atan(sigma).
    One step gives [sigma_max, 0] (ComfyUI divides 0 by 0 there and returns NaN)."""
    adj_idxs = torch.arange(n, dtype=torch.float).div_(max(n - 1, 1))
    sigmas = adj_idxs.new_zeros(n + 1)
    sigmas[:-1] = (adj_idxs * math.atan(sigma_min) + (1 - adj_idxs) * math.atan(sigma_max)).tan_()
    return sigmas


# -- table-based schedulers (need the model's sigma table) ----------------------------------------


def simple_scheduler(ms: ModelSamplingDiscrete, steps: int) -> Tensor:
    """Every (1000/steps)-th table entry from the top."""
    stride = len(ms.sigmas) / steps
    sigs = [float(ms.sigmas[-(1 + int(i * stride))]) for i in range(steps)]
    return torch.FloatTensor([*sigs, 0.0])


def ddim_uniform_scheduler(ms: ModelSamplingDiscrete, steps: int) -> Tensor:
    """Table indices 1, 1+s, 1+2s, ... (s = 1000 // steps) reversed, then 0. The length can exceed
    steps + 1 (e.g. 30 steps give 31 steps, 32 values) - ComfyUI's quirk, kept for seed compatibility."""
    if math.isclose(float(ms.sigmas[1]), 0, abs_tol=0.00001):
        steps += 1
        sigs = []
    else:
        sigs = [0.0]
    stride = max(len(ms.sigmas) // steps, 1)
    for idx in range(1, len(ms.sigmas), stride):
        sigs.append(float(ms.sigmas[idx]))
    return torch.FloatTensor(sigs[::-1])


def normal_scheduler(ms: ModelSamplingDiscrete, steps: int, sgm: bool = False) -> Tensor:
    """Timesteps uniform from timestep(sigma_max) to timestep(sigma_min), mapped through sigma(t).
    `sgm`: n+1 points with the last dropped (SGM/SDXL "trailing" spacing)."""
    start = ms.timestep(ms.sigma_max)
    end = ms.timestep(ms.sigma_min)
    add_zero = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(ms.sigma(end)), 0, abs_tol=0.00001):
            steps += 1
            add_zero = False
        timesteps = torch.linspace(start, end, steps)
    sigs = [float(ms.sigma(ts)) for ts in timesteps]
    if add_zero:
        sigs.append(0.0)
    return torch.FloatTensor(sigs)


def sgm_uniform_scheduler(ms: ModelSamplingDiscrete, steps: int) -> Tensor:
    return normal_scheduler(ms, steps, sgm=True)


def karras_scheduler(ms: ModelSamplingDiscrete, steps: int) -> Tensor:
    return sigmas_karras(steps, float(ms.sigma_min), float(ms.sigma_max))


def exponential_scheduler(ms: ModelSamplingDiscrete, steps: int) -> Tensor:
    return sigmas_exponential(steps, float(ms.sigma_min), float(ms.sigma_max))


def kl_optimal_scheduler(ms: ModelSamplingDiscrete, steps: int) -> Tensor:
    return sigmas_kl_optimal(steps, float(ms.sigma_min), float(ms.sigma_max))


def beta_scheduler(ms: ModelSamplingDiscrete, steps: int, alpha: float = 0.6, beta: float = 0.6) -> Tensor:
    """Lee et al. 2024 (arXiv 2407.12173): timesteps at the quantiles of Beta(alpha, beta),
    consecutive duplicates dropped."""
    total = len(ms.sigmas) - 1
    sigs: list[float] = []
    last_t = -1.0
    for i in range(steps):
        # 1 - numpy.linspace(0, 1, steps, endpoint=False)[i], computed the way numpy does (i * step)
        u = 1.0 - i * (1.0 / steps)
        t = float(round(beta_ppf(u, alpha, beta) * total))  # round() is half-to-even, like numpy.rint
        if t != last_t:
            sigs.append(float(ms.sigmas[int(t)]))
        last_t = t
    sigs.append(0.0)
    return torch.FloatTensor(sigs)


def linear_quadratic_scheduler(
    ms: ModelSamplingDiscrete, steps: int, threshold_noise: float = 0.025, linear_steps: int | None = None
) -> Tensor:
    """Mochi's schedule: linear up to threshold_noise for half the steps, then quadratic to 1;
    flipped (1 - s) and scaled by sigma_max. Already ends in 0."""
    if steps == 1:
        schedule = [1.0, 0.0]
    else:
        if linear_steps is None:
            linear_steps = steps // 2
        linear = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        step_diff = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        quadratic_coef = step_diff / (linear_steps * quadratic_steps**2)
        linear_coef = threshold_noise / linear_steps - 2 * step_diff / (quadratic_steps**2)
        const = quadratic_coef * (linear_steps**2)
        quadratic = [quadratic_coef * (i**2) + linear_coef * i + const for i in range(linear_steps, steps)]
        schedule = [1.0 - s for s in [*linear, *quadratic, 1.0]]
    return torch.FloatTensor(schedule) * ms.sigma_max.cpu()


# -- Beta distribution quantile (for the beta scheduler; stdlib only, no scipy at runtime) ----------


def _nonzero(v: float) -> float:
    return v if abs(v) > 1e-300 else 1e-300


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 / _nonzero(1.0 - qab * x / qap)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        # even step of the fraction, then the odd one
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 / _nonzero(1.0 + aa * d)
            c = _nonzero(1.0 + aa / c)
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return h


def beta_cdf(x: float, a: float, b: float) -> float:
    """Regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    # The continued fraction converges fast for x < (a+1)/(a+b+2); use the symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def beta_ppf(q: float, a: float, b: float) -> float:
    """Quantile of Beta(a, b): the smallest float x with I_x(a, b) >= q, by bisection.

    The median of a symmetric Beta is exactly 0.5; the beta scheduler then hits an exact rounding
    tie (0.5 * 999 = 499.5 -> 500), so that case must not come out an ulp low.
    """
    if q <= 0.0:
        return 0.0
    if q >= 1.0:
        return 1.0
    if a == b and q == 0.5:
        return 0.5
    lo, hi = 0.0, 1.0
    while True:
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            return hi
        if beta_cdf(mid, a, b) < q:
            lo = mid
        else:
            hi = mid
