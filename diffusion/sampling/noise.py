"""Noise, bit-compatible with ComfyUI for the same seed (spec §6.2).

- Initial noise: the CPU mt19937 generator seeded with `seed`, ONE `randn` over the whole latent
  batch (so batch item k is not the single-image noise of seed + k). ComfyUI reseeds torch's global
  generator; we use a private `torch.Generator` with the same seed, which yields the same numbers
  without touching global state (two workers in one process cannot race on it).
- Ancestral samplers: a generator on the latent's device seeded with `seed` (`seed + 1` on CPU),
  one `randn(x.shape)` per call.
- SDE samplers: torchsde's BrownianTree with entropy = seed, kept on the CPU unless `cpu=False`
  (the `*_gpu` samplers); increments are normalised to unit variance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from core.errors import EngineError

log = logging.getLogger(__name__)

NoiseSampler = Callable[[Tensor, Tensor], Tensor]
"""noise_sampler(sigma, sigma_next) -> unit-variance noise shaped like the sample."""


def cpu_generator(seed: int) -> torch.Generator:
    """A CPU generator in the state `torch.manual_seed(seed)` leaves the global one in."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    return gen


def prepare_noise(latent: Tensor, seed: int, batch_index: Sequence[int] | None = None) -> Tensor:
    """Initial noise for `latent` (B, C, H, W), always drawn on the CPU.

    `batch_index` (set by LatentFromBatch / LatentBatchSeedBehavior) selects which draws of a
    sequence of single-image draws make up the batch: draw (1, C, H, W) for i = 0..max(index) and
    keep draw i for every entry equal to i (duplicates share their noise).
    """
    gen = cpu_generator(seed)
    if batch_index is None:
        return torch.randn(latent.size(), dtype=latent.dtype, layout=latent.layout, generator=gen, device="cpu")
    indices = [int(i) for i in batch_index]
    if not indices:
        raise EngineError("latent batch_index is empty; it needs one index per latent in the batch")
    if min(indices) < 0:
        raise EngineError(f"latent batch_index {indices} holds a negative index")
    wanted = set(indices)
    draws: dict[int, Tensor] = {}
    single = [1, *latent.shape[1:]]
    for i in range(max(indices) + 1):
        noise = torch.randn(single, dtype=latent.dtype, layout=latent.layout, generator=gen, device="cpu")
        if i in wanted:
            draws[i] = noise
    return torch.cat([draws[i] for i in indices], dim=0)


def default_noise_sampler(x: Tensor, seed: int | None = None) -> NoiseSampler:
    """Fresh Gaussian noise per step from a generator owned by this sampling run.

    The CPU generator is seeded with seed + 1 so it does not replay the initial noise (which came
    from `seed` on the CPU); on another device the streams differ anyway. seed=None uses torch's
    global generator (non-reproducible), as ComfyUI does.
    """
    generator = None
    if seed is not None:
        if x.device == torch.device("cpu"):
            seed += 1
        generator = torch.Generator(device=x.device)
        generator.manual_seed(seed)

    def sample(sigma: Tensor, sigma_next: Tensor) -> Tensor:
        return torch.randn(x.size(), dtype=x.dtype, layout=x.layout, device=x.device, generator=generator)

    return sample


class BatchedBrownianTree:
    """torchsde.BrownianTree over [t0, t1] (order-insensitive), optionally one tree per batch item."""

    def __init__(self, x: Tensor, t0: Tensor, t1: Tensor, seed: int | Sequence[int] | None = None, cpu: bool = True):
        import torchsde  # imported lazily: only the SDE samplers need it

        self.cpu_tree = cpu
        t0, t1, self.sign = self._sort(t0, t1)
        w0 = torch.zeros_like(x)
        self.batched = False
        if seed is None:
            seeds: Sequence[int] = (int(torch.randint(0, 2**63 - 1, ()).item()),)
        elif isinstance(seed, (tuple, list)):
            if len(seed) != x.shape[0]:
                raise EngineError(f"got {len(seed)} Brownian tree seeds for a batch of {x.shape[0]}; pass one per item")
            self.batched = True
            seeds = seed
            w0 = w0[0]
        else:
            seeds = (int(seed),)
        if cpu:
            t0, w0, t1 = t0.detach().cpu(), w0.detach().cpu(), t1.detach().cpu()
        self.trees = tuple(torchsde.BrownianTree(t0, w0, t1, entropy=s) for s in seeds)

    @staticmethod
    def _sort(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, int]:
        return (a, b, 1) if a < b else (b, a, -1)

    def __call__(self, t0: Tensor, t1: Tensor) -> Tensor:
        t0, t1, sign = self._sort(t0, t1)
        device, dtype = t0.device, t0.dtype
        if self.cpu_tree:
            t0, t1 = t0.detach().cpu().float(), t1.detach().cpu().float()
        w = torch.stack([tree(t0, t1) for tree in self.trees]).to(device=device, dtype=dtype) * (self.sign * sign)
        return w if self.batched else w[0]


class BrownianTreeNoiseSampler:
    """Noise from a Brownian tree spanning [sigma_min, sigma_max]: W(sigma, sigma') / sqrt(|sigma' - sigma|).

    Unlike independent draws, the noise of a sub-interval is consistent with the noise of the whole
    interval, so SDE samplers give similar images at different step counts.
    """

    def __init__(
        self,
        x: Tensor,
        sigma_min: Tensor | float,
        sigma_max: Tensor | float,
        seed: int | Sequence[int] | None = None,
        transform: Callable[[Tensor], Tensor] = lambda s: s,
        cpu: bool = False,
    ) -> None:
        self.transform = transform
        t0 = transform(torch.as_tensor(sigma_min))
        t1 = transform(torch.as_tensor(sigma_max))
        self.tree = BatchedBrownianTree(x, t0, t1, seed, cpu=cpu)

    def __call__(self, sigma: Tensor, sigma_next: Tensor) -> Tensor:
        t0 = self.transform(torch.as_tensor(sigma))
        t1 = self.transform(torch.as_tensor(sigma_next))
        return self.tree(t0, t1) / (t1 - t0).abs().sqrt()


def brownian_noise_sampler(x: Tensor, sigmas: Tensor, seed: int | None, cpu: bool) -> NoiseSampler:
    """The Brownian tree the SDE samplers build: spanning the smallest non-zero and largest sigma."""
    positive = sigmas[sigmas > 0]
    return BrownianTreeNoiseSampler(x, positive.min(), sigmas.max(), seed=seed, cpu=cpu)
