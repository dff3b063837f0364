"""Noise reproducibility (spec §6.2): initial noise, batch_index assembly, ancestral and Brownian noise."""

from __future__ import annotations

import pytest
import torch

from core.errors import EngineError
from diffusion.sampling.noise import (
    BrownianTreeNoiseSampler,
    brownian_noise_sampler,
    default_noise_sampler,
    prepare_noise,
)


@pytest.fixture(autouse=True)
def _keep_global_rng():
    """Tests below reseed torch's global generator to build references; leave it as found."""
    with torch.random.fork_rng(devices=[]):
        yield


@pytest.mark.parametrize("shape", [(1, 4, 16, 16), (3, 4, 9, 7), (2, 4, 1, 3)])
@pytest.mark.parametrize("seed", [0, 42, 2**63 - 1])
def test_prepare_noise_equals_comfyui_global_seed_and_one_randn(shape, seed):
    latent = torch.zeros(shape)
    torch.manual_seed(seed)
    reference = torch.randn(shape)
    assert torch.equal(prepare_noise(latent, seed), reference)


def test_prepare_noise_leaves_global_generator_alone():
    torch.manual_seed(123)
    expected_next = torch.randn(5)
    torch.manual_seed(123)
    prepare_noise(torch.zeros(1, 4, 8, 8), seed=7)
    assert torch.equal(torch.randn(5), expected_next)


def test_batch_is_one_draw_not_seed_plus_k():
    noise = prepare_noise(torch.zeros(2, 4, 8, 8), seed=5)
    single_next_seed = prepare_noise(torch.zeros(1, 4, 8, 8), seed=6)
    assert not torch.equal(noise[1:], single_next_seed)
    assert not torch.equal(noise[0], noise[1])


def test_batch_index_assembles_sequential_single_draws():
    latent = torch.zeros(3, 4, 8, 8)
    torch.manual_seed(9)
    draws = [torch.randn(1, 4, 8, 8) for _ in range(4)]
    noise = prepare_noise(latent, 9, batch_index=[3, 1, 3])
    assert noise.shape == (3, 4, 8, 8)
    assert torch.equal(noise[0], draws[3][0])
    assert torch.equal(noise[1], draws[1][0])
    assert torch.equal(noise[2], draws[3][0])  # duplicates share their noise
    # LatentFromBatch(batch_index=[0]) reproduces the first image of the seed's single-image run
    assert torch.equal(prepare_noise(torch.zeros(1, 4, 8, 8), 9, batch_index=[0]), draws[0])


def test_batch_index_errors():
    with pytest.raises(EngineError, match="empty"):
        prepare_noise(torch.zeros(1, 4, 2, 2), 0, batch_index=[])
    with pytest.raises(EngineError, match="negative"):
        prepare_noise(torch.zeros(1, 4, 2, 2), 0, batch_index=[-1])


def test_default_noise_sampler_uses_seed_plus_one_on_cpu():
    x = torch.zeros(2, 4, 8, 8)
    sampler = default_noise_sampler(x, seed=100)
    gen = torch.Generator().manual_seed(101)
    first, second = torch.randn(x.shape, generator=gen), torch.randn(x.shape, generator=gen)
    s, s_next = torch.tensor(2.0), torch.tensor(1.0)
    assert torch.equal(sampler(s, s_next), first)
    assert torch.equal(sampler(s, s_next), second)  # a fresh draw per step, same stream
    assert not torch.equal(first, prepare_noise(x, 100))  # never replays the initial noise


def test_default_noise_sampler_without_seed_uses_global_generator():
    x = torch.zeros(1, 4, 4, 4)
    torch.manual_seed(3)
    expected = torch.randn(x.shape)
    torch.manual_seed(3)
    assert torch.equal(default_noise_sampler(x)(torch.tensor(1.0), torch.tensor(0.5)), expected)


def test_brownian_tree_is_reproducible_and_seed_dependent():
    x = torch.zeros(1, 4, 16, 16)
    sigmas = torch.tensor([14.6, 5.0, 1.0, 0.1, 0.0])
    a = brownian_noise_sampler(x, sigmas, seed=1, cpu=True)
    b = brownian_noise_sampler(x, sigmas, seed=1, cpu=True)
    c = brownian_noise_sampler(x, sigmas, seed=2, cpu=True)
    s0, s1 = sigmas[1], sigmas[2]
    n_a = a(s0, s1)
    assert n_a.shape == x.shape
    assert torch.equal(n_a, b(s0, s1))
    assert not torch.allclose(n_a, c(s0, s1))
    assert 0.85 < float(n_a.std()) < 1.15  # increments are normalised to unit variance


def test_brownian_increments_are_consistent():
    """W(a, c) = W(a, b) + W(b, c): the defining property that makes SDE samplers step-count stable."""
    x = torch.zeros(1, 4, 8, 8)
    ns = BrownianTreeNoiseSampler(x, 0.03, 14.6, seed=11, cpu=True)
    a, b, c = torch.tensor(5.0), torch.tensor(2.0), torch.tensor(0.5)
    whole = ns(a, c) * (a - c).sqrt()
    parts = ns(a, b) * (a - b).sqrt() + ns(b, c) * (b - c).sqrt()
    assert torch.allclose(whole, parts, atol=1e-5)
    # direction does not matter: W(b, a) = -W(a, b), normalised by |a - b|
    assert torch.allclose(ns(b, a), -ns(a, b), atol=1e-6)


def test_brownian_tree_per_item_seeds():
    x = torch.zeros(2, 4, 4, 4)
    ns = BrownianTreeNoiseSampler(x, 0.1, 10.0, seed=[5, 6], cpu=True)
    single5 = BrownianTreeNoiseSampler(x[:1], 0.1, 10.0, seed=5, cpu=True)
    out = ns(torch.tensor(3.0), torch.tensor(1.0))
    assert out.shape == x.shape
    assert torch.allclose(out[0], single5(torch.tensor(3.0), torch.tensor(1.0))[0])
    with pytest.raises(EngineError, match="one per item"):
        BrownianTreeNoiseSampler(x, 0.1, 10.0, seed=[1, 2, 3])
