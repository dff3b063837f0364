"""Samplers, part 5: UniPC (Zhao et al. 2023, arXiv 2302.04867), multistep predictor-corrector in
data-prediction mode with the B(h) = h ("bh1") or B(h) = e^h - 1 ("bh2") variants.

Works in VP space (x_vp = x / sqrt(1 + sigma^2)) with time measured directly in sigma, as ComfyUI's
comfy/extra_samplers/uni_pc.py does; the final sigma 0 is replaced by 0.001 (the solver needs a
finite log-SNR), so the result keeps a trace of noise at that level, like ComfyUI's.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from diffusion.sampling.samplers import extra

log = logging.getLogger(__name__)


def _expand(v: Tensor, ndim: int) -> Tensor:
    return v[(...,) + (None,) * (ndim - 1)]


def _log_alpha(sigma: Tensor) -> Tensor:
    return 0.5 * torch.log(1 / ((sigma * sigma) + 1))


def _alpha(sigma: Tensor) -> Tensor:
    return torch.exp(_log_alpha(sigma))


def _std(sigma: Tensor) -> Tensor:
    return torch.sqrt(1.0 - torch.exp(2.0 * _log_alpha(sigma)))


def _lambda(sigma: Tensor) -> Tensor:
    log_alpha = _log_alpha(sigma)
    return log_alpha - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))


class _UniPC:
    def __init__(self, model, extra_args: dict, variant: str) -> None:
        if variant not in ("bh1", "bh2"):
            raise ValueError(f"unknown UniPC variant '{variant}'")
        self.model = model
        self.extra_args = extra_args
        self.variant = variant

    def data_prediction(self, x: Tensor, t: Tensor) -> Tensor:
        """x0 estimate at VP sample x, sigma t (per batch item)."""
        if t.reshape((-1,)).shape[0] == 1:
            t = t.expand(x.shape[0])
        sigma = t.view(t.shape[:1] + (1,) * (x.ndim - 1))
        x_k = x * ((sigma**2 + 1.0) ** 0.5)  # back to k-diffusion scaling for the denoiser
        eps = (x_k - self.model(x_k, t, **self.extra_args)) / sigma
        return (x - _expand(_std(t), x.ndim) * eps) / _expand(_alpha(t), x.ndim)

    def _coefficients(self, hh: Tensor, rks: Tensor, order: int, device) -> tuple[Tensor, Tensor]:
        # b is a recurrence of near-cancelling terms for small h: evaluate it in float64.
        hh64 = hh.detach().cpu().double()
        h_phi_k = torch.expm1(hh64) / hh64 - 1
        b_h = hh64 if self.variant == "bh1" else torch.expm1(hh64)
        factorial_i = 1
        rows, b = [], []
        for i in range(1, order + 1):
            rows.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * factorial_i / b_h)
            factorial_i *= i + 1
            h_phi_k = h_phi_k / hh64 - 1 / factorial_i
        return torch.stack(rows), torch.stack(b).to(device=device, dtype=hh.dtype)

    def update(self, x, model_prev, t_prev, t, order, use_corrector=True):
        """One multistep UniP (predictor) step to t, plus the UniC corrector unless at the end."""
        ndim = x.dim()
        lambda_prev_0, lambda_t = _lambda(t_prev[-1]), _lambda(t)
        model_prev_0 = model_prev[-1]
        sigma_prev_0, sigma_t = _std(t_prev[-1]), _std(t)
        alpha_t = torch.exp(_log_alpha(t))
        h = lambda_t - lambda_prev_0
        rks, d1s = [], []
        for i in range(1, order):
            rk = ((_lambda(t_prev[-(i + 1)]) - lambda_prev_0) / h)[0]
            rks.append(rk)
            d1s.append((model_prev[-(i + 1)] - model_prev_0) / rk)
        rks_t = torch.stack([*[r.float() for r in rks], torch.tensor(1.0)]).to(x.device)
        hh = -h[0]
        h_phi_1 = torch.expm1(hh)
        b_h = hh if self.variant == "bh1" else torch.expm1(hh)
        big_r, b = self._coefficients(hh, rks_t, order, x.device)
        d1_stack = torch.stack(d1s, dim=1) if d1s else None
        x_t_ = _expand(sigma_t / sigma_prev_0, ndim) * x - _expand(alpha_t * h_phi_1, ndim) * model_prev_0
        if d1_stack is not None:
            rhos_p = torch.tensor([0.5], device=b.device) if order == 2 else torch.linalg.solve(big_r[:-1, :-1], b[:-1])
            pred_res = torch.tensordot(d1_stack, rhos_p, dims=([1], [0]))
        else:
            pred_res = 0
        x_t = x_t_ - _expand(alpha_t * b_h, ndim) * pred_res
        model_t = None
        if use_corrector:
            rhos_c = torch.tensor([0.5], device=b.device) if order == 1 else torch.linalg.solve(big_r, b)
            model_t = self.data_prediction(x_t, t)
            corr_res = torch.tensordot(d1_stack, rhos_c[:-1], dims=([1], [0])) if d1_stack is not None else 0
            x_t = x_t_ - _expand(alpha_t * b_h, ndim) * (corr_res + rhos_c[-1] * (model_t - model_prev_0))
        return x_t, model_t

    def sample(self, x: Tensor, timesteps: Tensor, order: int, callback) -> Tensor:
        steps = len(timesteps) - 1
        batch = x.shape[0]
        model_prev: list[Tensor] = []
        t_prev: list[Tensor] = []
        for step_index in range(steps):
            if step_index == 0:
                vec_t = timesteps[0].expand(batch)
                model_prev, t_prev = [self.data_prediction(x, vec_t)], [vec_t]
            elif step_index < order:  # warm-up with lower orders
                vec_t = timesteps[step_index].expand(batch)
                x, model_x = self.update(x, model_prev, t_prev, vec_t, step_index)
                model_prev.append(model_x if model_x is not None else self.data_prediction(x, vec_t))
                t_prev.append(vec_t)
            else:
                last = step_index + (1 if step_index == steps - 1 else 0)
                for step in range(step_index, last + 1):
                    vec_t = timesteps[step].expand(batch)
                    step_order = min(order, steps + 1 - step)  # lower order near the end
                    x, model_x = self.update(x, model_prev, t_prev, vec_t, step_order, use_corrector=step != steps)
                    for i in range(order - 1):  # slide the history window (it holds `order` entries)
                        t_prev[i], model_prev[i] = t_prev[i + 1], model_prev[i + 1]
                    t_prev[-1] = vec_t
                    if step < steps:  # the final value is never needed
                        model_prev[-1] = model_x if model_x is not None else self.data_prediction(x, vec_t)
            if callback is not None:
                callback({"x": x, "i": step_index, "denoised": model_prev[-1]})
        return x


def _sample_unipc(model, x, sigmas, extra_args, callback, variant):
    timesteps = sigmas.clone()
    if sigmas[-1] == 0:
        timesteps[-1] = 0.001
    x = x / torch.sqrt(1.0 + timesteps[0] ** 2.0)
    order = min(3, len(timesteps) - 2)
    x = _UniPC(model, extra(extra_args), variant).sample(x, timesteps, order, callback)
    return x / _alpha(timesteps[-1])


@torch.no_grad()
def sample_uni_pc(model, x, sigmas, *, extra_args=None, callback=None, disable=None):
    """UniPC with B(h) = h (bh1), order up to 3."""
    return _sample_unipc(model, x, sigmas, extra_args, callback, "bh1")


@torch.no_grad()
def sample_uni_pc_bh2(model, x, sigmas, *, extra_args=None, callback=None, disable=None):
    """UniPC with B(h) = e^h - 1 (bh2), order up to 3."""
    return _sample_unipc(model, x, sigmas, extra_args, callback, "bh2")
