"""Custom sampling nodes: the KSampler taken apart into NOISE, GUIDER, SAMPLER and SIGMAS
(spec §5.5; ComfyUI's comfy_extras/nodes_custom_sampler.py).

- NOISE: RandomNoise / DisableNoise give objects with `seed` and `generate_noise(latent)`;
- GUIDER: BasicGuider / CFGGuider give a `Guider` (model + conditioning + cfg) whose `sample()`
  runs a sampler over sigmas, as ComfyUI's CFGGuider does (`model_patcher` names its MODEL);
- SAMPLER: KSamplerSelect gives diffusion.sampling.ksampler.Sampler;
- SIGMAS: a float32 tensor of noise levels, usually ending in 0.

The same seed, sampler and schedule give exactly KSampler's numbers: both paths end in
diffusion.sampling.ksampler.guided_sample. Nothing imports torch at module import.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from nodes.api import Boolean, Choice, Float, Input, Int, Node, NodeRuntime, NodeSpec, Output
from nodes.sampling import MAX_SEED, SAMPLER_NAMES, SCHEDULER_NAMES, step_callback

log = logging.getLogger(__name__)

Latent = dict[str, Any]
SCHEDULERS_CATEGORY = "sampling/custom_sampling/schedulers"


# -- the objects that flow on NOISE and GUIDER links ----------------------------------------------------


class RandomNoiseSource:
    """NOISE: ComfyUI's initial noise for a latent from `seed` (honours the latent's batch_index)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def generate_noise(self, input_latent: Latent) -> Any:
        from diffusion.sampling.noise import prepare_noise

        return prepare_noise(input_latent["samples"], self.seed, input_latent.get("batch_index"))

    def __repr__(self) -> str:
        return f"RandomNoise(seed={self.seed})"


class EmptyNoiseSource:
    """NOISE that is all zeros (the latent is sampled as it is: a refiner pass, for instance)."""

    seed = 0

    def generate_noise(self, input_latent: Latent) -> Any:
        import torch

        latent = input_latent["samples"]
        return torch.zeros(latent.shape, dtype=latent.dtype, layout=latent.layout, device="cpu")

    def __repr__(self) -> str:
        return "DisableNoise()"


class Guider:
    """GUIDER: a model with its conditioning and CFG scale (ComfyUI's CFGGuider surface:
    `model_patcher`, `conds`, `cfg`, `set_conds`, `set_cfg`, `sample`)."""

    def __init__(self, model: Any) -> None:
        if model is None:
            raise ValueError("model input is invalid: None (the loader produced no diffusion model)")
        self.model_patcher = model
        self.conds: dict[str, list] = {}
        self.cfg = 1.0

    def set_conds(self, positive: Sequence, negative: Sequence | None = None) -> None:
        self.conds = {"positive": list(positive)}
        if negative is not None:
            self.conds["negative"] = list(negative)

    def set_cfg(self, cfg: float) -> None:
        self.cfg = cfg

    def sample(self, noise: Any, latent_image: Any, sampler: Any, sigmas: Any, denoise_mask: Any = None,
               callback: Any = None, disable_pbar: bool = False, seed: int | None = None) -> Any:  # fmt: skip
        """Stored-scale latent samples (CPU); the latent unchanged when there are no sigmas."""
        import torch

        from diffusion.sampling.ksampler import guided_sample

        # A guider without a negative prompt runs only the positive one (cfg 1 skips the uncond
        # pass; an empty list contributes nothing should a model patch force that pass).
        negative = self.conds.get("negative", [])
        with torch.no_grad():
            return guided_sample(self.model_patcher, noise, self.conds.get("positive", []), negative, self.cfg,
                                 sampler, sigmas, latent_image, denoise_mask=denoise_mask, callback=callback,
                                 seed=seed)  # fmt: skip

    def __repr__(self) -> str:
        return f"Guider({self.model_patcher!r}, conds={list(self.conds)}, cfg={self.cfg})"


# -- running a guider on a LATENT ---------------------------------------------------------------------


def run_guider(ctx: NodeRuntime, guider: Guider, noise: Any, sampler: Any, sigmas: Any, latent_image: Latent,
               seed: int | None = None) -> tuple[Latent, Latent]:  # fmt: skip
    """(output, denoised_output): the sampled LATENT and the last step's denoised estimate
    (the output itself when no step ran). `seed` seeds the samplers' own per-step noise
    (ancestral, SDE); by default the NOISE's seed."""
    from diffusion.sampling.ksampler import fix_empty_latent_channels, process_latent_out

    model = guider.model_patcher
    latent = {**latent_image, "samples": fix_empty_latent_channels(model, latent_image["samples"])}
    x0: dict[str, Any] = {}
    samples = guider.sample(noise.generate_noise(latent), latent["samples"], sampler, sigmas,
                            denoise_mask=latent.get("noise_mask"), callback=step_callback(ctx, model, x0),
                            seed=noise.seed if seed is None else seed)  # fmt: skip
    out = {**latent, "samples": samples}
    if "x0" not in x0:
        return out, out
    return out, {**latent, "samples": process_latent_out(model, x0["x0"].cpu())}


# -- nodes ------------------------------------------------------------------------------------------------


class SamplerCustom(Node):
    spec = NodeSpec(
        id="SamplerCustom",
        category="sampling/custom_sampling",
        inputs=(
            Input("model", "MODEL"),
            Boolean("add_noise", True),
            Int("noise_seed", 0, min=0, max=MAX_SEED, control_after_generate=True),
            Float("cfg", 8.0, min=0.0, max=100.0, step=0.1, round=0.01),
            Input("positive", "CONDITIONING"),
            Input("negative", "CONDITIONING"),
            Input("sampler", "SAMPLER"),
            Input("sigmas", "SIGMAS"),
            Input("latent_image", "LATENT"),
        ),
        outputs=(Output("LATENT", "output"), Output("LATENT", "denoised_output")),
    )

    def run(self, ctx: NodeRuntime, model: Any, add_noise: bool, noise_seed: int, cfg: float, positive: Any,
            negative: Any, sampler: Any, sigmas: Any, latent_image: Latent) -> tuple[Latent, Latent]:  # fmt: skip
        guider = Guider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        noise = RandomNoiseSource(noise_seed) if add_noise else EmptyNoiseSource()
        # noise_seed also seeds ancestral/SDE step noise when no initial noise is added (ComfyUI).
        return run_guider(ctx, guider, noise, sampler, sigmas, latent_image, seed=noise_seed)


class SamplerCustomAdvanced(Node):
    spec = NodeSpec(
        id="SamplerCustomAdvanced",
        category="sampling/custom_sampling",
        inputs=(
            Input("noise", "NOISE"),
            Input("guider", "GUIDER"),
            Input("sampler", "SAMPLER"),
            Input("sigmas", "SIGMAS"),
            Input("latent_image", "LATENT"),
        ),
        outputs=(Output("LATENT", "output"), Output("LATENT", "denoised_output")),
    )

    def run(self, ctx: NodeRuntime, noise: Any, guider: Guider, sampler: Any, sigmas: Any,
            latent_image: Latent) -> tuple[Latent, Latent]:  # fmt: skip
        return run_guider(ctx, guider, noise, sampler, sigmas, latent_image)


class KSamplerSelect(Node):
    spec = NodeSpec(
        id="KSamplerSelect",
        category="sampling/custom_sampling/samplers",
        inputs=(Choice("sampler_name", SAMPLER_NAMES),),
        outputs=(Output("SAMPLER"),),
    )

    def run(self, ctx: NodeRuntime, sampler_name: str) -> tuple[Any]:
        from diffusion.sampling.ksampler import sampler_object

        return (sampler_object(sampler_name),)


class BasicScheduler(Node):
    spec = NodeSpec(
        id="BasicScheduler",
        category=SCHEDULERS_CATEGORY,
        inputs=(
            Input("model", "MODEL"),
            Choice("scheduler", SCHEDULER_NAMES),
            Int("steps", 20, min=1, max=10000),
            Float("denoise", 1.0, min=0.0, max=1.0, step=0.01),
        ),
        outputs=(Output("SIGMAS"),),
    )

    def run(self, ctx: NodeRuntime, model: Any, scheduler: str, steps: int, denoise: float) -> tuple[Any]:
        import torch

        from diffusion.sampling.ksampler import calculate_sigmas

        total = steps
        if denoise < 1.0:
            if denoise <= 0.0:
                return (torch.FloatTensor([]),)
            total = int(steps / denoise)  # schedule the whole range, keep its low-noise end
        sigmas = calculate_sigmas(model.get_model_object("model_sampling"), scheduler, total).cpu()
        return (sigmas[-(steps + 1) :],)


class KarrasScheduler(Node):
    spec = NodeSpec(
        id="KarrasScheduler",
        category=SCHEDULERS_CATEGORY,
        inputs=(
            Int("steps", 20, min=1, max=10000),
            Float("sigma_max", 14.614642, min=0.0, max=5000.0, step=0.01, round=False),
            Float("sigma_min", 0.0291675, min=0.0, max=5000.0, step=0.01, round=False),
            Float("rho", 7.0, min=0.0, max=100.0, step=0.01, round=False),
        ),
        outputs=(Output("SIGMAS"),),
    )

    def run(self, ctx: NodeRuntime, steps: int, sigma_max: float, sigma_min: float, rho: float) -> tuple[Any]:
        from diffusion.sampling.schedules import sigmas_karras

        return (sigmas_karras(steps, sigma_min, sigma_max, rho),)


class ExponentialScheduler(Node):
    spec = NodeSpec(
        id="ExponentialScheduler",
        category=SCHEDULERS_CATEGORY,
        inputs=(
            Int("steps", 20, min=1, max=10000),
            Float("sigma_max", 14.614642, min=0.0, max=5000.0, step=0.01, round=False),
            Float("sigma_min", 0.0291675, min=0.0, max=5000.0, step=0.01, round=False),
        ),
        outputs=(Output("SIGMAS"),),
    )

    def run(self, ctx: NodeRuntime, steps: int, sigma_max: float, sigma_min: float) -> tuple[Any]:
        from diffusion.sampling.schedules import sigmas_exponential

        return (sigmas_exponential(steps, sigma_min, sigma_max),)


class SDTurboScheduler(Node):
    spec = NodeSpec(
        id="SDTurboScheduler",
        category=SCHEDULERS_CATEGORY,
        inputs=(
            Input("model", "MODEL"),
            Int("steps", 1, min=1, max=10),
            Float("denoise", 1.0, min=0, max=1.0, step=0.01),
        ),
        outputs=(Output("SIGMAS"),),
    )

    def run(self, ctx: NodeRuntime, model: Any, steps: int, denoise: float) -> tuple[Any]:
        import torch

        # SD-Turbo was distilled on the timesteps 999, 899, ..., 99; denoise < 1 starts further down.
        start = 10 - int(10 * denoise)
        timesteps = torch.flip(torch.arange(1, 11) * 100 - 1, (0,))[start : start + steps]
        sigmas = model.get_model_object("model_sampling").sigma(timesteps)
        return (torch.cat([sigmas, sigmas.new_zeros([1])]),)


class SplitSigmas(Node):
    spec = NodeSpec(
        id="SplitSigmas",
        category="sampling/custom_sampling/sigmas",
        inputs=(Input("sigmas", "SIGMAS"), Int("step", 0, min=0, max=10000)),
        outputs=(Output("SIGMAS", "high_sigmas"), Output("SIGMAS", "low_sigmas")),
    )

    def run(self, ctx: NodeRuntime, sigmas: Any, step: int) -> tuple[Any, Any]:
        # Both halves share sigmas[step]: the second pass starts where the first one stops.
        return sigmas[: step + 1], sigmas[step:]


class BasicGuider(Node):
    spec = NodeSpec(
        id="BasicGuider",
        category="sampling/custom_sampling/guiders",
        inputs=(Input("model", "MODEL"), Input("conditioning", "CONDITIONING")),
        outputs=(Output("GUIDER"),),
    )

    def run(self, ctx: NodeRuntime, model: Any, conditioning: Any) -> tuple[Guider]:
        guider = Guider(model)
        guider.set_conds(conditioning)
        return (guider,)


class CFGGuider(Node):
    spec = NodeSpec(
        id="CFGGuider",
        category="sampling/custom_sampling/guiders",
        inputs=(
            Input("model", "MODEL"),
            Input("positive", "CONDITIONING"),
            Input("negative", "CONDITIONING"),
            Float("cfg", 8.0, min=0.0, max=100.0, step=0.1, round=0.01),
        ),
        outputs=(Output("GUIDER"),),
    )

    def run(self, ctx: NodeRuntime, model: Any, positive: Any, negative: Any, cfg: float) -> tuple[Guider]:
        guider = Guider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        return (guider,)


class RandomNoise(Node):
    spec = NodeSpec(
        id="RandomNoise",
        category="sampling/custom_sampling/noise",
        inputs=(Int("noise_seed", 0, min=0, max=MAX_SEED, control_after_generate=True),),
        outputs=(Output("NOISE"),),
    )

    def run(self, ctx: NodeRuntime, noise_seed: int) -> tuple[RandomNoiseSource]:
        return (RandomNoiseSource(noise_seed),)


class DisableNoise(Node):
    spec = NodeSpec(
        id="DisableNoise",
        category="sampling/custom_sampling/noise",
        inputs=(),
        outputs=(Output("NOISE"),),
    )

    def run(self, ctx: NodeRuntime) -> tuple[EmptyNoiseSource]:
        return (EmptyNoiseSource(),)


NODES = [
    SamplerCustom,
    BasicScheduler,
    KarrasScheduler,
    ExponentialScheduler,
    SDTurboScheduler,
    SplitSigmas,
    KSamplerSelect,
    BasicGuider,
    CFGGuider,
    DisableNoise,
    RandomNoise,
    SamplerCustomAdvanced,
]

__all__ = [
    "NODES",
    "BasicGuider",
    "BasicScheduler",
    "CFGGuider",
    "DisableNoise",
    "EmptyNoiseSource",
    "ExponentialScheduler",
    "Guider",
    "KSamplerSelect",
    "KarrasScheduler",
    "RandomNoise",
    "RandomNoiseSource",
    "SDTurboScheduler",
    "SamplerCustom",
    "SamplerCustomAdvanced",
    "SplitSigmas",
    "run_guider",
]
