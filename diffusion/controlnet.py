"""CONTROL_NET objects: ControlNet, Control-LoRA and T2I-Adapter controls with ComfyUI's behaviour.

A control lives in a conditioning entry (`cond[1]["control"]`). Once per sampling run the guidance
calls `pre_run(model, percent_to_sigma)` (start/end percent -> a sigma window, the model's sampling
parameterisation remembered); at every network evaluation it calls
`get_control(x, sigma, cond, batched_number, transformer_options)` and hands the result to the UNet
as `control={"input": [...], "middle": [...], "output": [...]}` (lists consumed from their end).

- Hint: the IMAGE [B, H, W, 3] given to ControlNetApply, channels first, resized to 8x the latent
  size with "nearest-exact" after a centre crop to the latent's aspect (ComfyUI's common_upscale),
  computed once per latent size and reused; a hint batch is spread over cond/uncond batches like
  ComfyUI's broadcast_image_to.
- Strength multiplies every residual; outside [start, end] percent a control contributes nothing.
- Chaining: a control applied on top of another (`previous_controlnet`) adds its residuals to the
  previous one's, position by position. Chains are walked with a loop, never recursion.
- Placement: a control model loaded with a ModelManager is one of its managed models (moved to the
  compute device for each use, offloaded under memory pressure); without one it runs on the
  latent's device. ControlNets compute in the manager's UNet dtype, T2I-Adapters in float32.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from core.errors import EngineError, ModelError
from diffusion import controlnet_loading as cl
from diffusion import loading
from diffusion.controlnet_model import ControlNetModel

log = logging.getLogger(__name__)

ControlDict = dict[str, list[Tensor | None]]
STAGES = ("input", "middle", "output")
SHUFFLE_SUFFIXES = ("_shuffle", "_shuffle_fp16")
"""File stems that get global average pooling (ComfyUI's rule for the shuffle ControlNet)."""


# -- hint image helpers -----------------------------------------------------------------------------


def common_upscale(
    samples: Tensor, width: int, height: int, method: str = "nearest-exact", crop: str = "center"
) -> Tensor:
    """(B, C, H, W) -> (B, C, height, width); "center" first crops to the target's aspect ratio."""
    if crop == "center":
        old_w, old_h = samples.shape[-1], samples.shape[-2]
        old_aspect, new_aspect = old_w / old_h, width / height
        x = y = 0
        if old_aspect > new_aspect:
            x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
        elif old_aspect < new_aspect:
            y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
        samples = samples.narrow(-2, y, old_h - y * 2).narrow(-1, x, old_w - x * 2)
    return torch.nn.functional.interpolate(samples, size=(height, width), mode=method)


def broadcast_image_to(tensor: Tensor, target_batch_size: int, batched_number: int) -> Tensor:
    """Spread a hint batch over `batched_number` stacked cond batches (ComfyUI's rule): one image
    serves all; otherwise each cond batch gets the first images, repeated to its size."""
    if tensor.shape[0] == 1:
        return tensor
    per_batch = target_batch_size // batched_number
    tensor = tensor[:per_batch]
    if per_batch > tensor.shape[0]:
        reps = per_batch // tensor.shape[0]
        tensor = torch.cat([tensor] * reps + [tensor[: per_batch % tensor.shape[0]]], dim=0)
    if tensor.shape[0] == target_batch_size:
        return tensor
    return torch.cat([tensor] * batched_number, dim=0)


# -- where a control module runs ---------------------------------------------------------------------


class ModuleRunner:
    """A control network and where it runs: through the ModelManager when there is one, else moved
    to the input's device when used. Copies of a control share their runner (and weights)."""

    def __init__(self, module: nn.Module, manager: Any = None, name: str = "controlnet") -> None:
        self.module = module
        self.manager = manager
        self.record = manager.adopt(name, "controlnet", module) if manager is not None else None

    @property
    def dtype(self) -> torch.dtype:
        for p in self.module.parameters():
            return p.dtype
        return torch.float32

    @contextmanager
    def use(self, device: torch.device) -> Iterator[nn.Module]:
        if self.record is not None:
            with self.manager.use(self.record) as module:
                yield module
            return
        for p in self.module.parameters():
            if p.device != device:
                self.module.to(device)
            break
        yield self.module


# -- the control objects ----------------------------------------------------------------------------


class ControlBase:
    """Hint, strength, timestep window and chaining, shared by every kind of control."""

    def __init__(self) -> None:
        self.cond_hint_original: Tensor | None = None
        self.cond_hint: Tensor | None = None
        self.strength = 1.0
        self.timestep_percent_range: tuple[float, float] = (0.0, 1.0)
        self.timestep_range: tuple[float, float] | None = None
        self.previous_controlnet: Any = None
        self.compression_ratio = 8
        self.upscale_algorithm = "nearest-exact"
        self.global_average_pooling = False
        self.latent_format: Any = None  # set by latent-space controls (none of the SD ones)
        self.vae: Any = None
        self.extra_args: dict[str, Any] = {}

    def __repr__(self) -> str:
        chain = len(self._chain())
        return f"{type(self).__name__}(strength={self.strength}, range={self.timestep_percent_range}, chain={chain})"

    # -- configuration (ComfyUI's API) ------------------------------------------------------------

    def set_cond_hint(
        self,
        cond_hint: Tensor,
        strength: float = 1.0,
        timestep_percent_range: tuple[float, float] = (0.0, 1.0),
        vae: Any = None,
        extra_concat: Sequence[Tensor] | None = None,
    ) -> ControlBase:
        """cond_hint: (B, C, H, W) pixels 0..1. `vae` is kept only by controls that work on
        latents (ComfyUI ignores it for SD ControlNets, so does Loom)."""
        if not isinstance(cond_hint, Tensor) or cond_hint.ndim != 4:
            shape = tuple(cond_hint.shape) if isinstance(cond_hint, Tensor) else type(cond_hint).__name__
            raise EngineError(f"a control hint must be an image batch [B, C, H, W]; got {shape}")
        self.cond_hint_original = cond_hint
        self.strength = float(strength)
        self.timestep_percent_range = (float(timestep_percent_range[0]), float(timestep_percent_range[1]))
        if self.latent_format is not None:
            self.vae = vae
        return self

    def set_previous_controlnet(self, controlnet: Any) -> ControlBase:
        self.previous_controlnet = controlnet
        return self

    def set_extra_arg(self, argument: str, value: Any = None) -> None:
        self.extra_args[argument] = value

    def copy(self) -> ControlBase:
        """A new control sharing the network, with this one's settings and no chain."""
        other = copy.copy(self)
        other.cond_hint = None
        other.timestep_range = None
        other.previous_controlnet = None
        other.extra_args = dict(self.extra_args)
        return other

    def _chain(self) -> list[Any]:
        """This control and the ones it is stacked on, newest first (a loop: chains can be long)."""
        chain, seen, node = [], set(), self
        while node is not None and id(node) not in seen:
            chain.append(node)
            seen.add(id(node))
            node = node.previous_controlnet if isinstance(node, ControlBase) else None
        return chain

    # -- sampling lifecycle -----------------------------------------------------------------------

    def pre_run(self, model: Any, percent_to_timestep_function: Callable[[float], float]) -> None:
        """Once per sampling run, for the whole chain: sigma window, model-dependent state."""
        for control in self._chain():
            if isinstance(control, ControlBase):
                control._pre_run_one(model, percent_to_timestep_function)
            elif hasattr(control, "pre_run"):  # a foreign control ends the chain and handles its own
                control.pre_run(model, percent_to_timestep_function)

    def _pre_run_one(self, model: Any, percent_to_sigma: Callable[[float], float]) -> None:
        start, end = self.timestep_percent_range
        self.timestep_range = (percent_to_sigma(start), percent_to_sigma(end))
        self.cond_hint = None  # recomputed on the run's device

    def cleanup(self) -> None:
        for control in self._chain():
            if isinstance(control, ControlBase):
                control._cleanup_one()
            elif hasattr(control, "cleanup"):
                control.cleanup()

    def _cleanup_one(self) -> None:
        self.cond_hint = None
        self.timestep_range = None

    def get_models(self) -> list[Any]:
        return []

    def inference_memory_requirements(self, dtype: torch.dtype) -> int:
        return 0

    # -- per evaluation ---------------------------------------------------------------------------

    def get_control(
        self, x_noisy: Tensor, t: Tensor, cond: Mapping[str, Any], batched_number: int, transformer_options: Any = None
    ) -> ControlDict | None:
        """The summed residuals of this control and its chain for one batched evaluation.

        x_noisy: (B, C, h, w) unscaled noisy latents; t: (B,) sigmas; cond: the batch's model
        inputs (c_crossattn, y ...); batched_number: how many cond lists are stacked in the batch."""
        chain = self._chain()
        merged: ControlDict | None = None
        last = chain[-1]
        if not isinstance(last, ControlBase):  # foreign controls compute their own chain
            merged = last.get_control(x_noisy, t, cond, batched_number, transformer_options)
            chain = chain[:-1]
        for control in reversed(chain):  # oldest first, as ComfyUI's recursion evaluates them
            if control._active(t):
                own, dtype = control._compute(x_noisy, t, cond, batched_number)
                merged = control.control_merge(own, merged, dtype)
        return merged

    def _active(self, t: Tensor) -> bool:
        if self.timestep_range is None:
            return True
        sigma = float(t.reshape(-1)[0])
        return not (sigma > self.timestep_range[0] or sigma < self.timestep_range[1])

    def _compute(
        self, x_noisy: Tensor, t: Tensor, cond: Mapping[str, Any], batched_number: int
    ) -> tuple[ControlDict, torch.dtype | None]:
        raise NotImplementedError

    def control_merge(
        self, control: Mapping[str, Sequence[Tensor | None]], control_prev: ControlDict | None, output_dtype: Any
    ) -> ControlDict:
        """Scale this control's residuals by the strength, then add the previous control's."""
        out: ControlDict = {name: [] for name in STAGES}
        for key, values in control.items():
            for x in values:
                if x is not None:
                    if self.global_average_pooling:
                        x = torch.mean(x, dim=(2, 3), keepdim=True).repeat(1, 1, x.shape[2], x.shape[3])
                    x = x * self.strength
                    if output_dtype is not None and x.dtype != output_dtype:
                        x = x.to(output_dtype)
                out.setdefault(key, []).append(x)
        if control_prev is not None:
            for key in STAGES:
                mine = out[key]
                for i, prev in enumerate(control_prev.get(key, [])):
                    if i >= len(mine):
                        mine.append(prev)
                    elif prev is not None:
                        mine[i] = prev if mine[i] is None else prev + mine[i]
        return out

    def _hint(self, x_noisy: Tensor, size: tuple[int, int], batched_number: int, dtype: torch.dtype) -> Tensor:
        """The hint at `size` (H, W) on x's device, cached per size, broadcast to x's batch."""
        if self.cond_hint_original is None:
            raise EngineError(f"{type(self).__name__} has no hint image (apply it with a ControlNetApply node)")
        hint = self.cond_hint
        if hint is None or tuple(hint.shape[2:]) != size:
            hint = common_upscale(self.cond_hint_original, size[1], size[0], self.upscale_algorithm, "center")
            hint = self._preprocess_hint(hint).to(device=x_noisy.device, dtype=dtype)
        if x_noisy.shape[0] != hint.shape[0]:
            hint = broadcast_image_to(hint, x_noisy.shape[0], batched_number)
        self.cond_hint = hint
        return hint

    def _preprocess_hint(self, hint: Tensor) -> Tensor:
        return hint


class ControlNet(ControlBase):
    """A ControlNet (original or diffusers weights; SD1.x, SD2.x, SDXL)."""

    def __init__(self, runner: ModuleRunner | None, *, global_average_pooling: bool = False) -> None:
        super().__init__()
        self.runner = runner
        self.global_average_pooling = global_average_pooling
        self.model_sampling_current: Any = None

    @property
    def control_model(self) -> nn.Module | None:
        return self.runner.module if self.runner is not None else None

    def _pre_run_one(self, model: Any, percent_to_sigma: Callable[[float], float]) -> None:
        super()._pre_run_one(model, percent_to_sigma)
        self.model_sampling_current = model.model_sampling

    def _cleanup_one(self) -> None:
        self.model_sampling_current = None
        super()._cleanup_one()

    def get_models(self) -> list[Any]:
        return [self.runner.record] if self.runner is not None and self.runner.record is not None else []

    def _compute(
        self, x_noisy: Tensor, t: Tensor, cond: Mapping[str, Any], batched_number: int
    ) -> tuple[ControlDict, torch.dtype | None]:
        ms = self.model_sampling_current
        if ms is None or self.runner is None:
            raise EngineError(f"{type(self).__name__} used before pre_run(model, ...) of a sampling run")
        net: ControlNetModel = self.runner.module  # type: ignore[assignment]
        dtype = self.runner.dtype
        size = (x_noisy.shape[2] * self.compression_ratio, x_noisy.shape[3] * self.compression_ratio)
        hint = self._hint(x_noisy, size, batched_number, dtype)
        context = cond.get("crossattn_controlnet", cond.get("c_crossattn"))
        _check_context(net, context)
        y = cond.get("y") if net.label_emb is not None else None
        timestep = ms.timestep(t)
        xc = ms.calculate_input(t, x_noisy)
        with self.runner.use(x_noisy.device) as module:
            dev = _device_of(module, x_noisy.device)
            out = module(
                xc.to(dev, dtype), hint.to(dev), timestep.to(dev, dtype), context.to(dev, dtype),
                y=None if y is None else y.to(dev, dtype), **self.extra_args,
            )  # fmt: skip
        if dev != x_noisy.device:
            out = {k: [v.to(x_noisy.device) for v in vs] for k, vs in out.items()}
        return out, None


def _device_of(module: nn.Module, default: torch.device) -> torch.device:
    for p in module.parameters():
        return p.device
    return default


def _check_context(net: ControlNetModel, context: Tensor | None) -> None:
    want = net.config.context_dim
    if context is None:
        raise EngineError("ControlNet needs the text conditioning (c_crossattn); this batch has none")
    if context.shape[-1] != want:
        raise EngineError(
            f"this ControlNet expects text conditioning of width {want}, the model's is {context.shape[-1]}: "
            "the ControlNet was made for another model family than the checkpoint"
        )


class ControlLora(ControlNet):
    """A Control-LoRA: hint block and zero convs in full, the encoder as low-rank deltas over the
    sampling model's own UNet weights. The network is assembled at pre_run from the model."""

    def __init__(self, control_weights: Mapping[str, Tensor], *, global_average_pooling: bool = False) -> None:
        super().__init__(None, global_average_pooling=global_average_pooling)
        self.control_weights = dict(control_weights)

    def copy(self) -> ControlLora:
        other = super().copy()
        other.runner = None
        return other  # type: ignore[return-value]

    def _pre_run_one(self, model: Any, percent_to_sigma: Callable[[float], float]) -> None:
        super()._pre_run_one(model, percent_to_sigma)
        loaded = getattr(model, "loaded", None)
        config = getattr(model, "unet_config", None)
        if not callable(loaded) or config is None:
            raise EngineError("a Control-LoRA needs a Loom MODEL (its UNet weights are the base it patches)")
        with loaded() as unet:
            net = build_control_lora(self.control_weights, unet.state_dict(), config, unet.dtype)
        self.runner = ModuleRunner(net)

    def _cleanup_one(self) -> None:
        self.runner = None
        super()._cleanup_one()


def build_control_lora(
    weights: Mapping[str, Tensor], unet_state: Mapping[str, Tensor], config: Any, dtype: torch.dtype
) -> ControlNetModel:
    """The ControlNet a Control-LoRA describes: each layer's weight is the UNet's plus up @ down;
    layers the file gives in full (hint block, zero convs, norms, biases) replace the UNet's."""
    hint_key = "input_hint_block.0.weight"
    if hint_key not in weights:
        raise ModelError(f"Control-LoRA has no hint block (no key {hint_key})")
    with torch.device("meta"):
        net = ControlNetModel(config, weights[hint_key].shape[1])
    expected = net.state_dict()
    device = next(iter(unet_state.values())).device if unet_state else torch.device("cpu")
    tensors: dict[str, Tensor] = {}
    for key in expected:
        source = weights.get(key, unet_state.get(key))
        if source is not None:
            tensors[key] = source.to(device, dtype)
    unknown = []
    for key in weights:
        base, _, part = key.rpartition(".")
        if part != "up" or key == cl.LORA_MARKER:
            continue
        target = f"{base}.weight"
        down = weights.get(f"{base}.down")
        if target not in tensors or down is None:
            unknown.append(key)
            continue
        up, down = weights[key].to(device, dtype), down.to(device, dtype)
        delta = torch.mm(up.flatten(start_dim=1), down.flatten(start_dim=1)).reshape(tensors[target].shape)
        tensors[target] = tensors[target] + delta
    stray = sorted(
        k for k in weights if k not in expected and k != cl.LORA_MARKER and k.rpartition(".")[2] not in ("up", "down")
    )
    if unknown or stray:
        raise ModelError(f"Control-LoRA does not fit the model's UNet: {(unknown + stray)[:6]}")
    loading.check_keys(expected, tensors, "Control-LoRA")
    net.load_state_dict(tensors, strict=True, assign=True)
    return net.requires_grad_(False).eval()


class T2IAdapter(ControlBase):
    """A T2I-Adapter: features from the hint alone, computed once per hint and reused."""

    def __init__(self, runner: ModuleRunner) -> None:
        super().__init__()
        self.runner = runner
        adapter = runner.module
        self.channels_in = int(adapter.input_channels)
        self.unshuffle_amount = int(adapter.unshuffle_amount)
        self.control_input: Mapping[str, list[Tensor | None]] | None = None

    @property
    def t2i_model(self) -> nn.Module:
        return self.runner.module

    def copy(self) -> T2IAdapter:
        other = super().copy()
        other.control_input = None  # type: ignore[attr-defined]
        return other  # type: ignore[return-value]

    def _pre_run_one(self, model: Any, percent_to_sigma: Callable[[float], float]) -> None:
        super()._pre_run_one(model, percent_to_sigma)
        self.control_input = None

    def _cleanup_one(self) -> None:
        self.control_input = None
        super()._cleanup_one()

    def get_models(self) -> list[Any]:
        return [self.runner.record] if self.runner.record is not None else []

    def _preprocess_hint(self, hint: Tensor) -> Tensor:
        if self.channels_in == 1 and hint.shape[1] > 1:  # a 1-channel adapter (sketch, depth)
            hint = torch.mean(hint, 1, keepdim=True)
        return hint

    def _compute(
        self, x_noisy: Tensor, t: Tensor, cond: Mapping[str, Any], batched_number: int
    ) -> tuple[ControlDict, torch.dtype | None]:
        # Sizes round up to the unshuffle factor, so the features line up with the latent's blocks.
        step = self.unshuffle_amount
        height = math.ceil(x_noisy.shape[2] * self.compression_ratio / step) * step
        width = math.ceil(x_noisy.shape[3] * self.compression_ratio / step) * step
        before = self.cond_hint
        hint = self._hint(x_noisy, (height, width), batched_number, torch.float32)
        if self.control_input is None or hint is not before:
            with self.runner.use(x_noisy.device) as adapter:
                dev = _device_of(adapter, x_noisy.device)
                features = adapter(hint.to(dev, self.runner.dtype))
            self.control_input = {
                k: [None if v is None else v.to(x_noisy.device) for v in vs] for k, vs in features.items()
            }
        return {k: list(vs) for k, vs in self.control_input.items()}, x_noisy.dtype


# -- loading ----------------------------------------------------------------------------------------


def _unet_state(model: Any) -> dict[str, Tensor] | None:
    loaded = getattr(model, "loaded", None)
    if not callable(loaded):
        return None
    with loaded() as unet:
        return dict(unet.state_dict())


def load_controlnet_state_dict(
    sd: Mapping[str, Tensor],
    *,
    manager: Any = None,
    model: Any = None,
    dtype: torch.dtype | None = None,
    name: str = "controlnet",
    global_average_pooling: bool = False,
) -> ControlBase:
    """A control from weights of any supported kind (controlnet_loading.detect_kind).

    manager: a ModelManager that places the network (and gives the ControlNet dtype: its UNet
    dtype); model: the MODEL a "diff" ControlNet is relative to (DiffControlNetLoader)."""
    kind = cl.detect_kind(sd)
    if dtype is None:
        policy = getattr(manager, "policy", None) if manager is not None else None
        dtype = getattr(policy, "unet_dtype", torch.float32)
    if kind == "control_lora":
        return ControlLora({k: sd[k] for k in sd}, global_average_pooling=global_average_pooling)
    if kind == "t2i_adapter":
        adapter = cl.build_t2i_adapter(cl.adapter_weights(sd), dtype=torch.float32)
        return T2IAdapter(ModuleRunner(adapter, manager, name))
    weights = cl.controlnet_weights(sd, kind)
    if kind == "controlnet" and cl.DIFFERENCE_MARKER in sd:
        unet_state = _unet_state(model) if model is not None else None
        if unet_state is None:
            log.warning("%s is a diff ControlNet but no model was given (use DiffControlNetLoader)", name)
        else:
            weights = cl.add_difference(weights, unet_state)
    net = cl.build_controlnet(weights, dtype=dtype)
    return ControlNet(ModuleRunner(net, manager, name), global_average_pooling=global_average_pooling)


def load_controlnet(
    path: str | Path,
    *,
    manager: Any = None,
    model: Any = None,
    dtype: torch.dtype | None = None,
    global_average_pooling: bool | None = None,
) -> ControlBase:
    """ControlNetLoader / DiffControlNetLoader: a control from a file in models/controlnet."""
    path = Path(path)
    if global_average_pooling is None:
        global_average_pooling = os.path.splitext(path.name)[0].endswith(SHUFFLE_SUFFIXES)
    sd = cl.read_weights(path)
    try:
        return load_controlnet_state_dict(
            sd, manager=manager, model=model, dtype=dtype, name=path.name, global_average_pooling=global_average_pooling
        )
    except ModelError as exc:
        raise ModelError(f"{path.name}: {exc}") from exc
    finally:
        close = getattr(sd, "close", None)
        if callable(close):
            close()


__all__ = [
    "ControlBase",
    "ControlLora",
    "ControlNet",
    "ModuleRunner",
    "T2IAdapter",
    "broadcast_image_to",
    "build_control_lora",
    "common_upscale",
    "load_controlnet",
    "load_controlnet_state_dict",
]
