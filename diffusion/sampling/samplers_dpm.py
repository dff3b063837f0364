"""Samplers, part 2: DPM-Solver (Lu et al. 2022) and DPM-Solver++ (Lu et al. 2022b) families.

`*_sde` samplers draw their noise from a Brownian tree seeded with extra_args["seed"]: on the CPU
for the plain names, on the latent's device for the `*_gpu` names (different numbers, same law).
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor

from diffusion.sampling.noise import brownian_noise_sampler
from diffusion.sampling.samplers import (
    _report,
    ancestral_noise,
    extra,
    get_ancestral_step,
    half_log_snr,
    seed_of,
    sigma_from_half_log_snr,
    to_d,
)

log = logging.getLogger(__name__)


# -- DPM-Solver-fast / adaptive (noise prediction, t = -log sigma) ------------------------------------


class PIDStepSizeController:
    """PID controller for adaptive step sizes (Soderlind 2003), as in k-diffusion."""

    def __init__(self, h, pcoeff, icoeff, dcoeff, order=1, accept_safety=0.81, eps=1e-8):
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.eps = eps
        self.errs: list[float] = []

    def propose_step(self, error: Tensor) -> bool:
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)  # limiter
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2] = self.errs[1]
            self.errs[1] = self.errs[0]
        self.h *= factor
        return accept


class DPMSolver:
    """DPM-Solver 1/2/3 single steps in t = -log(sigma), with an eps cache per step."""

    def __init__(self, model, extra_args=None, info_callback=None):
        self.model = model
        self.extra_args = extra(extra_args)
        self.info_callback = info_callback

    @staticmethod
    def t(sigma: Tensor) -> Tensor:
        return -sigma.log()

    @staticmethod
    def sigma(t: Tensor) -> Tensor:
        return t.neg().exp()

    def eps(self, cache: dict, key: str, x: Tensor, t: Tensor) -> tuple[Tensor, dict]:
        if key in cache:
            return cache[key], cache
        sigma = self.sigma(t) * x.new_ones([x.shape[0]])
        eps = (x - self.model(x, sigma, **self.extra_args)) / self.sigma(t)
        return eps, {key: eps, **cache}

    def step_1(self, x, t, t_next, cache):
        h = t_next - t
        eps, cache = self.eps(cache, "eps", x, t)
        return x - self.sigma(t_next) * h.expm1() * eps, cache

    def step_2(self, x, t, t_next, r1=1 / 2, cache=None):
        cache = {} if cache is None else cache
        h = t_next - t
        eps, cache = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1, cache = self.eps(cache, "eps_r1", u1, s1)
        x_2 = x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)
        return x_2, cache

    def step_3(self, x, t, t_next, r1=1 / 3, r2=2 / 3, cache=None):
        cache = {} if cache is None else cache
        h = t_next - t
        eps, cache = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1, cache = self.eps(cache, "eps_r1", u1, s1)
        u2 = (x - self.sigma(s2) * (r2 * h).expm1() * eps
              - self.sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps))  # fmt: skip
        eps_r2, cache = self.eps(cache, "eps_r2", u2, s2)
        x_3 = x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)
        return x_3, cache

    def _info(self, **info):
        if self.info_callback is not None:
            self.info_callback(info)

    def fast(self, x, t_start, t_end, nfe, eta=0.0, s_noise=1.0, noise_sampler=None):
        """Fixed steps, uniform in t, orders 3,3,...,(2,1) using exactly `nfe` evaluations."""
        noise_sampler = ancestral_noise(x, self.extra_args, noise_sampler)
        if not t_end > t_start and eta:
            raise ValueError("eta must be 0 for reverse sampling")
        m = math.floor(nfe / 3) + 1
        ts = torch.linspace(t_start, t_end, m + 1, device=x.device)
        orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
        for i, order in enumerate(orders):
            cache: dict = {}
            t, t_next = ts[i], ts[i + 1]
            if eta:
                sd, su = get_ancestral_step(self.sigma(t), self.sigma(t_next), eta)
                t_next_ = torch.minimum(t_end, self.t(sd))
                su = (self.sigma(t_next) ** 2 - self.sigma(t_next_) ** 2) ** 0.5
            else:
                t_next_, su = t_next, 0.0
            eps, cache = self.eps(cache, "eps", x, t)
            self._info(x=x, i=i, t=ts[i], t_up=t, denoised=x - self.sigma(t) * eps)
            if order == 1:
                x, cache = self.step_1(x, t, t_next_, cache)
            elif order == 2:
                x, cache = self.step_2(x, t, t_next_, cache=cache)
            else:
                x, cache = self.step_3(x, t, t_next_, cache=cache)
            x = x + su * s_noise * noise_sampler(self.sigma(t), self.sigma(t_next))
        return x

    def adaptive(self, x, t_start, t_end, order=3, rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0.0, icoeff=1.0,
                 dcoeff=0.0, accept_safety=0.81, eta=0.0, s_noise=1.0, noise_sampler=None):  # fmt: skip
        """Embedded (order-1, order) pairs with PID step-size control (DPM-Solver-12 / -23)."""
        noise_sampler = ancestral_noise(x, self.extra_args, noise_sampler)
        if order not in {2, 3}:
            raise ValueError("dpm_adaptive order must be 2 or 3")
        forward = t_end > t_start
        if not forward and eta:
            raise ValueError("eta must be 0 for reverse sampling")
        h_init = abs(h_init) * (1 if forward else -1)
        atol, rtol = torch.tensor(atol), torch.tensor(rtol)
        s, x_prev = t_start, x
        pid = PIDStepSizeController(h_init, pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
        info = {"steps": 0, "nfe": 0, "n_accept": 0, "n_reject": 0}
        while s < t_end - 1e-5 if forward else s > t_end + 1e-5:
            cache: dict = {}
            t = torch.minimum(t_end, s + pid.h) if forward else torch.maximum(t_end, s + pid.h)
            if eta:
                sd, su = get_ancestral_step(self.sigma(s), self.sigma(t), eta)
                t_ = torch.minimum(t_end, self.t(sd))
                su = (self.sigma(t) ** 2 - self.sigma(t_) ** 2) ** 0.5
            else:
                t_, su = t, 0.0
            eps, cache = self.eps(cache, "eps", x, s)
            denoised = x - self.sigma(s) * eps
            if order == 2:
                x_low, cache = self.step_1(x, s, t_, cache)
                x_high, cache = self.step_2(x, s, t_, cache=cache)
            else:
                x_low, cache = self.step_2(x, s, t_, r1=1 / 3, cache=cache)
                x_high, cache = self.step_3(x, s, t_, cache=cache)
            delta = torch.maximum(atol, rtol * torch.maximum(x_low.abs(), x_prev.abs()))
            error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
            if pid.propose_step(error):
                x_prev = x_low
                x = x_high + su * s_noise * noise_sampler(self.sigma(s), self.sigma(t))
                s = t
                info["n_accept"] += 1
            else:
                info["n_reject"] += 1
            info["nfe"] += order
            info["steps"] += 1
            self._info(x=x, i=info["steps"] - 1, t=s, t_up=s, denoised=denoised, error=error, h=pid.h, **info)
        return x, info


def _solver_callback(solver: DPMSolver, callback):
    if callback is None:
        return None
    return lambda info: callback({"sigma": solver.sigma(info["t"]), "sigma_hat": solver.sigma(info["t_up"]), **info})


def _min_max(sigmas: Tensor) -> tuple[Tensor, Tensor]:
    # KSampler hands DPM-fast/adaptive a schedule; they only use its ends (the last non-zero sigma).
    sigma_min = sigmas[-1]
    if sigma_min == 0:
        sigma_min = sigmas[-2]
    return sigma_min, sigmas[0]


@torch.no_grad()
def sample_dpm_fast(model, x, sigmas, *, extra_args=None, callback=None, disable=None,
                    eta=0.0, s_noise=1.0, noise_sampler=None):  # fmt: skip
    """DPM-Solver-fast over [last sigma, first sigma] with len(sigmas) - 1 evaluations."""
    if len(sigmas) <= 1:
        return x
    sigma_min, sigma_max = _min_max(sigmas)
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError("dpm_fast needs sigma_min and sigma_max above 0")
    solver = DPMSolver(model, extra_args)
    solver.info_callback = _solver_callback(solver, callback)
    t_start, t_end = solver.t(torch.tensor(float(sigma_max))), solver.t(torch.tensor(float(sigma_min)))
    return solver.fast(x, t_start, t_end, len(sigmas) - 1, eta, s_noise, noise_sampler)


@torch.no_grad()
def sample_dpm_adaptive(model, x, sigmas, *, extra_args=None, callback=None, disable=None, order=3, rtol=0.05,
                        atol=0.0078, h_init=0.05, pcoeff=0.0, icoeff=1.0, dcoeff=0.0, accept_safety=0.81,
                        eta=0.0, s_noise=1.0, noise_sampler=None):  # fmt: skip
    """DPM-Solver-12/23 with adaptive steps over [last sigma, first sigma] (ignores the steps between)."""
    if len(sigmas) <= 1:
        return x
    sigma_min, sigma_max = _min_max(sigmas)
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError("dpm_adaptive needs sigma_min and sigma_max above 0")
    solver = DPMSolver(model, extra_args)
    solver.info_callback = _solver_callback(solver, callback)
    t_start, t_end = solver.t(torch.tensor(float(sigma_max))), solver.t(torch.tensor(float(sigma_min)))
    x, _ = solver.adaptive(x, t_start, t_end, order, rtol, atol, h_init, pcoeff, icoeff, dcoeff,
                           accept_safety, eta, s_noise, noise_sampler)  # fmt: skip
    return x


# -- DPM-Solver++ ---------------------------------------------------------------------------------------


@torch.no_grad()
def sample_dpmpp_2s_ancestral(model, x, sigmas, *, extra_args=None, callback=None, disable=None,
                              eta=1.0, s_noise=1.0, noise_sampler=None):  # fmt: skip
    """Ancestral sampling with DPM-Solver++(2S) second-order single steps."""
    extra_args = extra(extra_args)
    noise_sampler = ancestral_noise(x, extra_args, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = half_log_snr(sigmas[i]), half_log_snr(sigma_down)
            h = t_next - t
            s = t + h / 2
            x_2 = (sigma_from_half_log_snr(s) / sigma_from_half_log_snr(t)) * x - (-h * 0.5).expm1() * denoised
            denoised_2 = model(x_2, sigma_from_half_log_snr(s) * s_in, **extra_args)
            x = (sigma_from_half_log_snr(t_next) / sigma_from_half_log_snr(t)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_sde(model, x, sigmas, *, extra_args=None, callback=None, disable=None,
                     eta=1.0, s_noise=1.0, noise_sampler=None, r=1 / 2, cpu_noise=True):  # fmt: skip
    """DPM-Solver++ (stochastic): a two-stage step in half-log-SNR with Brownian-tree noise."""
    if len(sigmas) <= 1:
        return x
    extra_args = extra(extra_args)
    if noise_sampler is None:
        noise_sampler = brownian_noise_sampler(x, sigmas, seed_of(extra_args), cpu=cpu_noise)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = half_log_snr(sigmas[i]), half_log_snr(sigmas[i + 1])
        h = lambda_t - lambda_s
        lambda_s_1 = lambda_s + r * h
        fac = 1 / (2 * r)
        sigma_s_1 = sigma_from_half_log_snr(lambda_s_1)
        alpha_s = sigmas[i] * lambda_s.exp()
        alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()
        # stage 1: to the intermediate point
        sd, su = get_ancestral_step(lambda_s.neg().exp(), lambda_s_1.neg().exp(), eta)
        h_ = sd.log().neg() - lambda_s
        x_2 = (alpha_s_1 / alpha_s) * (-h_).exp() * x - alpha_s_1 * (-h_).expm1() * denoised
        if eta > 0 and s_noise > 0:
            x_2 = x_2 + alpha_s_1 * noise_sampler(sigmas[i], sigma_s_1) * s_noise * su
        denoised_2 = model(x_2, sigma_s_1 * s_in, **extra_args)
        # stage 2: full step with the blended estimate
        sd, su = get_ancestral_step(lambda_s.neg().exp(), lambda_t.neg().exp(), eta)
        h_ = sd.log().neg() - lambda_s
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (alpha_t / alpha_s) * (-h_).exp() * x - alpha_t * (-h_).expm1() * denoised_d
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * su
    return x


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, *, extra_args=None, callback=None, disable=None):
    """DPM-Solver++(2M): second-order multistep in t = -log(sigma)."""
    extra_args = extra(extra_args)
    s_in = x.new_ones([x.shape[0]])
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        t, t_next = half_log_snr(sigmas[i]), half_log_snr(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (sigma_from_half_log_snr(t_next) / sigma_from_half_log_snr(t)) * x - (-h).expm1() * denoised
        else:
            r = (t - half_log_snr(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigma_from_half_log_snr(t_next) / sigma_from_half_log_snr(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(model, x, sigmas, *, extra_args=None, callback=None, disable=None, eta=1.0,
                        s_noise=1.0, noise_sampler=None, solver_type="midpoint", cpu_noise=True):  # fmt: skip
    """DPM-Solver++(2M) SDE with a midpoint or Heun second-order correction."""
    if len(sigmas) <= 1:
        return x
    if solver_type not in {"heun", "midpoint"}:
        raise ValueError("solver_type must be 'heun' or 'midpoint'")
    extra_args = extra(extra_args)
    if noise_sampler is None:
        noise_sampler = brownian_noise_sampler(x, sigmas, seed_of(extra_args), cpu=cpu_noise)
    s_in = x.new_ones([x.shape[0]])
    old_denoised, h, h_last = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = half_log_snr(sigmas[i]), half_log_snr(sigmas[i + 1])
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + alpha_t * ((-h_eta).expm1().neg() / (-h_eta) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * alpha_t * (-h_eta).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta > 0 and s_noise > 0:
                noise = noise_sampler(sigmas[i], sigmas[i + 1])
                x = x + noise * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        old_denoised = denoised
        h_last = h
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(model, x, sigmas, *, extra_args=None, callback=None, disable=None,
                        eta=1.0, s_noise=1.0, noise_sampler=None, cpu_noise=True):  # fmt: skip
    """DPM-Solver++(3M) SDE: third-order multistep (second order on the second step)."""
    if len(sigmas) <= 1:
        return x
    extra_args = extra(extra_args)
    if noise_sampler is None:
        noise_sampler = brownian_noise_sampler(x, sigmas, seed_of(extra_args), cpu=cpu_noise)
    s_in = x.new_ones([x.shape[0]])
    denoised_1, denoised_2 = None, None
    h, h_1, h_2 = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = half_log_snr(sigmas[i]), half_log_snr(sigmas[i + 1])
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + (alpha_t * phi_2) * d1 - (alpha_t * phi_3) * d2
            elif h_1 is not None:
                d = (denoised - denoised_1) / (h_1 / h)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + (alpha_t * phi_2) * d
            if eta > 0 and s_noise > 0:
                noise = noise_sampler(sigmas[i], sigmas[i + 1])
                x = x + noise * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


# -- named variants ----------------------------------------------------------------------------------


def sample_dpmpp_2m_sde_heun(model, x, sigmas, **kwargs):
    """DPM-Solver++(2M) SDE with the Heun correction."""
    kwargs.setdefault("solver_type", "heun")
    return sample_dpmpp_2m_sde(model, x, sigmas, **kwargs)


def sample_dpmpp_sde_gpu(model, x, sigmas, **kwargs):
    """dpmpp_sde with its Brownian tree on the latent's device."""
    return sample_dpmpp_sde(model, x, sigmas, cpu_noise=False, **kwargs)


def sample_dpmpp_2m_sde_gpu(model, x, sigmas, **kwargs):
    """dpmpp_2m_sde with its Brownian tree on the latent's device."""
    return sample_dpmpp_2m_sde(model, x, sigmas, cpu_noise=False, **kwargs)


def sample_dpmpp_2m_sde_heun_gpu(model, x, sigmas, **kwargs):
    """dpmpp_2m_sde_heun with its Brownian tree on the latent's device."""
    kwargs.setdefault("solver_type", "heun")
    return sample_dpmpp_2m_sde(model, x, sigmas, cpu_noise=False, **kwargs)


def sample_dpmpp_3m_sde_gpu(model, x, sigmas, **kwargs):
    """dpmpp_3m_sde with its Brownian tree on the latent's device."""
    return sample_dpmpp_3m_sde(model, x, sigmas, cpu_noise=False, **kwargs)
