"""Samplers, part 3: multistep ODE solvers (iPNDM, DEIS, RES, gradient estimation) and the CFG++
variants that step along the unconditional prediction (Chung et al. 2024, "CFG++")."""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from diffusion.sampling.samplers import (
    _report,
    ancestral_noise,
    capture_uncond,
    extra,
    get_ancestral_step,
    half_log_snr,
    sigma_from_half_log_snr,
    to_d,
)

log = logging.getLogger(__name__)


# -- iPNDM (Zhang & Chen 2023; zju-pi/diff-sampler) ------------------------------------------------


def _shift_in(buffer: list[Tensor], d: Tensor, max_order: int) -> None:
    """Keep the last max_order - 1 slopes, newest last."""
    if max_order <= 1:
        return
    if len(buffer) == max_order - 1:
        buffer.pop(0)
    buffer.append(d)


def _ipndm_variable_coeffs(order: int, t_steps: Tensor, i: int, t_next: Tensor) -> list[Tensor]:
    """Adams-Bashforth weights for non-uniform steps in sigma (order 2-4)."""
    t_cur = t_steps[i]
    h_n = t_next - t_cur
    h_n_1 = t_cur - t_steps[i - 1]
    if order == 2:
        return [(2 + (h_n / h_n_1)) / 2, -(h_n / h_n_1) / 2]
    h_n_2 = t_steps[i - 1] - t_steps[i - 2]
    temp1 = (1 - h_n / (3 * (h_n + h_n_1)) * (h_n * (h_n + h_n_1)) / (h_n_1 * (h_n_1 + h_n_2))) / 2
    if order == 3:
        return [
            (2 + (h_n / h_n_1)) / 2 + temp1,
            -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp1,
            temp1 * h_n_1 / h_n_2,
        ]
    h_n_3 = t_steps[i - 2] - t_steps[i - 3]
    temp2 = (
        ((1 - h_n / (3 * (h_n + h_n_1))) / 2 + (1 - h_n / (2 * (h_n + h_n_1))) * h_n / (6 * (h_n + h_n_1 + h_n_2)))
        * (h_n * (h_n + h_n_1) * (h_n + h_n_1 + h_n_2))
        / (h_n_1 * (h_n_1 + h_n_2) * (h_n_1 + h_n_2 + h_n_3))
    )
    ratio = h_n_1 * (h_n_1 + h_n_2) / (h_n_2 * (h_n_2 + h_n_3))
    return [
        (2 + (h_n / h_n_1)) / 2 + temp1 + temp2,
        -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp1 - (1 + (h_n_1 / h_n_2) + ratio) * temp2,
        temp1 * h_n_1 / h_n_2 + ((h_n_1 / h_n_2) + ratio * (1 + h_n_2 / h_n_3)) * temp2,
        -temp2 * ratio * h_n_1 / h_n_2,
    ]


def _ipndm(model, x, sigmas, extra_args, callback, max_order: int, variable: bool) -> Tensor:
    extra_args = extra(extra_args)
    s_in = x.new_ones([x.shape[0]])
    x_next = x
    buffer: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        x_cur = x_next
        denoised = model(x_cur, t_cur * s_in, **extra_args)
        _report(callback, x_cur, i, sigmas[i], sigmas[i], denoised)
        d_cur = (x_cur - denoised) / t_cur
        order = min(max_order, i + 1)
        if t_next == 0:
            x_next = denoised
        elif order == 1:
            x_next = x_cur + (t_next - t_cur) * d_cur
        elif variable:
            coeffs = _ipndm_variable_coeffs(order, sigmas, i, t_next)
            slope = coeffs[0] * d_cur
            for c, d in zip(coeffs[1:], reversed(buffer), strict=False):
                slope = slope + c * d
            x_next = x_cur + (t_next - t_cur) * slope
        else:
            num, den = _fixed_ab(order, d_cur, buffer)
            x_next = x_cur + (t_next - t_cur) * num / den
        _shift_in(buffer, d_cur, max_order)
    return x_next


def _fixed_ab(order: int, d_cur: Tensor, buf: list[Tensor]) -> tuple[Tensor, int]:
    """Fixed-step Adams-Bashforth: (weighted slopes, common denominator), evaluated in the same
    order as diff-sampler / ComfyUI so the rounding matches."""
    if order == 2:
        return 3 * d_cur - buf[-1], 2
    if order == 3:
        return 23 * d_cur - 16 * buf[-1] + 5 * buf[-2], 12
    return 55 * d_cur - 59 * buf[-1] + 37 * buf[-2] - 9 * buf[-3], 24


@torch.no_grad()
def sample_ipndm(model, x, sigmas, *, extra_args=None, callback=None, disable=None, max_order=4):
    """Improved PNDM: Adams-Bashforth in sigma with fixed-step weights, up to order 4."""
    return _ipndm(model, x, sigmas, extra_args, callback, max_order, variable=False)


@torch.no_grad()
def sample_ipndm_v(model, x, sigmas, *, extra_args=None, callback=None, disable=None, max_order=4):
    """iPNDM with Adams-Bashforth weights for variable step sizes."""
    return _ipndm(model, x, sigmas, extra_args, callback, max_order, variable=True)


# -- DEIS (Zhang & Chen 2023), "tAB" mode ---------------------------------------------------------


def _edm_to_vp_t(sigmas: Tensor, epsilon_s: float = 1e-3, sigma_min: float = 0.002, sigma_max: float = 80.0):
    """Map sigmas to the time of the VP SDE fitted to EDM's [0.002, 80] range (diff-sampler's edm2t)."""
    log_min = torch.log(torch.tensor(sigma_min) ** 2 + 1)
    log_max = torch.log(torch.tensor(sigma_max) ** 2 + 1)
    beta_d = 2 * (log_min / epsilon_s - log_max) / (epsilon_s - 1)
    beta_min = log_max - 0.5 * beta_d
    s = sigmas.detach().cpu()
    t_steps = ((beta_min**2 + 2 * beta_d * (s**2 + 1).log()).sqrt() - beta_min) / beta_d
    return t_steps, beta_min, beta_d + beta_min


def deis_coefficients(sigmas: Tensor, max_order: int, n: int = 10000) -> list[list[Tensor]]:
    """Per-step DEIS weights: integrals of the exponential-integrator kernel times the Lagrange
    basis of the previous time points, by a left Riemann sum over n points (as diff-sampler)."""
    t_steps, beta_0, beta_1 = _edm_to_vp_t(sigmas)
    out: list[list[Tensor]] = []
    for i in range(len(t_steps) - 1):
        t_cur, t_next = t_steps[i], t_steps[i + 1]
        order = min(i + 1, max_order)
        if order == 1 or sigmas[i + 1] <= 0:  # the last step to 0 is always first order
            out.append([])
            continue
        taus = torch.linspace(float(t_cur), float(t_next), n)
        dtau = (t_next - t_cur) / n
        prev_t = t_steps[[i - k for k in range(order)]]
        alpha = torch.exp(-0.5 * taus**2 * (beta_1 - beta_0) - taus * beta_0)
        d_log_alpha = -taus * (beta_1 - beta_0) - beta_0
        integrand = -0.5 * d_log_alpha / torch.sqrt(alpha * (1 - alpha))
        coeffs = []
        for j in range(order):
            poly = torch.ones_like(taus)
            for k in range(order):
                if k != j:
                    poly = poly * ((taus - prev_t[k]) / (prev_t[j] - prev_t[k]))
            coeffs.append(torch.sum(integrand * poly) * dtau)
        out.append(coeffs)
    return out


@torch.no_grad()
def sample_deis(model, x, sigmas, *, extra_args=None, callback=None, disable=None, max_order=3):
    """Diffusion Exponential Integrator Sampler (tAB-DEIS), up to order 3 by default."""
    extra_args = extra(extra_args)
    s_in = x.new_ones([x.shape[0]])
    coeff_list = deis_coefficients(sigmas, max_order)
    x_next = x
    buffer: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        x_cur = x_next
        denoised = model(x_cur, t_cur * s_in, **extra_args)
        _report(callback, x_cur, i, sigmas[i], sigmas[i], denoised)
        d_cur = (x_cur - denoised) / t_cur
        order = 1 if t_next <= 0 else min(max_order, i + 1)
        if order == 1:
            x_next = x_cur + (t_next - t_cur) * d_cur
        else:
            coeffs = coeff_list[i]
            x_next = x_cur + coeffs[0] * d_cur
            for c, d in zip(coeffs[1:], reversed(buffer), strict=False):
                x_next = x_next + c * d
        _shift_in(buffer, d_cur, max_order)
    return x_next


# -- RES multistep (Zhang et al. 2023, arXiv 2308.02157) ----------------------------------------------


@torch.no_grad()
def res_multistep(model, x, sigmas, *, extra_args=None, callback=None, disable=None,
                  s_noise=1.0, noise_sampler=None, eta=1.0, cfg_pp=False):  # fmt: skip
    """Second-order refined exponential solver (multistep), optionally ancestral and/or CFG++."""
    extra_args = extra(extra_args)
    noise_sampler = ancestral_noise(x, extra_args, noise_sampler)
    uncond = None
    if cfg_pp:
        extra_args, uncond = capture_uncond(extra_args)
    s_in = x.new_ones([x.shape[0]])
    phi1 = lambda t: torch.expm1(t) / t  # noqa: E731
    phi2 = lambda t: (phi1(t) - 1.0) / t  # noqa: E731
    old_sigma_down, old_denoised = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigma_down == 0 or old_denoised is None:
            if cfg_pp:
                x = denoised + to_d(x, sigmas[i], uncond()) * sigma_down
            else:
                x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_old = half_log_snr(sigmas[i]), half_log_snr(old_sigma_down)
            t_next, t_prev = half_log_snr(sigma_down), half_log_snr(sigmas[i - 1])
            h = t_next - t
            c2 = (t_prev - t_old) / h
            phi1_val, phi2_val = phi1(-h), phi2(-h)
            b1 = torch.nan_to_num(phi1_val - phi2_val / c2, nan=0.0)
            b2 = torch.nan_to_num(phi2_val / c2, nan=0.0)
            if cfg_pp:
                x = x + (denoised - uncond())
                x = sigma_from_half_log_snr(h) * x + h * (b1 * uncond() + b2 * old_denoised)
            else:
                x = sigma_from_half_log_snr(h) * x + h * (b1 * denoised + b2 * old_denoised)
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        old_denoised = uncond() if cfg_pp else denoised
        old_sigma_down = sigma_down
    return x


def sample_res_multistep(model, x, sigmas, *, s_noise=1.0, noise_sampler=None, **kwargs):
    """RES multistep, deterministic (eta 0)."""
    return res_multistep(
        model, x, sigmas, s_noise=s_noise, noise_sampler=noise_sampler, eta=0.0, cfg_pp=False, **kwargs
    )


def sample_res_multistep_cfg_pp(model, x, sigmas, *, s_noise=1.0, noise_sampler=None, **kwargs):
    """RES multistep with CFG++, deterministic."""
    return res_multistep(model, x, sigmas, s_noise=s_noise, noise_sampler=noise_sampler, eta=0.0, cfg_pp=True, **kwargs)


def sample_res_multistep_ancestral(model, x, sigmas, *, eta=1.0, s_noise=1.0, noise_sampler=None, **kwargs):
    """RES multistep with ancestral noise."""
    return res_multistep(
        model, x, sigmas, s_noise=s_noise, noise_sampler=noise_sampler, eta=eta, cfg_pp=False, **kwargs
    )


def sample_res_multistep_ancestral_cfg_pp(model, x, sigmas, *, eta=1.0, s_noise=1.0, noise_sampler=None, **kwargs):
    """RES multistep with ancestral noise and CFG++."""
    return res_multistep(model, x, sigmas, s_noise=s_noise, noise_sampler=noise_sampler, eta=eta, cfg_pp=True, **kwargs)


# -- gradient estimation (Permenter & Yuan 2024) ---------------------------------------------------


@torch.no_grad()
def sample_gradient_estimation(model, x, sigmas, *, extra_args=None, callback=None, disable=None,
                               ge_gamma=2.0, cfg_pp=False):  # fmt: skip
    """Euler plus a correction (ge_gamma - 1) * (d - d_prev) that extrapolates the denoiser's
    gradient (https://openreview.net/pdf?id=o2ND9v0CeK)."""
    extra_args = extra(extra_args)
    uncond = None
    if cfg_pp:
        extra_args, uncond = capture_uncond(extra_args)
    s_in = x.new_ones([x.shape[0]])
    old_d = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        d = to_d(x, sigmas[i], uncond() if cfg_pp else denoised)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = denoised + d * sigmas[i + 1] if cfg_pp else x + d * dt
            if i >= 1:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        old_d = d
    return x


def sample_gradient_estimation_cfg_pp(model, x, sigmas, *, ge_gamma=2.0, **kwargs):
    """Gradient estimation stepping along the unconditional prediction (CFG++)."""
    return sample_gradient_estimation(model, x, sigmas, ge_gamma=ge_gamma, cfg_pp=True, **kwargs)


# -- CFG++ versions of the classic samplers ---------------------------------------------------------


@torch.no_grad()
def sample_euler_ancestral_cfg_pp(model, x, sigmas, *, extra_args=None, callback=None, disable=None,
                                  eta=1.0, s_noise=1.0, noise_sampler=None):  # fmt: skip
    """Euler ancestral with CFG++: renoise along the unconditional prediction (DDIM-like)."""
    extra_args = extra(extra_args)
    noise_sampler = ancestral_noise(x, extra_args, noise_sampler)
    extra_args, uncond = capture_uncond(extra_args)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        alpha_s = sigmas[i] * half_log_snr(sigmas[i]).exp()
        alpha_t = sigmas[i + 1] * half_log_snr(sigmas[i + 1]).exp()
        d = to_d(x, sigmas[i], alpha_s * uncond())
        sigma_down, sigma_up = get_ancestral_step(sigmas[i] / alpha_s, sigmas[i + 1] / alpha_t, eta=eta)
        x = alpha_t * denoised + (alpha_t * sigma_down) * d
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def sample_euler_cfg_pp(model, x, sigmas, *, extra_args=None, callback=None, disable=None):
    """Euler with CFG++ (deterministic)."""
    return sample_euler_ancestral_cfg_pp(model, x, sigmas, extra_args=extra_args, callback=callback,
                                         eta=0.0, s_noise=0.0)  # fmt: skip


@torch.no_grad()
def sample_dpmpp_2s_ancestral_cfg_pp(model, x, sigmas, *, extra_args=None, callback=None, disable=None,
                                     eta=1.0, s_noise=1.0, noise_sampler=None):  # fmt: skip
    """DPM-Solver++(2S) ancestral with CFG++."""
    extra_args = extra(extra_args)
    noise_sampler = ancestral_noise(x, extra_args, noise_sampler)
    extra_args, uncond = capture_uncond(extra_args)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigma_down == 0:
            x = denoised + to_d(x, sigmas[i], uncond()) * sigma_down
        else:
            t, t_next = half_log_snr(sigmas[i]), half_log_snr(sigma_down)
            h = t_next - t
            s = t + h / 2
            ratio_s = sigma_from_half_log_snr(s) / sigma_from_half_log_snr(t)
            x_2 = ratio_s * (x + (denoised - uncond())) - (-h * 0.5).expm1() * denoised
            denoised_2 = model(x_2, sigma_from_half_log_snr(s) * s_in, **extra_args)
            ratio_t = sigma_from_half_log_snr(t_next) / sigma_from_half_log_snr(t)
            x = ratio_t * (x + (denoised - uncond())) - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_2m_cfg_pp(model, x, sigmas, *, extra_args=None, callback=None, disable=None):
    """DPM-Solver++(2M) with CFG++."""
    extra_args, uncond = capture_uncond(extra(extra_args))
    s_in = x.new_ones([x.shape[0]])
    old_uncond = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        t, t_next = half_log_snr(sigmas[i]), half_log_snr(sigmas[i + 1])
        h = t_next - t
        if old_uncond is None or sigmas[i + 1] == 0:
            denoised_mix = -torch.exp(-h) * uncond()
        else:
            r = (t - half_log_snr(sigmas[i - 1])) / h
            denoised_mix = -torch.exp(-h) * uncond() - torch.expm1(-h) * (1 / (2 * r)) * (denoised - old_uncond)
        x = denoised + denoised_mix + torch.exp(-h) * x
        old_uncond = uncond()
    return x
