"""Samplers, part 4: newer stochastic solvers in data prediction and half-log-SNR time:
ER-SDE (Cui et al. 2023), SEEDS-2/3 (Gonzalez et al. 2023), exponential Heun, SA-Solver (Xue et al. 2023).

All use the default ancestral noise sampler (a generator seeded from extra_args["seed"]).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
from torch import Tensor

from diffusion.sampling.samplers import (
    _report,
    ancestral_noise,
    ei_h_phi_1,
    ei_h_phi_2,
    extra,
    half_log_snr,
    sigma_from_half_log_snr,
)

log = logging.getLogger(__name__)


# -- ER-SDE-Solver-3 (arXiv 2309.06169) --------------------------------------------------------------


def _er_sde_noise_scaler(x: Tensor) -> Tensor:
    return x * ((x**0.3).exp() + 10.0)


@torch.no_grad()
def sample_er_sde(model, x, sigmas, *, extra_args=None, callback=None, disable=None, s_noise=1.0,
                  noise_sampler=None, noise_scaler=None, max_stage=3):  # fmt: skip
    """Extended reverse-time SDE solver (VP, up to stage 3); the stage-2/3 integrals are taken
    numerically over 200 points, as the reference implementation does."""
    extra_args = extra(extra_args)
    noise_sampler = ancestral_noise(x, extra_args, noise_sampler)
    noise_scaler = _er_sde_noise_scaler if noise_scaler is None else noise_scaler
    s_in = x.new_ones([x.shape[0]])
    n_points = 200.0
    point_indice = torch.arange(0, n_points, dtype=torch.float32, device=x.device)
    er_lambdas = half_log_snr(sigmas).neg().exp()  # er_lambda = sigma / alpha
    old_denoised, old_denoised_d = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        stage = min(max_stage, i + 1)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lam_s, lam_t = er_lambdas[i], er_lambdas[i + 1]
            alpha_s, alpha_t = sigmas[i] / lam_s, sigmas[i + 1] / lam_t
            r = noise_scaler(lam_t) / noise_scaler(lam_s)
            x = (alpha_t / alpha_s) * r * x + alpha_t * (1 - r) * denoised
            if stage >= 2:
                dt = lam_t - lam_s
                step = -dt / n_points
                lambda_pos = lam_t + point_indice * step
                scaled_pos = noise_scaler(lambda_pos)
                s = torch.sum(1 / scaled_pos) * step
                denoised_d = (denoised - old_denoised) / (lam_s - er_lambdas[i - 1])
                x = x + alpha_t * (dt + s * noise_scaler(lam_t)) * denoised_d
                if stage >= 3:
                    s_u = torch.sum((lambda_pos - lam_s) / scaled_pos) * step
                    denoised_u = (denoised_d - old_denoised_d) / ((lam_s - er_lambdas[i - 2]) / 2)
                    x = x + alpha_t * ((dt**2) / 2 + s_u * noise_scaler(lam_t)) * denoised_u
                old_denoised_d = denoised_d
            if s_noise > 0:
                std = (lam_t**2 - lam_s**2 * r**2).sqrt().nan_to_num(nan=0.0)
                x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * std
        old_denoised = denoised
    return x


# -- SEEDS (arXiv 2305.14267) --------------------------------------------------------------------------


@torch.no_grad()
def sample_seeds_2(model, x, sigmas, *, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                   noise_sampler=None, r=0.5, solver_type="phi_1"):  # fmt: skip
    """SEEDS-2: two-stage stochastic exponential solver (data prediction)."""
    if solver_type not in {"phi_1", "phi_2"}:
        raise ValueError("solver_type must be 'phi_1' or 'phi_2'")
    extra_args = extra(extra_args)
    noise_sampler = ancestral_noise(x, extra_args, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    inject_noise = eta > 0 and s_noise > 0
    fac = 1 / (2 * r)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = half_log_snr(sigmas[i]), half_log_snr(sigmas[i + 1])
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_s_1 = torch.lerp(lambda_s, lambda_t, r)
        sigma_s_1 = sigma_from_half_log_snr(lambda_s_1)
        alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()
        x_2 = sigma_s_1 / sigmas[i] * (-r * h * eta).exp() * x - alpha_s_1 * ei_h_phi_1(-r * h_eta) * denoised
        if inject_noise:
            sde_noise = (-2 * r * h * eta).expm1().neg().sqrt() * noise_sampler(sigmas[i], sigma_s_1)
            x_2 = x_2 + sde_noise * sigma_s_1 * s_noise
        denoised_2 = model(x_2, sigma_s_1 * s_in, **extra_args)
        if solver_type == "phi_1":
            denoised_d = torch.lerp(denoised, denoised_2, fac)
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * ei_h_phi_1(-h_eta) * denoised_d
        else:
            b2 = ei_h_phi_2(-h_eta) / r
            b1 = ei_h_phi_1(-h_eta) - b2
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * (b1 * denoised + b2 * denoised_2)
        if inject_noise:
            seg = (r - 1) * h * eta
            sde_noise = sde_noise * seg.exp()
            sde_noise = sde_noise + seg.mul(2).expm1().neg().sqrt() * noise_sampler(sigma_s_1, sigmas[i + 1])
            x = x + sde_noise * sigmas[i + 1] * s_noise
    return x


def sample_exp_heun_2_x0(model, x, sigmas, *, extra_args=None, callback=None, disable=None, solver_type="phi_2"):
    """Deterministic exponential Heun (2nd order) in data prediction and log-SNR time."""
    return sample_seeds_2(model, x, sigmas, extra_args=extra_args, callback=callback, eta=0.0, s_noise=0.0,
                          r=1.0, solver_type=solver_type)  # fmt: skip


def sample_exp_heun_2_x0_sde(model, x, sigmas, *, extra_args=None, callback=None, disable=None, eta=1.0,
                             s_noise=1.0, noise_sampler=None, solver_type="phi_2"):  # fmt: skip
    """Stochastic exponential Heun (2nd order) in data prediction and log-SNR time."""
    return sample_seeds_2(model, x, sigmas, extra_args=extra_args, callback=callback, eta=eta, s_noise=s_noise,
                          noise_sampler=noise_sampler, r=1.0, solver_type=solver_type)  # fmt: skip


@torch.no_grad()
def sample_seeds_3(model, x, sigmas, *, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                   noise_sampler=None, r_1=1.0 / 3, r_2=2.0 / 3):  # fmt: skip
    """SEEDS-3: three-stage stochastic exponential solver (data prediction)."""
    extra_args = extra(extra_args)
    noise_sampler = ancestral_noise(x, extra_args, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    inject_noise = eta > 0 and s_noise > 0
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = half_log_snr(sigmas[i]), half_log_snr(sigmas[i + 1])
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_s_1, lambda_s_2 = torch.lerp(lambda_s, lambda_t, r_1), torch.lerp(lambda_s, lambda_t, r_2)
        sigma_s_1, sigma_s_2 = sigma_from_half_log_snr(lambda_s_1), sigma_from_half_log_snr(lambda_s_2)
        alpha_s_1, alpha_s_2 = sigma_s_1 * lambda_s_1.exp(), sigma_s_2 * lambda_s_2.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()
        # stage 1
        x_2 = sigma_s_1 / sigmas[i] * (-r_1 * h * eta).exp() * x - alpha_s_1 * ei_h_phi_1(-r_1 * h_eta) * denoised
        if inject_noise:
            sde_noise = (-2 * r_1 * h * eta).expm1().neg().sqrt() * noise_sampler(sigmas[i], sigma_s_1)
            x_2 = x_2 + sde_noise * sigma_s_1 * s_noise
        denoised_2 = model(x_2, sigma_s_1 * s_in, **extra_args)
        # stage 2
        a3_2 = r_2 / r_1 * ei_h_phi_2(-r_2 * h_eta)
        a3_1 = ei_h_phi_1(-r_2 * h_eta) - a3_2
        x_3 = sigma_s_2 / sigmas[i] * (-r_2 * h * eta).exp() * x - alpha_s_2 * (a3_1 * denoised + a3_2 * denoised_2)
        if inject_noise:
            seg = (r_1 - r_2) * h * eta
            sde_noise = sde_noise * seg.exp() + seg.mul(2).expm1().neg().sqrt() * noise_sampler(sigma_s_1, sigma_s_2)
            x_3 = x_3 + sde_noise * sigma_s_2 * s_noise
        denoised_3 = model(x_3, sigma_s_2 * s_in, **extra_args)
        # stage 3
        b3 = ei_h_phi_2(-h_eta) / r_2
        b1 = ei_h_phi_1(-h_eta) - b3
        x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * (b1 * denoised + b3 * denoised_3)
        if inject_noise:
            seg = (r_2 - 1) * h * eta
            sde_noise = sde_noise * seg.exp() + seg.mul(2).expm1().neg().sqrt() * noise_sampler(
                sigma_s_2, sigmas[i + 1]
            )
            x = x + sde_noise * sigmas[i + 1] * s_noise
    return x


# -- SA-Solver (NeurIPS 2023, arXiv 2309.05019) -----------------------------------------------------


def _exponential_coeffs(s: Tensor, t: Tensor, order: int, tau: float) -> Tensor:
    """(1 + tau^2) * integral_s^t exp((1 + tau^2) x) x^p dx for p < order, with exp((1 + tau^2) t)
    factored out; integration by parts gives a lower-triangular recursion."""
    tau_mul = 1 + tau**2
    h = t - s
    p = torch.arange(order, dtype=s.dtype, device=s.device)
    product_terms = t**p - s**p * (-tau_mul * h).exp()
    depth = p.unsqueeze(1) - p.unsqueeze(0)
    log_factorial = (p + 1).lgamma()
    coeff = log_factorial.unsqueeze(1) - log_factorial.unsqueeze(0)
    if tau > 0:
        coeff = coeff - depth * math.log(tau_mul)
    signs = torch.where(depth % 2 == 0, 1.0, -1.0)
    return (coeff.exp() * signs).tril() @ product_terms


def _simple_b_coeffs(sigma_next, lambdas, lambda_s, lambda_t, tau, corrector: bool) -> Tensor:
    """The paper's simplified order-2 coefficients (Appendix D)."""
    tau_mul = 1 + tau**2
    h = lambda_t - lambda_s
    alpha_t = sigma_next * lambda_t.exp()
    if corrector:
        b_1 = alpha_t * (0.5 * tau_mul * h)
        b_2 = alpha_t * (-h * tau_mul).expm1().neg() - b_1
    else:
        b_2 = alpha_t * (0.5 * tau_mul * h**2) / (lambdas[-2] - lambda_s)
        b_1 = alpha_t * (-h * tau_mul).expm1().neg() - b_2
    return torch.stack([b_2, b_1])


def stochastic_adams_b_coeffs(sigma_next, lambdas, lambda_s, lambda_t, tau, simple_order_2=False, corrector=False):
    """b_i of eqs. 15/18: integrals of the Lagrange basis over [lambda_s, lambda_t] (one per point)."""
    n = lambdas.shape[0]
    if simple_order_2 and n == 2:
        return _simple_b_coeffs(sigma_next, lambdas, lambda_s, lambda_t, tau, corrector)
    integrals = _exponential_coeffs(lambda_s, lambda_t, n, tau)
    lagrange = torch.linalg.solve(torch.vander(lambdas, n, increasing=True).T, integrals)
    return sigma_next * lambda_t.exp() * lagrange


def tau_interval(start_sigma: float, end_sigma: float, eta: float = 1.0) -> Callable[[Tensor | float], float]:
    """Stochasticity eta inside [end_sigma, start_sigma], 0 (ODE) elsewhere."""

    def tau(sigma: Tensor | float) -> float:
        if eta <= 0:
            return 0.0
        s = sigma.item() if isinstance(sigma, Tensor) else sigma
        return eta if start_sigma >= s >= end_sigma else 0.0

    return tau


def _weighted(preds: list[Tensor], b: Tensor) -> Tensor:
    return torch.tensordot(torch.stack(preds, dim=1), b, dims=([1], [0]))


@torch.no_grad()
def sample_sa_solver(model, x, sigmas, *, extra_args=None, callback=None, disable=None, tau_func=None,
                     s_noise=1.0, noise_sampler=None, predictor_order=3, corrector_order=4, use_pece=False,
                     simple_order_2=False):  # fmt: skip
    """Stochastic Adams predictor-corrector; noise only between 20% and 80% of the schedule."""
    if len(sigmas) <= 1:
        return x
    extra_args = extra(extra_args)
    noise_sampler = ancestral_noise(x, extra_args, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    ms = model.model_sampling
    lambdas = half_log_snr(sigmas)
    if tau_func is None:
        tau_func = tau_interval(ms.percent_to_sigma(0.2), ms.percent_to_sigma(0.8), eta=1.0)
    max_order = max(predictor_order, corrector_order)
    x_pred = x
    h, tau_t, noise = 0.0, 0.0, 0.0
    preds: list[Tensor] = []
    lower_order_to_end = sigmas[-1].item() == 0
    for i in range(len(sigmas) - 1):
        denoised = model(x_pred, sigmas[i] * s_in, **extra_args)
        _report(callback, x_pred, i, sigmas[i], sigmas[i], denoised)
        preds = [*preds, denoised][-max_order:]
        p_order = min(predictor_order, len(preds))
        c_order = 0 if i == 0 or (sigmas[i + 1] == 0 and not use_pece) else min(corrector_order, len(preds))
        if lower_order_to_end:
            p_order = min(p_order, len(sigmas) - 2 - i)
            c_order = min(c_order, len(sigmas) - 1 - i)
        if c_order == 0:
            x = x_pred
        else:  # corrector: redo the last step with the new evaluation included
            b = stochastic_adams_b_coeffs(sigmas[i], lambdas[i - c_order + 1 : i + 1], lambdas[i - 1], lambdas[i],
                                          tau_t, simple_order_2, corrector=True)  # fmt: skip
            x = sigmas[i] / sigmas[i - 1] * (-(tau_t**2) * h).exp() * x + _weighted(preds[-c_order:], b)
            if tau_t > 0 and s_noise > 0:
                x = x + noise  # the predictor step's noise
            if use_pece:
                denoised = model(x, sigmas[i] * s_in, **extra_args)
                preds[-1] = denoised
        if sigmas[i + 1] == 0:
            x_pred = denoised
            continue
        tau_t = tau_func(sigmas[i + 1])
        b = stochastic_adams_b_coeffs(sigmas[i + 1], lambdas[i - p_order + 1 : i + 1], lambdas[i], lambdas[i + 1],
                                      tau_t, simple_order_2, corrector=False)  # fmt: skip
        h = lambdas[i + 1] - lambdas[i]
        x_pred = sigmas[i + 1] / sigmas[i] * (-(tau_t**2) * h).exp() * x + _weighted(preds[-p_order:], b)
        if tau_t > 0 and s_noise > 0:
            std = (-2 * tau_t**2 * h).expm1().neg().sqrt()
            noise = noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * std * s_noise
            x_pred = x_pred + noise
    return x_pred


def sample_sa_solver_pece(model, x, sigmas, **kwargs):
    """SA-Solver in PECE mode (predict, evaluate, correct, evaluate)."""
    return sample_sa_solver(model, x, sigmas, use_pece=True, **kwargs)
