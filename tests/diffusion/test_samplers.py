"""Samplers, CFG and the KSampler pipeline on an analytic model (tests/golden/regen.py's GaussianModel:
the exact denoiser of a Gaussian data prior), where the right answer is known in closed form."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from core import runtime
from core.errors import EngineError, Interrupted
from diffusion.sampling import SAMPLERS
from diffusion.sampling.guidance import CFGDenoiser, calc_cond_batch, convert_cond, prepare_conds
from diffusion.sampling.ksampler import (
    InpaintDenoiser,
    common_ksampler,
    guided_sample,
    ksampler_sigmas,
    prepare_mask,
    sample,
    sample_custom,
    sampler_object,
)
from diffusion.sampling.noise import prepare_noise

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
_spec = importlib.util.spec_from_file_location("loom_golden_regen", GOLDEN / "regen.py")
regen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(regen)
GaussianModel, cond = regen.GaussianModel, regen.cond

COMFYUI_SAMPLERS = [
    "euler",
    "euler_cfg_pp",
    "euler_ancestral",
    "euler_ancestral_cfg_pp",
    "heun",
    "heunpp2",
    "exp_heun_2_x0",
    "exp_heun_2_x0_sde",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m",
    "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun",
    "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
    "ddpm",
    "lcm",
    "ipndm",
    "ipndm_v",
    "deis",
    "res_multistep",
    "res_multistep_cfg_pp",
    "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp",
    "gradient_estimation",
    "gradient_estimation_cfg_pp",
    "er_sde",
    "seeds_2",
    "seeds_3",
    "sa_solver",
    "sa_solver_pece",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
]

STOCHASTIC = {"euler_ancestral", "euler_ancestral_cfg_pp", "exp_heun_2_x0_sde", "dpm_2_ancestral",
              "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m_sde",
              "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu",
              "ddpm", "lcm", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "er_sde", "seeds_2",
              "seeds_3", "sa_solver", "sa_solver_pece"}  # fmt: skip
DETERMINISTIC = [n for n in COMFYUI_SAMPLERS if n not in STOCHASTIC]


def test_sampler_registry_is_comfyui_combo_order():
    # spec §6.1 announces 45 names; its list (= ComfyUI's KSAMPLER_NAMES + 3) holds these 44
    assert SAMPLERS.names == COMFYUI_SAMPLERS
    with pytest.raises(EngineError, match="unknown sampler 'euler_a'"):
        sampler_object("euler_a")


def run(
    name: str,
    steps: int,
    *,
    s: float = 1.0,
    mu: float = 0.0,
    seed: int = 0,
    shape=(1, 4, 32, 32),
    scheduler: str = "karras",
    model: GaussianModel | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """txt2img with cfg 1 on N(mu, s^2) data; returns (output in model space, initial noise)."""
    model = model or GaussianModel(s=s)
    model.latent_format = None  # stay in model space for the analytic comparisons
    latent = torch.zeros(shape)
    noise = prepare_noise(latent, seed)
    out = sample(model, noise, steps, 1.0, name, scheduler, cond(mu), cond(mu), latent, seed=seed)
    return out, noise


def ode_solution(noise: torch.Tensor, sigma_max: float, s: float, mu: float) -> torch.Tensor:
    """Exact probability-flow ODE map from x_T = noise * sqrt(1 + sigma_max^2) down to sigma 0:
    (x - mu) / sqrt(s^2 + sigma^2) is constant along the trajectory."""
    x_t = noise * math.sqrt(1 + sigma_max**2)
    return mu + (x_t - mu) * s / math.sqrt(s**2 + sigma_max**2)


# -- every sampler ---------------------------------------------------------------------------------------


# Expected spread of the output where it is not ~1 by design:
SPREAD = {
    "lcm": (0.55, 0.8),  # jumps to the posterior mean every step: shrinks a non-distilled model's output
    # ComfyUI reuses the uncond of the second evaluation in the final update (kept for parity),
    # which costs this sampler some variance even with identical prompts
    "dpmpp_2s_ancestral_cfg_pp": (0.7, 0.9),
}


@pytest.mark.parametrize("name", COMFYUI_SAMPLERS)
def test_every_sampler_reaches_the_data_distribution(name):
    """With data N(0, 1) and initial noise N(0, 1 + sigma_max^2) a correct sampler, ODE or SDE,
    ends near N(0, 1) (first-order ancestral ones a little under: about 0.94 at 64 steps); a wrong
    step rule or noise scale shows up as a wrong spread."""
    out, _ = run(name, 64, s=1.0, mu=0.0, seed=1)
    assert torch.isfinite(out).all()
    assert abs(float(out.mean())) < 0.05
    low, high = SPREAD.get(name, (0.9, 1.1))
    assert low < float(out.std()) < high, float(out.std())


def test_lcm_returns_the_last_denoised_estimate():
    model = GaussianModel(s=0.5)
    out, noise = run("lcm", 1, s=0.5, mu=0.3, seed=2, shape=(1, 4, 8, 8), model=model)
    sigma = float(model.model_sampling.sigma_max)
    x_t = noise * math.sqrt(1 + sigma**2)
    assert torch.allclose(out, model.denoise(x_t, sigma, 0.3), atol=1e-5)


@pytest.mark.parametrize("name", COMFYUI_SAMPLERS)
def test_every_sampler_is_reproducible(name):
    a, _ = run(name, 5, s=0.5, mu=0.3, seed=4, shape=(1, 4, 8, 8))
    b, _ = run(name, 5, s=0.5, mu=0.3, seed=4, shape=(1, 4, 8, 8))
    assert torch.equal(a, b)
    c, _ = run(name, 5, s=0.5, mu=0.3, seed=5, shape=(1, 4, 8, 8))
    assert not torch.allclose(a, c)


# Deterministic samplers of second order or higher: accurate to the last-step floor at 64 steps.
# (The final jump from sigma_min to 0 is a single first-order step in every sampler; on this model
# it leaves about 2e-3.)
HIGH_ORDER = {"heun", "exp_heun_2_x0", "dpm_2", "lms", "dpm_fast", "dpmpp_2m", "dpmpp_2m_cfg_pp", "ipndm",
              "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "uni_pc", "uni_pc_bh2"}  # fmt: skip


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_samplers_converge_to_the_exact_ode_solution(name):
    s, mu = 0.5, 0.3
    model = GaussianModel(s=s)
    out, noise = run(name, 64, s=s, mu=mu, seed=2, shape=(1, 4, 16, 16), model=model)
    exact = ode_solution(noise, float(model.model_sampling.sigma_max), s, mu)
    error = float((out - exact).abs().max())
    assert error < (6e-3 if name in HIGH_ORDER else 6e-2), error


def test_euler_is_first_order_and_heun_second():
    def error(name: str, steps: int) -> float:
        out, noise = run(name, steps, s=0.5, mu=0.3, seed=2, shape=(1, 4, 16, 16), scheduler="exponential")
        return float((out - ode_solution(noise, float(GaussianModel().model_sampling.sigma_max), 0.5, 0.3)).abs().max())

    assert 3.0 < error("euler", 16) / error("euler", 64) < 5.0  # 4x steps -> ~4x smaller error
    assert error("heun", 16) / error("heun", 64) > 6.0


@pytest.mark.parametrize("name", sorted(STOCHASTIC - {"lcm", "ddpm"}))
def test_stochastic_samplers_use_their_noise(name):
    """Ancestral / SDE samplers differ from the ODE solution (they inject noise) yet stay reproducible."""
    out, noise = run(name, 8, s=0.5, mu=0.3, seed=3, shape=(1, 4, 16, 16))
    exact = ode_solution(noise, float(GaussianModel().model_sampling.sigma_max), 0.5, 0.3)
    assert float((out - exact).abs().mean()) > 1e-3


def test_golden_numbers():
    """Every sampler and a few pipeline cases reproduce tests/golden/samplers.json (regen.py --write)."""
    golden = json.loads((GOLDEN / "samplers.json").read_text())
    assert set(golden) == set(SAMPLERS.names) | set(regen.pipeline_cases())
    failures = []
    for name in SAMPLERS:
        got = regen._summary(regen.sampler_case(name))
        if not regen.close(got, golden[name]):
            failures.append(f"{name}: {got} != {golden[name]}")
    for name, fn in regen.pipeline_cases().items():
        got = regen._summary(fn())
        if not regen.close(got, golden[name]):
            failures.append(f"{name}: {got} != {golden[name]}")
    assert not failures, "\n".join(failures)


def test_cfg_pp_samplers_equal_their_base_when_cond_equals_uncond():
    """CFG++ steps along the unconditional prediction; with identical prompts that is the plain step."""
    # (not dpmpp_2s_ancestral_cfg_pp: see SPREAD)
    pairs = [("euler_cfg_pp", "euler"), ("dpmpp_2m_cfg_pp", "dpmpp_2m"), ("res_multistep_cfg_pp", "res_multistep"),
             ("gradient_estimation_cfg_pp", "gradient_estimation"), ("euler_ancestral_cfg_pp", "euler_ancestral"),
             ("res_multistep_ancestral_cfg_pp", "res_multistep_ancestral")]  # fmt: skip
    for pp, base in pairs:
        a, _ = run(pp, 6, s=0.5, mu=0.2, seed=8, shape=(1, 4, 8, 8))
        b, _ = run(base, 6, s=0.5, mu=0.2, seed=8, shape=(1, 4, 8, 8))
        assert torch.allclose(a, b, atol=1e-4), (pp, float((a - b).abs().max()))


def test_ancestral_and_ddpm_agree():
    """DDPM's posterior step is Euler-ancestral in VP form: same noise stream, same result."""
    a, _ = run("ddpm", 10, s=0.5, mu=0.2, seed=6, shape=(1, 4, 8, 8))
    b, _ = run("euler_ancestral", 10, s=0.5, mu=0.2, seed=6, shape=(1, 4, 8, 8))
    assert torch.allclose(a, b, atol=1e-4)


def test_gpu_variants_match_cpu_tree_on_cpu():
    a, _ = run("dpmpp_2m_sde", 6, s=0.5, seed=2, shape=(1, 4, 8, 8))
    b, _ = run("dpmpp_2m_sde_gpu", 6, s=0.5, seed=2, shape=(1, 4, 8, 8))
    assert torch.equal(a, b)  # on a CPU latent both trees live on the CPU


# -- CFG --------------------------------------------------------------------------------------------------


def test_cfg_runs_cond_and_uncond_as_one_batch():
    model = GaussianModel(s=0.5, continuous=True)
    model.latent_format = None
    latent = torch.zeros(2, 4, 8, 8)
    sample(model, None, 3, 7.5, "euler", "normal", cond(0.5), cond(-0.5), latent, seed=1)
    assert [c["batch"] for c in model.calls] == [4, 4, 4]  # one call per step, [uncond, cond] x batch 2
    model.calls.clear()
    sample(model, None, 3, 1.0, "euler", "normal", cond(0.5), cond(-0.5), latent, seed=1)
    assert [c["batch"] for c in model.calls] == [2, 2, 2]  # cfg 1 skips the uncond pass
    model.calls.clear()
    sample(model, None, 3, 1.0, "euler_cfg_pp", "normal", cond(0.5), cond(-0.5), latent, seed=1)
    assert [c["batch"] for c in model.calls] == [4, 4, 4]  # ... unless a CFG++ sampler needs it


def _prepared(model, pos, neg, x):
    conds = {"positive": convert_cond(pos), "negative": convert_cond(neg)}
    return prepare_conds(model, conds, x, torch.tensor(5.0))


def test_cfg_combination_equals_separate_passes():
    model = GaussianModel(s=0.5)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 3
    sigma = torch.tensor([3.0, 3.0])
    conds = _prepared(model, cond(0.5), cond(-0.25), x)
    denoised = CFGDenoiser(model, conds, 6.0)(x, sigma)
    d_cond = model.denoise(x, 3.0, 0.5)
    d_uncond = model.denoise(x, 3.0, -0.25)
    assert torch.allclose(denoised, d_uncond + (d_cond - d_uncond) * 6.0, atol=1e-5)
    assert model.calls[-1]["batch"] == 4
    uncond_first = model.calls[-1]["context"]
    assert uncond_first == (4, 77, 8)


def test_batch_order_is_uncond_then_cond():
    seen = []

    class Spy(GaussianModel):
        def apply_model(self, x, t, c_crossattn, **kw):
            seen.append(c_crossattn[:, 0, 0].tolist())
            return super().apply_model(x, t, c_crossattn, **kw)

    model = Spy()
    x = torch.zeros(1, 4, 8, 8)
    CFGDenoiser(model, _prepared(model, cond(1.0), cond(-1.0), x), 3.0)(x, torch.tensor([2.0]))
    assert seen == [[-1.0, 1.0]]  # ComfyUI's calc_cond_batch order


def test_prompts_of_different_length_share_a_batch():
    model = GaussianModel()
    x = torch.zeros(1, 4, 8, 8)
    conds = _prepared(model, cond(0.4, tokens=154), cond(0.0, tokens=77), x)
    out = CFGDenoiser(model, conds, 2.0)(x, torch.tensor([2.0]))
    assert model.calls[-1]["context"] == (2, 154, 8)  # 77 tokens repeated to 154 (lcm)
    expected = model.denoise(x, 2.0, 0.0) + (model.denoise(x, 2.0, 0.4) - model.denoise(x, 2.0, 0.0)) * 2.0
    assert torch.allclose(out, expected, atol=1e-5)


def test_strength_weights_overlapping_entries():
    model = GaussianModel(s=0.5)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([2.0])
    entries = convert_cond(cond(0.0) + cond(1.0, strength=3.0))
    entries = prepare_conds(model, {"positive": entries}, x)["positive"]
    (out,) = calc_cond_batch(model, [entries], x, sigma, {})
    expected = (model.denoise(x, 2.0, 0.0) * 1 + model.denoise(x, 2.0, 1.0) * 3) / 4
    assert torch.allclose(out, expected, atol=1e-5)


def test_area_runs_on_the_crop_with_feathered_edges():
    model = GaussianModel(s=0.5)
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    sigma = torch.tensor([2.0])
    entries = convert_cond(cond(0.0) + cond(1.0, area=(8, 8, 4, 4)))
    entries = prepare_conds(model, {"positive": entries}, x)["positive"]
    (out,) = calc_cond_batch(model, [entries], x, sigma, {})
    assert sorted(c["shape"][2:] for c in model.calls) == [(8, 8), (16, 16)]
    base, area = model.denoise(x, 2.0, 0.0), model.denoise(x, 2.0, 1.0)
    assert torch.allclose(out[..., :4, :], base[..., :4, :], atol=1e-6)  # outside the area
    centre = (base[..., 7:9, 7:9] + area[..., 7:9, 7:9]) / 2  # weight 1 + 1 in the middle of the area
    assert torch.allclose(out[..., 7:9, 7:9], centre, atol=1e-5)
    edge = (base[..., 4, 8] + area[..., 4, 8] * 0.5) / 1.5  # first row of the area: fade 1/2 (rr = 2)
    assert torch.allclose(out[..., 4, 8], edge, atol=1e-5)


def test_percentage_area_and_same_area_uncond():
    model = GaussianModel()
    x = torch.zeros(1, 4, 16, 16)
    pos = convert_cond(cond(0.0) + cond(1.0, area=("percentage", 0.5, 0.25, 0.5, 0.0)))
    prepared = prepare_conds(model, {"positive": pos, "negative": convert_cond(cond(-1.0))}, x)
    assert prepared["positive"][1]["area"] == (8, 4, 8, 0)
    # the negative got an entry over the same area, with its own prompt (so CFG compares like with like)
    assert len(prepared["negative"]) == 2 and prepared["negative"][1]["area"] == (8, 4, 8, 0)
    assert float(prepared["negative"][1]["model_conds"]["c_crossattn"].mean()) == -1.0


def test_mask_weights_an_entry():
    model = GaussianModel(s=0.5)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(1, 16, 16)
    mask[:, :, 8:] = 1.0  # right half, given at image size: resized to the latent
    entries = convert_cond(cond(0.0) + cond(1.0, mask=mask, mask_strength=1.0))
    entries = prepare_conds(model, {"positive": entries}, x)["positive"]
    assert entries[1]["mask"].shape == (1, 8, 8)
    (out,) = calc_cond_batch(model, [entries], x, torch.tensor([2.0]), {})
    base, masked = model.denoise(x, 2.0, 0.0), model.denoise(x, 2.0, 1.0)
    assert torch.allclose(out[..., :3], base[..., :3], atol=1e-6)
    assert torch.allclose(out[..., 5:], (base[..., 5:] + masked[..., 5:]) / 2, atol=1e-5)


def test_start_end_percent_limit_an_entry_to_part_of_the_schedule():
    model = GaussianModel(s=0.5)
    ms = model.model_sampling
    x = torch.zeros(1, 4, 8, 8)
    entries = convert_cond(cond(0.0) + cond(1.0, start_percent=0.5, end_percent=0.9))
    entries = prepare_conds(model, {"positive": entries}, x)["positive"]
    assert entries[1]["timestep_start"] == pytest.approx(ms.percent_to_sigma(0.5))
    early = float(ms.percent_to_sigma(0.2))
    middle = float(ms.percent_to_sigma(0.7))
    late = float(ms.percent_to_sigma(0.95))
    for sigma, active in ((early, False), (middle, True), (late, False)):
        (out,) = calc_cond_batch(model, [entries], x, torch.tensor([sigma]), {})
        base = model.denoise(x, sigma, 0.0)
        expected = (base + model.denoise(x, sigma, 1.0)) / 2 if active else base
        assert torch.allclose(out, expected, atol=1e-5), (sigma, active)


def test_extra_conds_and_y_reach_the_model():
    seen = []

    class XL(GaussianModel):
        def extra_conds(self, cond_dict, x, sigma, *, prompt_type, latent_image, denoise_mask, seed):
            assert prompt_type == cond_dict["prompt_type"] and seed == 1 and denoise_mask is None
            assert latent_image is not None and float(sigma) == pytest.approx(
                float(self.model_sampling.sigma_max), rel=1e-5
            )
            seen.append((cond_dict["prompt_type"], cond_dict["width"], cond_dict["height"], tuple(x.shape)))
            return {"y": torch.full((1, 6), float(cond_dict["pooled_output"].mean()))}

    model = XL()
    model.latent_format = None
    latent = torch.zeros(1, 4, 8, 8)
    pos = [[torch.zeros(1, 77, 8), {"pooled_output": torch.full((1, 4), 0.5), "width": 1024}]]
    neg = [[torch.zeros(1, 77, 8), {"pooled_output": torch.zeros(1, 4)}]]
    out = sample(model, None, 6, 2.0, "dpmpp_2m", "karras", pos, neg, latent, seed=1)
    # once per entry, before the loop; width/height default to the image size of the latent
    assert seen == [("positive", 1024, 64, (1, 4, 8, 8)), ("negative", 64, 64, (1, 4, 8, 8))]
    assert all(c["y"] is not None and c["y"].shape == (2, 6) for c in model.calls)
    assert float(out.mean()) == pytest.approx(1.0, abs=0.05)  # guided mean: 0 + (0.5 - 0) * 2


def test_model_options_hooks():
    model = GaussianModel()
    x = torch.zeros(1, 4, 8, 8)
    conds = _prepared(model, cond(1.0), cond(0.0), x)
    seen = {}

    def post(args):
        seen.update(args)
        return args["denoised"] * 0 + 7.0

    options = {"sampler_post_cfg_function": [post], "sampler_cfg_function": lambda a: a["cond"]}
    out = CFGDenoiser(model, conds, 3.0)(x, torch.tensor([1.0]), model_options=options)
    assert torch.equal(out, torch.full_like(x, 7.0))
    assert torch.allclose(seen["denoised"], seen["cond_denoised"])  # the patched cfg returned x - cond


# -- KSampler pipeline ----------------------------------------------------------------------------------


def test_split_advanced_sampling_equals_one_run():
    """KSamplerAdvanced end_at_step N with leftover noise, then start_at_step N without noise,
    reproduces the single run (the SDXL base + refiner pattern)."""
    model = GaussianModel(s=0.5, continuous=False)
    latent = torch.zeros(1, 4, 8, 8)
    args = (10, 4.0, "euler", "karras", cond(0.5), cond(0.0))
    full = sample(model, None, *args, latent, seed=3)
    first = sample(model, None, *args, latent, seed=3, last_step=6, force_full_denoise=False)
    second = sample(model, None, *args, first, seed=3, start_step=6, disable_noise=True)
    assert torch.allclose(second, full, atol=1e-4)
    assert not torch.allclose(first, full, atol=1e-2)  # the first half did leave noise


def test_start_beyond_steps_returns_the_latent_and_denoise_zero_too():
    model = GaussianModel()
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    out = sample(model, None, 5, 7.0, "euler", "normal", cond(0.5), cond(0.0), latent, seed=1, start_step=5)
    assert torch.equal(out, latent)
    out = sample(model, None, 5, 7.0, "euler", "normal", cond(0.5), cond(0.0), latent, seed=1, denoise=0.0)
    assert torch.equal(out, latent)
    assert model.calls == []


def test_initial_noise_scaling_full_vs_partial_denoise():
    """Spec §6.2: x = latent + noise * sqrt(1 + sigma^2) at full denoise, latent + noise * sigma below."""
    seen = []

    def spy(model, x, sigmas, *, extra_args=None, callback=None):
        seen.append((x.clone(), sigmas.clone()))
        return x

    model = GaussianModel(continuous=False)
    latent = torch.full((1, 4, 8, 8), 2.0)
    noise = prepare_noise(latent, 5)
    sampler = sampler_object("euler")
    spy_sampler = type(sampler)("spy", spy)
    sigmas = ksampler_sigmas(model.model_sampling, "euler", "normal", 4)
    guided_sample(model, noise, cond(0), cond(0), 1.0, spy_sampler, sigmas, torch.zeros_like(latent))
    assert torch.allclose(seen[0][0], noise * torch.sqrt(1 + sigmas[0] ** 2))
    partial = ksampler_sigmas(model.model_sampling, "euler", "normal", 4, denoise=0.5)
    out = guided_sample(model, noise, cond(0), cond(0), 1.0, spy_sampler, partial, latent)
    assert torch.allclose(seen[1][0], latent * 0.18215 + noise * partial[0], atol=1e-6)  # latent in model space
    assert torch.allclose(out, seen[1][0] / 0.18215, atol=1e-5)  # and back out


def test_noise_mask_keeps_the_unmasked_region():
    model = GaussianModel(s=0.5, continuous=False)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    mask = torch.zeros(1, 64, 64)
    mask[..., 32:] = 1.0  # change only the right half (mask given at image resolution)
    out = sample(model, None, 8, 3.0, "euler", "karras", cond(0.5), cond(0.0), latent, seed=2, noise_mask=mask)
    assert torch.allclose(out[..., :4], latent[..., :4], atol=1e-4)
    assert not torch.allclose(out[..., 4:], latent[..., 4:], atol=1e-1)


def test_inpaint_blend_formula():
    seen = {}

    class Inner:
        model_sampling = GaussianModel().model_sampling

        def __call__(self, x, sigma, model_options=None, seed=None):
            seen["x"] = x
            return torch.full_like(x, 10.0)

    latent, noise = torch.ones(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.5)
    mask = torch.tensor([[[[1.0, 0.0], [0.25, 0.0]]]])
    wrapper = InpaintDenoiser(Inner(), torch.tensor([3.0, 0.0]), latent, noise)
    x = torch.full((1, 1, 2, 2), 4.0)
    out = wrapper(x, torch.tensor([3.0]), denoise_mask=mask)
    noised = latent + noise * 3.0
    assert torch.allclose(seen["x"], x * mask + noised * (1 - mask))
    assert torch.allclose(out, 10.0 * mask + latent * (1 - mask))


def test_ddim_inpaint_noise_comes_from_seed_plus_one():
    captured = {}
    original = InpaintDenoiser.__init__

    def capture(self, inner, sigmas, latent_image, noise):
        captured["noise"] = noise
        original(self, inner, sigmas, latent_image, noise)

    model = GaussianModel(continuous=False)
    latent = torch.zeros(1, 4, 8, 8)
    try:
        InpaintDenoiser.__init__ = capture
        sample(model, None, 2, 1.0, "ddim", "normal", cond(0), cond(0), latent, seed=20)
        ddim_noise = captured["noise"]
        sample(model, None, 2, 1.0, "euler", "normal", cond(0), cond(0), latent, seed=20)
        euler_noise = captured["noise"]
    finally:
        InpaintDenoiser.__init__ = original
    assert torch.equal(ddim_noise, torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(21)))
    assert torch.equal(euler_noise, prepare_noise(latent, 20))


def test_prepare_mask_shapes():
    mask = torch.zeros(64, 64)
    mask[:, 32:] = 1
    m = prepare_mask(mask, (3, 4, 8, 8), "cpu")
    assert m.shape == (3, 4, 8, 8)
    assert float(m[..., :3].max()) == 0.0 and float(m[..., 5:].min()) == 1.0


def test_progress_callback_per_step():
    steps_seen = []
    model = GaussianModel()
    sample(model, None, 4, 2.0, "heun", "karras", cond(0.3), cond(0.0), torch.zeros(1, 4, 8, 8), seed=1,
           callback=lambda i, x0, x, total: steps_seen.append((i, total, tuple(x0.shape))))  # fmt: skip
    assert steps_seen == [(i, 4, (1, 4, 8, 8)) for i in range(4)]


def test_interrupt_stops_between_evaluations():
    calls = []

    def check():
        calls.append(1)
        if len(calls) > 2:
            raise Interrupted("interrupted")

    token = runtime.set_current(runtime.NodeRuntime(node_id="3", class_type="KSampler", interrupt_check=check))
    try:
        with pytest.raises(Interrupted):
            sample(GaussianModel(), None, 10, 2.0, "euler", "karras", cond(0.3), cond(0.0),
                   torch.zeros(1, 4, 8, 8), seed=1)  # fmt: skip
    finally:
        runtime.reset_current(token)
    assert len(calls) == 3


def test_common_ksampler_latent_dict():
    model = GaussianModel(continuous=False)
    latent = {"samples": torch.zeros(2, 4, 8, 8), "batch_index": [3, 4]}
    out = common_ksampler(model, 5, 4, 2.0, "euler", "normal", cond(0.3), cond(0.0), latent)
    assert out["batch_index"] == [3, 4] and out["samples"].shape == (2, 4, 8, 8)
    # batch_index 4 reproduces the 5th image of a batch-of-one run sequence with that seed
    single = common_ksampler(model, 5, 4, 2.0, "euler", "normal", cond(0.3), cond(0.0),
                             {"samples": torch.zeros(1, 4, 8, 8), "batch_index": [4]})  # fmt: skip
    assert torch.allclose(out["samples"][1], single["samples"][0], atol=1e-6)
    # an empty latent with the wrong channel count is widened to the model's
    wide = common_ksampler(model, 5, 2, 2.0, "euler", "normal", cond(0.3), cond(0.0),
                           {"samples": torch.zeros(1, 16, 8, 8)})  # fmt: skip
    assert wide["samples"].shape == (1, 4, 8, 8)
    with pytest.raises(EngineError, match="samples"):
        common_ksampler(model, 5, 2, 2.0, "euler", "normal", cond(0), cond(0), {})


def test_sample_custom_with_options():
    model = GaussianModel()
    latent = torch.zeros(1, 4, 8, 8)
    sigmas = ksampler_sigmas(model.model_sampling, "euler_ancestral", "karras", 6)
    noise = prepare_noise(latent, 1)
    plain = sample_custom(model, noise, 2.0, "euler_ancestral", sigmas, cond(0.3), cond(0.0), latent, seed=1)
    no_eta = sample_custom(model, noise, 2.0, sampler_object("euler_ancestral", eta=0.0), sigmas, cond(0.3),
                           cond(0.0), latent, seed=1)  # fmt: skip
    euler = sample_custom(model, noise, 2.0, "euler", sigmas, cond(0.3), cond(0.0), latent, seed=1)
    assert torch.allclose(no_eta, euler, atol=1e-5)  # eta 0 removes the ancestral noise
    assert not torch.allclose(plain, euler, atol=1e-3)


def test_bad_inputs_are_reported():
    model = GaussianModel()
    latent = torch.zeros(1, 4, 8, 8)
    with pytest.raises(EngineError, match="noise tensor or a seed"):
        sample(model, None, 2, 1.0, "euler", "normal", cond(0), cond(0), latent)
    with pytest.raises(EngineError, match=r"positive\[0\]"):
        sample(model, None, 2, 1.0, "euler", "normal", [torch.zeros(1, 77, 8)], cond(0), latent, seed=1)
    with pytest.raises(EngineError, match="noise shape"):
        sample(model, torch.zeros(1, 4, 4, 4), 2, 1.0, "euler", "normal", cond(0), cond(0), latent, seed=1)
    with pytest.raises(EngineError, match="unknown scheduler"):
        sample(model, None, 2, 1.0, "euler", "fancy", cond(0), cond(0), latent, seed=1)
