"""Regenerate Loom's golden numbers.

    .venv/bin/python tests/golden/regen.py           # recompute, print differences, write nothing
    .venv/bin/python tests/golden/regen.py --write   # rewrite the JSON files (say why in the commit)

samplers.json: every registered sampler (and a few KSampler pipeline cases) run on an analytic
model - the exact denoiser of a Gaussian data prior, whose mean comes from the text context - so
the numbers pin down the sampler arithmetic, the noise streams and the CFG/inpaint plumbing
without any network weights. tests/diffusion/test_samplers.py recomputes the same cases with the
functions below and compares.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from diffusion.sampling import SAMPLERS  # noqa: E402
from diffusion.sampling.ksampler import sample  # noqa: E402
from diffusion.sampling.model_sampling import ModelSamplingDiscrete  # noqa: E402

log = logging.getLogger("golden")


class ContinuousSampling(ModelSamplingDiscrete):
    """SD's sigma table, but timestep(sigma) = sigma: the analytic model then sees the exact sigma
    instead of the nearest table entry, so exact ODE solutions apply."""

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma.clone()

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return timestep.float()


class LatentFormat:
    scale_factor = 0.18215
    latent_channels = 4

    def process_in(self, latent: torch.Tensor) -> torch.Tensor:
        return latent * self.scale_factor

    def process_out(self, latent: torch.Tensor) -> torch.Tensor:
        return latent / self.scale_factor


class GaussianModel:
    """A MODEL (ksampler.py interface) whose network predicts eps for data x0 ~ N(mu, s^2), where
    mu is the mean of the text context (so positive and negative prompts pull differently).
    The exact denoiser is D(x, sigma) = (s^2 x + sigma^2 mu) / (s^2 + sigma^2)."""

    def __init__(self, s: float = 0.5, continuous: bool = True, prediction: str = "eps") -> None:
        cls = ContinuousSampling if continuous else ModelSamplingDiscrete
        self.model_sampling = cls(prediction)
        self.s2 = s * s
        self.latent_format = LatentFormat()
        self.calls: list[dict[str, Any]] = []

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        return (self.s2 * x + sigma**2 * mu) / (self.s2 + sigma**2)

    def apply_model(self, x, t, c_crossattn, y=None, control=None, **extra):
        sigma = self.model_sampling.sigma(t).view(-1, 1, 1, 1)
        self.calls.append({"batch": x.shape[0], "shape": tuple(x.shape), "t": t.clone(), "y": y,
                           "context": tuple(c_crossattn.shape)})  # fmt: skip
        x_k = x * (sigma**2 + 1) ** 0.5  # undo calculate_input
        mu = c_crossattn.mean(dim=(1, 2)).view(-1, 1, 1, 1)
        if y is not None:
            mu = mu + y.mean(dim=1).view(-1, 1, 1, 1)
        denoised = self.denoise(x_k, sigma, mu)
        if self.model_sampling.prediction == "v_prediction":  # v = (x_k/(s^2+1) ... ) inverted from D
            return (x_k / (sigma**2 + 1) - denoised) * (sigma**2 + 1) ** 0.5 / sigma
        return (x_k - denoised) / sigma


def cond(mu: float, tokens: int = 77, dim: int = 8, **options: Any) -> list:
    """A CONDITIONING whose context has mean `mu`."""
    return [[torch.full((1, tokens, dim), float(mu)), dict(options)]]


def _summary(t: torch.Tensor) -> dict[str, Any]:
    flat = t.flatten().double()
    return {
        "shape": list(t.shape),
        "sum": round(float(flat.sum()), 6),
        "mean": round(float(flat.mean()), 8),
        "abs_mean": round(float(flat.abs().mean()), 8),
        "head": [round(float(v), 7) for v in flat[:4]],
    }


def sampler_case(name: str) -> torch.Tensor:
    """One sampler on the discrete-timestep Gaussian model: txt2img, 6 karras steps, cfg 2."""
    model = GaussianModel(s=0.5, continuous=False)
    latent = torch.zeros(1, 4, 8, 8)
    return sample(model, None, 6, 2.0, name, "karras", cond(0.5), cond(-0.25), latent, seed=42)


def pipeline_cases() -> dict[str, Callable[[], torch.Tensor]]:
    """KSampler features beyond the sampler itself."""

    def img2img() -> torch.Tensor:
        latent = torch.linspace(-1, 1, 256).reshape(1, 4, 8, 8)
        return sample(GaussianModel(continuous=False), None, 5, 3.0, "euler", "normal", cond(0.5), cond(0.0),
                      latent, denoise=0.6, seed=7)  # fmt: skip

    def inpaint_ddim() -> torch.Tensor:
        latent = torch.linspace(-1, 1, 256).reshape(1, 4, 8, 8)
        mask = torch.zeros(1, 16, 16)
        mask[:, :, 8:] = 1.0
        return sample(GaussianModel(continuous=False), None, 5, 3.0, "ddim", "ddim_uniform", cond(0.5), cond(0.0),
                      latent, noise_mask=mask, seed=11)  # fmt: skip

    def area_batch2_v() -> torch.Tensor:
        pos = cond(0.5) + cond(1.5, strength=0.8, area=(4, 4, 2, 2))
        return sample(GaussianModel(continuous=False, prediction="v_prediction"), None, 4, 4.0, "dpmpp_2m",
                      "sgm_uniform", pos, cond(0.0), torch.zeros(2, 4, 8, 8), seed=3)  # fmt: skip

    return {"pipeline:img2img_euler_normal_d06": img2img, "pipeline:inpaint_ddim_uniform": inpaint_ddim,
            "pipeline:area_batch2_vpred_dpmpp_2m": area_batch2_v}  # fmt: skip


def compute_samplers() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in SAMPLERS:
        out[name] = _summary(sampler_case(name))
    for name, fn in pipeline_cases().items():
        out[name] = _summary(fn())
    return out


GOLDEN_FILES: dict[str, Callable[[], dict[str, Any]]] = {"samplers.json": compute_samplers}


def close(a: Any, b: Any, rel: float = 1e-4, abs_: float = 1e-5) -> bool:
    """Recursive comparison of golden values (numbers within tolerance, everything else equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], rel, abs_) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, rel, abs_) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)
    return a == b


def _diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    lines = []
    for key in sorted(set(old) | set(new)):
        if key not in old:
            lines.append(f"  + {key}: {new[key]}")
        elif key not in new:
            lines.append(f"  - {key}")
        elif not close(old[key], new[key]):
            lines.append(f"  ~ {key}: {old[key]} -> {new[key]}")
    return lines


def _dumps(data: dict[str, Any]) -> str:
    """One line per case: small files, readable diffs."""
    rows = [f"  {json.dumps(k)}: {json.dumps(data[k], sort_keys=True)}" for k in sorted(data)]
    return "{\n" + ",\n".join(rows) + "\n}\n"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the golden files")
    args = parser.parse_args(argv)
    changed = 0
    for filename, compute in GOLDEN_FILES.items():
        path = HERE / filename
        new = compute()
        old = json.loads(path.read_text()) if path.exists() else {}
        lines = _diff(old, new)
        log.info("%s: %s", filename, f"{len(lines)} difference(s)" if lines else "unchanged")
        for line in lines:
            log.info("%s", line)
        changed += bool(lines)
        if args.write and lines:
            path.write_text(_dumps(new))
            log.info("wrote %s", path)
    return 1 if changed and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())
