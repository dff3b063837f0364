"""Classifier-free guidance as a denoiser wrapper, with ComfyUI's conditioning semantics.

CONDITIONING (a list of [cross_attn (1, T, D), options]) is turned into "cond dicts" once per
sampling run (`prepare_conds`): areas in latent units (or percentages), masks resized to the latent,
start/end percent turned into a sigma range, and the model's extra inputs (SDXL's `y`) computed.
At every step `calc_cond_batch` runs all entries that can share a batch - typically positive and
negative - through the model as ONE batch, and blends overlapping areas by their weights
(area feathering, mask, strength), as comfy/samplers.py `calc_cond_batch` does. `CFGDenoiser` then
mixes uncond + (cond - uncond) * cfg, skipping the uncond pass at cfg == 1 unless a CFG++ sampler
needs it. ControlNets (a cond's "control" object) get `pre_run` once per run in prepare_conds and
`get_control(...)` at every batched evaluation; its residuals go to the model as `control=`.

Hooks in `model_options` (same keys and argument dicts as ComfyUI, so ported patches work):
`sampler_cfg_function`, `sampler_post_cfg_function` (list), `sampler_pre_cfg_function` (list),
`sampler_calc_cond_batch_function`, `model_function_wrapper`, `disable_cfg1_optimization`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from core.errors import EngineError

log = logging.getLogger(__name__)

CondDict = dict[str, Any]
_BIG = 2147483648  # ComfyUI's "whole axis" size for areas given with fewer dims than the latent


def set_post_cfg_function(model_options: dict, fn: Callable, disable_cfg1_optimization: bool = False) -> dict:
    """Append a post-CFG hook (fn(args) -> denoised). Mutates and returns `model_options`."""
    model_options["sampler_post_cfg_function"] = [*model_options.get("sampler_post_cfg_function", []), fn]
    if disable_cfg1_optimization:
        model_options["disable_cfg1_optimization"] = True
    return model_options


def repeat_to_batch_size(t: Tensor, batch_size: int) -> Tensor:
    if t.shape[0] > batch_size:
        return t[:batch_size]
    if t.shape[0] < batch_size:
        return t.repeat([math.ceil(batch_size / t.shape[0])] + [1] * (t.ndim - 1))[:batch_size]
    return t


# -- preparing conditioning (once per sampling run) ---------------------------------------------------


def convert_cond(conditioning: Sequence[Sequence[Any]], name: str = "conditioning") -> list[CondDict]:
    """ComfyUI CONDITIONING -> cond dicts (a shallow copy of each options dict + `cross_attn`)."""
    out = []
    for n, entry in enumerate(conditioning):
        if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[1], dict):
            raise EngineError(f"{name}[{n}] is not a [tensor, dict] pair; got {type(entry).__name__}")
        c = dict(entry[1])
        c["model_conds"] = dict(c.get("model_conds", {}))
        if entry[0] is not None:
            c["cross_attn"] = entry[0]
        out.append(c)
    return out


def _resolve_area_and_mask(c: CondDict, dims: tuple[int, ...], device: torch.device) -> CondDict:
    if "area" in c and c["area"][0] == "percentage":
        a = c["area"][1:]
        half = len(a) // 2
        size = tuple(max(1, round(a[d] * dims[d])) for d in range(len(dims)))
        offset = tuple(round(a[d + half] * dims[d]) for d in range(len(dims)))
        c = {**c, "area": size + offset}
    if "mask" in c:
        mask = c["mask"].to(device=device)
        if mask.ndim == len(dims):
            mask = mask.unsqueeze(0)
        if tuple(mask.shape[1:]) != tuple(dims):
            mask = torch.nn.functional.interpolate(mask.unsqueeze(1), size=tuple(dims), mode="bilinear").squeeze(1)
        c = {**c, "mask": mask}
        if c.get("set_area_to_bounds", False):
            c["area"] = _mask_bounds(mask)
    return c


def _mask_bounds(mask: Tensor) -> tuple[int, int, int, int]:
    """(h, w, y, x) bounding box of the non-zero part of a (B, H, W) mask, at least 8x8."""
    bounds = torch.max(torch.abs(mask), dim=0).values
    if not bool(torch.any(bounds != 0)):
        return (8, 8, 0, 0)  # all-zero mask: smallest area, contributes nothing anyway
    ys, xs = torch.where(bounds != 0)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
    return (max(8, y1 - y0 + 1), max(8, x1 - x0 + 1), y0, x0)


def _add_timestep_range(c: CondDict, model_sampling: Any) -> CondDict:
    start = model_sampling.percent_to_sigma(c["start_percent"]) if "start_percent" in c else None
    end = model_sampling.percent_to_sigma(c["end_percent"]) if "end_percent" in c else None
    if start is None and end is None:
        return c
    c = dict(c)
    if start is not None:
        c["timestep_start"] = start
    if end is not None:
        c["timestep_end"] = end
    return c


def _encode_model_conds(
    model: Any, c: CondDict, noise: Tensor, first_sigma: Tensor | None, extra: CondDict
) -> CondDict:
    """Fill `model_conds`: c_crossattn from the text, plus whatever the model adds (SDXL's y).

    The model's extra_conds sees the cond dict plus ComfyUI's sampling parameters (`extra`:
    prompt_type, latent_image, denoise_mask, seed, noise, device) and default width/height =
    latent size * 8, so SDXL size / aesthetic-score embeddings and inpainting inputs can be built."""
    model_conds = dict(c["model_conds"])
    if "cross_attn" in c:
        model_conds["c_crossattn"] = c["cross_attn"]
    if isinstance(c.get("y"), Tensor):
        model_conds["y"] = c["y"]
    extra_conds = getattr(model, "extra_conds", None)
    if callable(extra_conds):
        params = {**extra, **c}
        params.setdefault("width", noise.shape[3] * 8 if noise.ndim >= 4 else None)
        params.setdefault("height", noise.shape[2] * 8)
        kwargs = {k: extra.get(k) for k in ("prompt_type", "latent_image", "denoise_mask", "seed")}
        for k, v in (extra_conds(params, noise, first_sigma, **kwargs) or {}).items():
            if v is not None:
                model_conds[k] = v
    return {**c, "model_conds": model_conds}


def _area_inside(a: Sequence[int], outer: Sequence[int]) -> bool:
    """True when area `a` lies within `outer` (both (sizes..., offsets...))."""
    a, outer = _add_area_dims(list(a), len(outer) // 2), _add_area_dims(list(outer), len(a) // 2)
    n, m = len(a) // 2, len(outer) // 2
    return all(a[n + i] >= outer[m + i] and a[i] + a[n + i] <= outer[i] + outer[m + i] for i in range(min(n, m)))


def _area_size(area: Sequence[int]) -> int:
    return math.prod(area[: len(area) // 2])


def _add_same_area_cond(conds: list[CondDict], c: CondDict) -> None:
    """If `c` has an area, give the other cond list an entry covering the same area (using the
    model inputs of its smallest entry containing it), so cond and uncond stay comparable there."""
    if "area" not in c:
        return
    smallest = None
    for x in conds:
        if "area" not in x:
            smallest = x if smallest is None else smallest
        elif _area_inside(c["area"], x["area"]) and (
            smallest is None or "area" not in smallest or _area_size(smallest["area"]) > _area_size(x["area"])
        ):
            smallest = x
    if smallest is None or ("area" in smallest and smallest["area"] == c["area"]):
        return
    conds.append({**c, "model_conds": dict(smallest["model_conds"])})


def prepare_conds(
    model: Any,
    conds: dict[str, list[CondDict]],
    noise: Tensor,
    first_sigma: Tensor | None = None,
    *,
    latent_image: Tensor | None = None,
    denoise_mask: Tensor | None = None,
    seed: int | None = None,
) -> dict[str, list[CondDict]]:
    """Resolve areas/masks to the latent size, sigma ranges and model inputs (process_conds).
    `conds` maps a prompt type ("positive", "negative") to cond dicts from convert_cond()."""
    dims = tuple(noise.shape[2:])
    out: dict[str, list[CondDict]] = {}
    for key, entries in conds.items():
        extra = {"prompt_type": key, "noise": noise, "device": noise.device, "latent_image": latent_image,
                 "denoise_mask": denoise_mask, "seed": seed}  # fmt: skip
        resolved = [_resolve_area_and_mask(c, dims, noise.device) for c in entries]
        resolved = [_add_timestep_range(c, model.model_sampling) for c in resolved]
        out[key] = [_encode_model_conds(model, c, noise, first_sigma, extra) for c in resolved]
    for key in out:
        for c in list(out[key]):
            for other in out:
                if other != key:
                    _add_same_area_cond(out[other], c)
    _prepare_controls(model, out)
    return out


def _prepare_controls(model: Any, conds: dict[str, list[CondDict]]) -> None:
    """ControlNets: `pre_run` each control once per run (sigma window, model sampling), then give
    the positive controls marked `control_apply_to_uncond` (the old ControlNetApply node) to the
    other cond lists, as comfy/samplers.py process_conds does."""
    for entries in conds.values():
        for c in entries:
            control = c.get("control")
            if control is not None and hasattr(control, "pre_run"):
                control.pre_run(model, model.model_sampling.percent_to_sigma)
    positive = [c for c in conds.get("positive", []) if c.get("control_apply_to_uncond", False)]
    for key, entries in conds.items():
        if key != "positive":
            _share_controls(positive, entries)


def _share_controls(cond: list[CondDict], uncond: list[CondDict]) -> None:
    """Give each control of `cond`'s whole-latent entries to an uncond entry that has none (in
    place; nothing when some uncond entry already has a control)."""
    controls = [c["control"] for c in cond if "area" not in c and c.get("control") is not None]
    if any("area" not in u and u.get("control") is not None for u in uncond):
        return
    plain = [(u, i) for i, u in enumerate(uncond) if "area" not in u]
    if not plain:
        return
    for n, control in enumerate(controls):
        entry, index = plain[n % len(plain)]
        uncond[index] = {**entry, "control": control}  # more controls than entries: the last one wins


# -- one step: evaluate all conds, batched ------------------------------------------------------------


class _Run(NamedTuple):
    input_x: Tensor
    mult: Tensor
    conditioning: dict[str, Tensor]
    area: list[int] | None
    control: Any


def _add_area_dims(area: list[int], num_dims: int) -> list[int]:
    while len(area) // 2 < num_dims:
        half = len(area) // 2
        area = [_BIG, *area[:half], 0, *area[half:]]
    return area


def _feather(mult: Tensor, area: list[int], full_shape: Sequence[int]) -> None:
    """Fade area edges that are inside the latent over up to 8 latent pixels (in place)."""
    ndims = len(area) // 2
    for i in range(ndims):
        rr = min(8, mult.shape[2 + i] // 4)
        if area[ndims + i] != 0:
            for t in range(rr):
                mult.narrow(i + 2, t, 1).mul_((1.0 / rr) * (t + 1))
        if area[i] + area[ndims + i] < full_shape[i + 2]:
            for t in range(rr):
                mult.narrow(i + 2, area[i] - 1 - t, 1).mul_((1.0 / rr) * (t + 1))


def _area_and_mult(c: CondDict, x_in: Tensor, sigma: Tensor) -> _Run | None:
    """This entry's slice of the input and its blend weight, or None outside its sigma range."""
    if "timestep_start" in c and sigma[0] > c["timestep_start"]:
        return None
    if "timestep_end" in c and sigma[0] < c["timestep_end"]:
        return None
    dims = tuple(x_in.shape[2:])
    area = None
    if "area" in c:
        area = _add_area_dims(list(c["area"]), len(dims))
        if len(area) // 2 > len(dims):
            area = area[: len(dims)] + area[len(area) // 2 : len(area) // 2 + len(dims)]
    input_x = x_in
    if area is not None:
        for i in range(len(dims)):
            area[i] = min(input_x.shape[i + 2] - area[len(dims) + i], area[i])
            input_x = input_x.narrow(i + 2, area[len(dims) + i], area[i])
    if "mask" in c:
        mask = c["mask"][: input_x.shape[0]]
        if area is not None:
            for i in range(len(dims)):
                mask = mask.narrow(i + 1, area[len(dims) + i], area[i])
        mask = mask * c.get("mask_strength", 1.0)
        mask = mask.unsqueeze(1).repeat((input_x.shape[0] // mask.shape[0], input_x.shape[1]) + (1,) * (mask.ndim - 1))
    else:
        mask = torch.ones_like(input_x)
    mult = mask * c.get("strength", 1.0)
    if "mask" not in c and area is not None:
        _feather(mult, area, x_in.shape)
    conditioning = {}
    for k, v in c["model_conds"].items():
        if k == "c_concat" and area is not None:  # noise-shaped inputs follow the area crop
            for i in range(len(dims)):
                v = v.narrow(i + 2, area[len(dims) + i], area[i])
        conditioning[k] = repeat_to_batch_size(v, x_in.shape[0]).to(x_in.device)
    return _Run(input_x, mult, conditioning, area, c.get("control"))


def _can_concat_tensor(key: str, a: Tensor, b: Tensor) -> bool:
    if a.shape == b.shape:
        return True
    if key != "c_crossattn" or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        return False
    # token counts of different length are repeated up to their lcm (harmless for attention)
    return math.lcm(a.shape[1], b.shape[1]) // min(a.shape[1], b.shape[1]) <= 4


def _can_concat(a: _Run, b: _Run) -> bool:
    if a.input_x.shape != b.input_x.shape or a.control is not b.control:
        return False
    if a.conditioning.keys() != b.conditioning.keys():
        return False
    return all(_can_concat_tensor(k, a.conditioning[k], b.conditioning[k]) for k in a.conditioning)


def _cat_conditioning(parts: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    out = {}
    for k in parts[0]:
        tensors = [p[k] for p in parts]
        if k == "c_crossattn":
            length = math.lcm(*(t.shape[1] for t in tensors))
            tensors = [t.repeat(1, length // t.shape[1], 1) if t.shape[1] < length else t for t in tensors]
        out[k] = torch.cat(tensors)
    return out


def apply_model_denoised(model: Any, x: Tensor, sigma: Tensor, **c: Any) -> Tensor:
    """Run the network on (x, sigma) and return the denoised estimate (ComfyUI's apply_model)."""
    ms = model.model_sampling
    xc = ms.calculate_input(sigma, x)
    t = ms.timestep(sigma).float()
    out = model.apply_model(xc, t, **c).float()
    return ms.calculate_denoised(sigma, out, x)


def _pop_batch(to_run: list[tuple[_Run, int]]) -> list[tuple[_Run, int]]:
    # Same grouping and order as ComfyUI: everything concatenable with the first entry, taken in
    # reverse list order (so the usual batch is [uncond, cond]).
    first = to_run[0][0]
    idx = [n for n in range(len(to_run)) if _can_concat(to_run[n][0], first)]
    return [to_run.pop(n) for n in reversed(idx)]


def calc_cond_batch(
    model: Any, conds: Sequence[list[CondDict] | None], x_in: Tensor, sigma: Tensor, model_options: dict
) -> list[Tensor]:
    """The model's denoised prediction for each cond list (None lists give zeros)."""
    out_conds = [torch.zeros_like(x_in) for _ in conds]
    out_counts = [torch.ones_like(x_in) * 1e-37 for _ in conds]
    to_run: list[tuple[_Run, int]] = []
    for i, cond in enumerate(conds):
        for c in cond or ():
            p = _area_and_mult(c, x_in, sigma)
            if p is not None:
                to_run.append((p, i))
    while to_run:
        batch = _pop_batch(to_run)
        input_x = torch.cat([p.input_x for p, _ in batch])
        c = _cat_conditioning([p.conditioning for p, _ in batch])
        sigma_ = torch.cat([sigma] * len(batch))
        cond_or_uncond = [i for _, i in batch]
        control = batch[-1][0].control
        if control is not None:
            c["control"] = control.get_control(input_x, sigma_, c, len(batch), {})
        if "model_function_wrapper" in model_options:
            apply = lambda inp, ts, **kw: apply_model_denoised(model, inp, ts, **kw)  # noqa: E731
            args = {"input": input_x, "timestep": sigma_, "c": c, "cond_or_uncond": cond_or_uncond}
            output = model_options["model_function_wrapper"](apply, args).chunk(len(batch))
        else:
            output = apply_model_denoised(model, input_x, sigma_, **c).chunk(len(batch))
        for o, (p, i) in enumerate(batch):
            out_c, out_cts = out_conds[i], out_counts[i]
            if p.area is not None:
                nd = len(p.area) // 2
                for d in range(nd):
                    out_c = out_c.narrow(d + 2, p.area[d + nd], p.area[d])
                    out_cts = out_cts.narrow(d + 2, p.area[d + nd], p.area[d])
            out_c += output[o] * p.mult
            out_cts += p.mult
    return [oc / ct for oc, ct in zip(out_conds, out_counts, strict=True)]


def cfg_function(model, cond_pred, uncond_pred, cond_scale, x, sigma, model_options, cond=None, uncond=None):
    """uncond + (cond - uncond) * scale, or a patched cfg function; then the post-CFG hooks."""
    if "sampler_cfg_function" in model_options:
        args = {"cond": x - cond_pred, "uncond": x - uncond_pred, "cond_scale": cond_scale, "timestep": sigma,
                "input": x, "sigma": sigma, "cond_denoised": cond_pred, "uncond_denoised": uncond_pred,
                "model": model, "model_options": model_options, "input_cond": cond, "input_uncond": uncond}  # fmt: skip
        result = x - model_options["sampler_cfg_function"](args)
    else:
        result = uncond_pred + (cond_pred - uncond_pred) * cond_scale
    for fn in model_options.get("sampler_post_cfg_function", []):
        args = {"denoised": result, "cond": cond, "uncond": uncond, "cond_scale": cond_scale, "model": model,
                "uncond_denoised": uncond_pred, "cond_denoised": cond_pred, "sigma": sigma,
                "model_options": model_options, "input": x}  # fmt: skip
        result = fn(args)
    return result


def sampling_function(model, x, sigma, uncond, cond, cond_scale, model_options, seed=None):
    """One guided denoiser evaluation (comfy.samplers.sampling_function)."""
    skip_uncond = math.isclose(cond_scale, 1.0) and not model_options.get("disable_cfg1_optimization", False)
    conds = [cond, None if skip_uncond else uncond]
    if "sampler_calc_cond_batch_function" in model_options:
        args = {"conds": conds, "input": x, "sigma": sigma, "model": model, "model_options": model_options}
        out = model_options["sampler_calc_cond_batch_function"](args)
    else:
        out = calc_cond_batch(model, conds, x, sigma, model_options)
    for fn in model_options.get("sampler_pre_cfg_function", []):
        args = {"conds": conds, "conds_out": out, "cond_scale": cond_scale, "timestep": sigma, "input": x,
                "sigma": sigma, "model": model, "model_options": model_options}  # fmt: skip
        out = fn(args)
    return cfg_function(model, out[0], out[1], cond_scale, x, sigma, model_options, cond=cond, uncond=conds[1])


class CFGDenoiser:
    """D(x, sigma) with classifier-free guidance over prepared cond dicts."""

    def __init__(
        self,
        model: Any,
        conds: dict[str, list[CondDict]],
        cfg: float,
        interrupt_check: Callable[[], None] | None = None,
    ) -> None:
        self.inner_model = model
        self.conds = conds
        self.cfg = cfg
        self.interrupt_check = interrupt_check

    @property
    def model_sampling(self) -> Any:
        return self.inner_model.model_sampling

    def __call__(self, x: Tensor, sigma: Tensor, model_options: dict | None = None, seed: int | None = None, **_: Any):
        if self.interrupt_check is not None:
            self.interrupt_check()  # once per network evaluation: the unit of work worth stopping between
        return sampling_function(
            self.inner_model, x, sigma, self.conds.get("negative"), self.conds.get("positive"), self.cfg,
            model_options or {}, seed,
        )  # fmt: skip
