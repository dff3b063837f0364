"""Discrete-time model sampling for SD1.x / SD2.x / SDXL (spec §6.3).

A `ModelSamplingDiscrete` owns the 1000-entry sigma table of the DDPM "scaled linear" beta schedule
and the conversions every sampler needs: sigma <-> timestep, model input scaling, and turning the
network's raw output (eps, v or x0) into the denoised estimate. Numbers follow ComfyUI's
comfy/model_sampling.py: the table is built in float64 and stored in float32, `timestep(sigma)` is the
index of the nearest log-sigma, `sigma(t)` interpolates log-sigma linearly.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from core.errors import EngineError

log = logging.getLogger(__name__)

PREDICTIONS = ("eps", "v_prediction", "x0")


def scaled_linear_betas(timesteps: int = 1000, linear_start: float = 0.00085, linear_end: float = 0.012) -> Tensor:
    """beta_t = linspace(sqrt(start), sqrt(end), T)^2 in float64 (LDM's "linear" schedule)."""
    return torch.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=torch.float64) ** 2


def rescale_zero_terminal_snr_sigmas(sigmas: Tensor) -> Tensor:
    """Lin et al. 2023 ("Common Diffusion Noise Schedules and Sample Steps are Flawed"), Alg. 1,
    applied to sigmas: shift sqrt(alpha_bar) so the last step has zero SNR, rescale so the first is
    unchanged. The last alpha_bar is set to a tiny positive value (ComfyUI's constant) so the final
    sigma stays finite (~4519)."""
    alphas_bar_sqrt = (1.0 / (sigmas * sigmas + 1.0)).sqrt()
    first = alphas_bar_sqrt[0].clone()
    last = alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt**2
    alphas_bar[-1] = 4.8973451890853435e-08
    return ((1 - alphas_bar) / alphas_bar) ** 0.5


def _reshape_sigma(sigma: Tensor, ndim: int) -> Tensor:
    """One sigma per batch item, broadcastable over (B, C, H, W); a single sigma becomes a scalar."""
    if sigma.nelement() == 1:
        return sigma.view(())
    return sigma.view(sigma.shape[:1] + (1,) * (ndim - 1))


class ModelSamplingDiscrete:
    """Sigma table + parameterisation of a discrete-time VP diffusion model.

    `prediction`: "eps" (SD1.x, SD2-base, SDXL), "v_prediction" (SD2.x 768-v) or "x0".
    `zsnr`: rescale the schedule to zero terminal SNR (for v-models trained that way).
    """

    sigma_data = 1.0

    def __init__(
        self,
        prediction: str = "eps",
        *,
        zsnr: bool = False,
        timesteps: int = 1000,
        linear_start: float = 0.00085,
        linear_end: float = 0.012,
    ) -> None:
        if prediction not in PREDICTIONS:
            raise EngineError(f"unknown model prediction type '{prediction}'; expected one of {', '.join(PREDICTIONS)}")
        self.prediction = prediction
        self.zsnr = zsnr
        self.linear_start = linear_start
        self.linear_end = linear_end
        betas = scaled_linear_betas(timesteps, linear_start, linear_end)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        if zsnr:
            sigmas = rescale_zero_terminal_snr_sigmas(sigmas)
        self.set_sigmas(sigmas)

    def set_sigmas(self, sigmas: Tensor) -> None:
        # log is taken before the float32 cast, as ComfyUI does (matters in the last ulp).
        self.sigmas = sigmas.float()
        self.log_sigmas = sigmas.log().float()
        self.num_timesteps = len(self.sigmas)

    def __repr__(self) -> str:
        return f"ModelSamplingDiscrete(prediction={self.prediction!r}, zsnr={self.zsnr})"

    @property
    def sigma_min(self) -> Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> Tensor:
        return self.sigmas[-1]

    def timestep(self, sigma: Tensor) -> Tensor:
        """Index (int64, same shape as sigma) of the table entry whose log-sigma is nearest."""
        dists = sigma.log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape).to(sigma.device)

    def sigma(self, timestep: Tensor) -> Tensor:
        """exp of log-sigma interpolated linearly between floor(t) and ceil(t) (t clamped to the table)."""
        t = torch.clamp(timestep.float().to(self.log_sigmas.device), min=0, max=self.num_timesteps - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]
        return log_sigma.exp().to(timestep.device)

    def percent_to_sigma(self, percent: float) -> float:
        """Sampling progress (0 = start, 1 = end) -> sigma; used by start/end_percent conditioning."""
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return self.sigma(torch.tensor((1.0 - percent) * 999.0)).item()

    # -- parameterisation ---------------------------------------------------------------------

    def calculate_input(self, sigma: Tensor, x: Tensor) -> Tensor:
        """The network sees x / sqrt(sigma^2 + 1): the VP-scaled sample."""
        sigma = _reshape_sigma(sigma, x.ndim)
        return x / (sigma**2 + self.sigma_data**2) ** 0.5

    def calculate_denoised(self, sigma: Tensor, model_output: Tensor, model_input: Tensor) -> Tensor:
        """Raw network output -> estimate of the clean sample x0 (k-diffusion's D(x, sigma))."""
        if self.prediction == "x0":
            return model_output
        sigma = _reshape_sigma(sigma, model_output.ndim)
        if self.prediction == "eps":
            return model_input - model_output * sigma
        sd2 = self.sigma_data**2
        return model_input * sd2 / (sigma**2 + sd2) - model_output * sigma * self.sigma_data / (sigma**2 + sd2) ** 0.5

    def noise_scaling(self, sigma: Tensor, noise: Tensor, latent_image: Tensor, max_denoise: bool = False) -> Tensor:
        """Initial sample: latent + noise * sigma, or * sqrt(1 + sigma^2) at full denoise (spec §6.2)."""
        sigma = _reshape_sigma(sigma, noise.ndim)
        if max_denoise:
            noise = noise * torch.sqrt(1.0 + sigma**2.0)
        else:
            noise = noise * sigma
        return noise + latent_image

    def inverse_noise_scaling(self, sigma: Tensor, latent: Tensor) -> Tensor:
        return latent


def make_model_sampling(prediction: str = "eps", zsnr: bool = False) -> ModelSamplingDiscrete:
    """The model sampling of an SD1.x / SD2.x / SDXL family (all use the same beta schedule)."""
    return ModelSamplingDiscrete(prediction, zsnr=zsnr)
