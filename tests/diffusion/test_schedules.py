"""Model sampling (sigma table) and schedules: values against the formulas of spec §6.3/§6.4,
computed independently here in float64, plus KSampler's denoise / start / end quirks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.errors import EngineError
from diffusion.sampling import SCHEDULERS
from diffusion.sampling import schedules as sch
from diffusion.sampling.ksampler import calculate_sigmas, is_max_denoise, ksampler_sigmas, slice_sigmas
from diffusion.sampling.model_sampling import ModelSamplingDiscrete


@pytest.fixture(scope="module")
def ms() -> ModelSamplingDiscrete:
    return ModelSamplingDiscrete()


def table64() -> np.ndarray:
    """sigma_t of spec §6.3, recomputed in float64 with numpy."""
    betas = np.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000) ** 2
    abar = np.cumprod(1 - betas)
    return np.sqrt((1 - abar) / abar)


def sigma_at(t: float) -> float:
    """exp of log-sigma interpolated linearly between floor(t) and ceil(t)."""
    logs = np.log(table64())
    lo, hi = math.floor(t), math.ceil(t)
    w = t - lo
    return math.exp((1 - w) * logs[lo] + w * logs[hi])


def assert_close(actual: torch.Tensor, expected, rel: float = 2e-6) -> None:
    exp = torch.tensor(np.asarray(expected, dtype=np.float64))
    assert actual.shape == exp.shape, (actual.tolist(), exp.tolist())
    assert torch.allclose(actual.double(), exp, rtol=rel, atol=1e-7), (actual.tolist(), exp.tolist())


# -- the sigma table ---------------------------------------------------------------------------------


def test_table_matches_formula_and_known_ends(ms):
    assert ms.sigmas.dtype == torch.float32 and len(ms.sigmas) == 1000
    assert_close(ms.sigmas, table64())
    # the values ComfyUI's sampler nodes use as defaults (spec §5.5)
    assert float(ms.sigma_max) == pytest.approx(14.614642, abs=2e-6)
    assert float(ms.sigma_min) == pytest.approx(0.0291675, abs=5e-7)


def test_timestep_is_nearest_log_sigma_and_sigma_interpolates(ms):
    table = torch.tensor(table64(), dtype=torch.float32)
    assert ms.timestep(table[[0, 17, 500, 999]]).tolist() == [0, 17, 500, 999]
    between = torch.tensor([math.sqrt(table64()[10] * table64()[11]) * 1.01])  # log-midpoint, nudged up
    assert ms.timestep(between).tolist() == [11]
    for t in (0.0, 12.25, 500.5, 998.9, 999.0):
        assert float(ms.sigma(torch.tensor(t))) == pytest.approx(sigma_at(t), rel=2e-6)
    assert float(ms.sigma(torch.tensor(1500.0))) == pytest.approx(float(ms.sigma_max))  # clamped


def test_percent_to_sigma(ms):
    assert ms.percent_to_sigma(0.0) == 999999999.9
    assert ms.percent_to_sigma(1.0) == 0.0
    assert ms.percent_to_sigma(0.5) == pytest.approx(sigma_at(499.5), rel=2e-6)


def test_zero_terminal_snr_rescale():
    z = ModelSamplingDiscrete("v_prediction", zsnr=True)
    plain = table64()
    abar_sqrt = np.sqrt(1 / (plain**2 + 1))
    first, last = abar_sqrt[0], abar_sqrt[-1]
    rescaled = (abar_sqrt - last) * first / (first - last)
    abar = rescaled**2
    abar[-1] = 4.8973451890853435e-08
    assert_close(z.sigmas, np.sqrt((1 - abar) / abar), rel=1e-5)
    assert float(z.sigma_max) == pytest.approx(4518.76, rel=1e-4)
    assert float(z.sigma_min) == pytest.approx(float(plain[0]), rel=1e-6)  # first step unchanged


def test_parameterisations():
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    out = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([2.0, 0.5])
    s = sigma.view(2, 1, 1, 1)
    eps, v, x0 = (ModelSamplingDiscrete(p) for p in ("eps", "v_prediction", "x0"))
    assert torch.allclose(eps.calculate_input(sigma, x), x / torch.sqrt(s**2 + 1))
    assert torch.allclose(eps.calculate_denoised(sigma, out, x), x - out * s)
    assert torch.allclose(v.calculate_denoised(sigma, out, x), x / (s**2 + 1) - out * s / torch.sqrt(s**2 + 1))
    assert torch.equal(x0.calculate_denoised(sigma, out, x), out)
    latent = torch.ones_like(x)
    assert torch.allclose(eps.noise_scaling(sigma, x, latent), latent + x * s)
    assert torch.allclose(eps.noise_scaling(sigma, x, latent, max_denoise=True), latent + x * torch.sqrt(1 + s**2))
    with pytest.raises(EngineError, match="prediction"):
        ModelSamplingDiscrete("flow")


def test_max_denoise_threshold(ms):
    assert is_max_denoise(ms, ms.sigma_max)
    assert is_max_denoise(ms, float(ms.sigma_max) * (1 + 5e-6))  # karras' first sigma lands a few ulp above
    assert is_max_denoise(ms, SCHEDULERS["normal"](ms, 3)[0])  # exp(log(sigma_max)) round trip
    assert not is_max_denoise(ms, float(ms.sigma_max) * 0.999)


# -- schedules ----------------------------------------------------------------------------------------


def test_registry_order_is_comfyui_combo_order():
    assert SCHEDULERS.names == ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta",
                                "normal", "linear_quadratic", "kl_optimal"]  # fmt: skip


@pytest.mark.parametrize("name", SCHEDULERS.names)
@pytest.mark.parametrize("n", [1, 4, 13])
def test_every_scheduler_shape(ms, name, n):
    sigmas = SCHEDULERS[name](ms, n)
    assert sigmas.dtype == torch.float32
    assert float(sigmas[-1]) == 0.0
    assert bool(torch.all(sigmas[:-1] > sigmas[1:])), f"{name} is not strictly decreasing: {sigmas.tolist()}"
    if name not in ("ddim_uniform", "beta"):  # the two that may change the count (spec §6.4)
        assert len(sigmas) == n + 1


@pytest.mark.parametrize("n", [2, 5, 20])
def test_karras_formula(ms, n):
    smin, smax = float(ms.sigma_min), float(ms.sigma_max)
    ramp = np.linspace(0, 1, n)
    expected = (smax ** (1 / 7) + ramp * (smin ** (1 / 7) - smax ** (1 / 7))) ** 7
    assert_close(SCHEDULERS["karras"](ms, n), [*expected, 0.0], rel=5e-6)


@pytest.mark.parametrize("n", [3, 10])
def test_exponential_formula(ms, n):
    smin, smax = float(ms.sigma_min), float(ms.sigma_max)
    expected = np.exp(np.log(smax) + np.linspace(0, 1, n) * (np.log(smin) - np.log(smax)))
    assert_close(SCHEDULERS["exponential"](ms, n), [*expected, 0.0], rel=5e-6)


@pytest.mark.parametrize("n", [1, 3, 7, 30])
def test_simple_picks_table_entries(ms, n):
    table = table64()
    expected = [table[999 - math.floor(i * 1000 / n)] for i in range(n)]
    assert_close(SCHEDULERS["simple"](ms, n), [*expected, 0.0])


@pytest.mark.parametrize("n", [2, 4, 9])
def test_normal_uniform_timesteps(ms, n):
    expected = [sigma_at(999 - i * 999 / (n - 1)) for i in range(n)]
    assert_close(SCHEDULERS["normal"](ms, n), [*expected, 0.0])
    assert_close(SCHEDULERS["normal"](ms, 1), [sigma_at(999), 0.0])


@pytest.mark.parametrize("n", [1, 4, 9])
def test_sgm_uniform_drops_last_of_n_plus_1(ms, n):
    expected = [sigma_at(999 - i * 999 / n) for i in range(n)]
    assert_close(SCHEDULERS["sgm_uniform"](ms, n), [*expected, 0.0])


@pytest.mark.parametrize(("n", "count"), [(4, 5), (10, 11), (30, 32), (7, 9)])
def test_ddim_uniform_indices(ms, n, count):
    stride = max(1000 // n, 1)
    indices = list(range(1, 1000, stride))
    sigmas = SCHEDULERS["ddim_uniform"](ms, n)
    assert len(sigmas) == count  # n = 30 gives 31 steps (stride 33), n = 7 gives 8, as ComfyUI
    assert_close(sigmas, [*[table64()[i] for i in reversed(indices)], 0.0])


@pytest.mark.parametrize("n", [3, 8])
def test_kl_optimal_formula(ms, n):
    smin, smax = float(ms.sigma_min), float(ms.sigma_max)
    w = np.arange(n) / (n - 1)
    expected = np.tan(w * math.atan(smin) + (1 - w) * math.atan(smax))
    assert_close(SCHEDULERS["kl_optimal"](ms, n), [*expected, 0.0], rel=2e-5)


def test_linear_quadratic_formula(ms):
    n, thr = 6, 0.025
    half = n // 2
    linear = [i * thr / half for i in range(half)]
    diff = half - thr * n
    qc = diff / (half * (n - half) ** 2)
    lc = thr / half - 2 * diff / ((n - half) ** 2)
    quad = [qc * i * i + lc * i + qc * half * half for i in range(half, n)]
    expected = [(1 - s) * float(ms.sigma_max) for s in [*linear, *quad, 1.0]]
    assert_close(SCHEDULERS["linear_quadratic"](ms, n), expected, rel=5e-6)
    assert_close(SCHEDULERS["linear_quadratic"](ms, 1), [float(ms.sigma_max), 0.0])


def test_beta_ppf_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    for q in (1e-6, 0.01, 0.25, 0.5, 0.75, 0.99, 1 - 1e-9):
        for a, b in ((0.6, 0.6), (2.0, 5.0), (0.5, 3.0)):
            assert sch.beta_ppf(q, a, b) == pytest.approx(
                float(stats.beta.ppf(q, a, b)), abs=1e-12 if q < 0.99 else 1e-9
            )
    assert sch.beta_ppf(0.5, 0.6, 0.6) == 0.5  # exact: the scheduler rounds 499.5 to 500 there


def test_beta_scheduler_quantiles_and_dedup(ms):
    stats = pytest.importorskip("scipy.stats")
    for n in (4, 10, 200):
        ts = np.rint(stats.beta.ppf(1 - np.linspace(0, 1, n, endpoint=False), 0.6, 0.6) * 999)
        kept = [t for i, t in enumerate(ts) if i == 0 or t != ts[i - 1]]
        expected = [table64()[int(t)] for t in kept]
        sigmas = SCHEDULERS["beta"](ms, n)
        assert_close(sigmas, [*expected, 0.0])
    assert len(SCHEDULERS["beta"](ms, 200)) < 201  # duplicates near the ends were dropped


def test_continuous_builders():
    assert_close(sch.sigmas_polyexponential(3, 0.1, 10.0, rho=1.0), [10.0, 1.0, 0.1, 0.0], rel=1e-6)
    vp = sch.sigmas_vp(2)
    assert float(vp[0]) == pytest.approx(math.sqrt(math.expm1(19.9 / 2 + 0.1)), rel=1e-5)
    lap = sch.sigmas_laplace(5, 0.03, 14.6)
    assert len(lap) == 5
    assert float(lap[0]) == pytest.approx(14.6) and float(lap[-1]) == pytest.approx(0.03)  # clamped ends


# -- KSampler's sigma quirks (spec §6.4) ------------------------------------------------------------


def test_unknown_scheduler_raises(ms):
    with pytest.raises(EngineError, match="unknown scheduler 'nope'.*karras"):
        calculate_sigmas(ms, "nope", 10)


def test_denoise_takes_the_tail_of_a_longer_schedule(ms):
    full = calculate_sigmas(ms, "normal", 20)
    assert torch.equal(ksampler_sigmas(ms, "euler", "normal", 10, denoise=0.5), full[-11:])
    assert torch.equal(ksampler_sigmas(ms, "euler", "normal", 10, denoise=1.0), calculate_sigmas(ms, "normal", 10))
    assert torch.equal(ksampler_sigmas(ms, "euler", "karras", 4, denoise=0.3), calculate_sigmas(ms, "karras", 13)[-5:])
    assert ksampler_sigmas(ms, "euler", "normal", 10, denoise=0.0).numel() == 0
    with pytest.raises(EngineError, match="steps"):
        ksampler_sigmas(ms, "euler", "normal", 0)


@pytest.mark.parametrize("sampler", ["dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"])
def test_penultimate_sigma_discarded(ms, sampler):
    longer = calculate_sigmas(ms, "karras", 9)
    sigmas = ksampler_sigmas(ms, sampler, "karras", 8)
    assert len(sigmas) == 9
    assert torch.equal(sigmas, torch.cat([longer[:-2], longer[-1:]]))


def test_start_and_end_steps():
    sigmas = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.5, 0.0])
    assert slice_sigmas(sigmas).tolist() == sigmas.tolist()
    assert slice_sigmas(sigmas, last_step=3).tolist() == [10.0, 5.0, 2.0, 1.0]  # leftover noise kept
    assert slice_sigmas(sigmas, last_step=3, force_full_denoise=True).tolist() == [10.0, 5.0, 2.0, 0.0]
    assert sigmas[3] == 1.0  # the caller's schedule is not modified
    assert slice_sigmas(sigmas, last_step=10, force_full_denoise=True).tolist() == sigmas.tolist()
    assert slice_sigmas(sigmas, start_step=2).tolist() == [2.0, 1.0, 0.5, 0.0]
    assert slice_sigmas(sigmas, start_step=1, last_step=3).tolist() == [5.0, 2.0, 1.0]
    assert slice_sigmas(sigmas, start_step=5) is None  # start >= steps: latent returned unchanged
    assert slice_sigmas(sigmas, start_step=2, last_step=2) is None
