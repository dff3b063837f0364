"""Upscale models (UPSCALE_MODEL): detect the architecture from a state dict, build, load strictly.

Supported (written from the papers and the original key layouts; spandrel is not used):
- ESRGAN / Real-ESRGAN RRDBNet in the old-arch (`model.N`), new-arch (`RRDB_trunk`) and BasicSR
  (`body.N.rdbK`) layouts, x1 / x2 pixel-unshuffle variants included (rrdbnet.py);
- Real-ESRGAN SRVGGNetCompact (srvgg.py);
- SwinIR, all four reconstruction heads (swinir.py).

Every hyper-parameter (scale, features, blocks, channels, window ...) is read from the tensor
shapes. Files are `.safetensors` or torch pickles read with `weights_only=True` (no code runs);
common wrappers (`params_ema`, `params`, `state_dict`, ...) and prefixes (`module.`, `netG.`)
are removed first. Exactly one architecture must recognise the keys, and loading is strict:
missing, unexpected or misshapen weights raise a ModelError that names them.

`UpscaleModel` is what the nodes pass around. It follows the shape of the object ComfyUI's
nodes receive (spandrel's ImageModelDescriptor): `.model`, `.scale`, `.input_channels`,
`.output_channels`, `.to()`, and calling it on a (B, C, H, W) 0..1 tensor returns the upscaled
tensor clamped to 0..1, so custom nodes written against ComfyUI keep working.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from core.errors import ModelError
from diffusion.upscale import rrdbnet, srvgg, swinir
from diffusion.upscale.tiling import DEFAULT_OVERLAP, DEFAULT_TILE, Check, Progress, upscale_image

log = logging.getLogger(__name__)

WRAPPER_KEYS = ("model_state_dict", "state_dict", "params_ema", "params-ema", "params", "model", "net")
"""Training tools nest the weights under one of these; the first present (as a mapping) is used."""
COMMON_PREFIXES = ("module.", "netG.")
"""Prefixes (DataParallel, GAN generators) removed when every key has them."""
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")


class ArchConfig(Protocol):
    """What each architecture's `detect` returns: hyper-parameters plus how to build and load."""

    name: str

    @property
    def scale(self) -> int: ...

    @property
    def in_channels(self) -> int: ...

    @property
    def out_channels(self) -> int: ...

    def describe(self) -> str: ...

    def build(self) -> nn.Module: ...

    def rename(self, key: str) -> str | None: ...


ARCHITECTURES: tuple[tuple[str, Callable[[Mapping[str, Any]], ArchConfig | None]], ...] = (
    ("ESRGAN", rrdbnet.detect),
    ("SRVGGNetCompact", srvgg.detect),
    ("SwinIR", swinir.detect),
)


# -- state dicts ----------------------------------------------------------------------------------


def canonical_state_dict(sd: Mapping[str, Any]) -> dict[str, Tensor]:
    """The tensors of `sd` with wrappers and common prefixes removed (see the module doc)."""
    for key in WRAPPER_KEYS:
        inner = sd.get(key)
        if isinstance(inner, Mapping):
            sd = inner
            break
    tensors = {k: v for k, v in sd.items() if isinstance(k, str) and isinstance(v, Tensor)}
    for prefix in COMMON_PREFIXES:
        if tensors and all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    return tensors


def _key_summary(keys: Iterable[str], limit: int = 8) -> str:
    """'conv_first.*, body.*, ...' : the distinct leading names, enough to recognise a layout."""
    heads: list[str] = []
    for key in keys:
        head = key.split(".", 1)[0] + (".*" if "." in key else "")
        if head not in heads:
            heads.append(head)
    shown = ", ".join(heads[:limit])
    return shown + (f" ... ({len(heads)} in all)" if len(heads) > limit else "") if heads else "no tensors"


def detect(sd: Mapping[str, Any]) -> ArchConfig:
    """The one architecture whose layout the state dict has, with its hyper-parameters.

    ModelError when none matches (naming the keys seen) or the file is malformed for its kind."""
    sd = canonical_state_dict(sd)
    found = [(name, config) for name, probe in ARCHITECTURES if (config := probe(sd)) is not None]
    if not found:
        supported = ", ".join(name for name, _ in ARCHITECTURES)
        raise ModelError(
            f"unknown upscale model layout (supported: {supported}, incl. Real-ESRGAN); saw keys {_key_summary(sd)}"
        )
    if len(found) > 1:
        raise ModelError(f"upscale model keys match several architectures: {', '.join(n for n, _ in found)}")
    return found[0][1]


def _weights_for(config: ArchConfig, sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    weights: dict[str, Tensor] = {}
    for key, value in sd.items():
        target = config.rename(key)
        if target is not None:
            weights[target] = value
    return weights


def _check_keys(expected: Mapping[str, Tensor], weights: Mapping[str, Tensor], what: str) -> None:
    missing = sorted(k for k in expected if k not in weights)
    unexpected = sorted(k for k in weights if k not in expected)
    wrong = [
        f"{k} {list(weights[k].shape)} (model: {list(expected[k].shape)})"
        for k in sorted(expected)
        if k in weights and weights[k].shape != expected[k].shape
    ]
    problems = [
        f"{label}: {', '.join(keys[:6])}{f' ... ({len(keys)} in all)' if len(keys) > 6 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        if keys
    ]
    if problems:
        raise ModelError(f"{what}: the weights do not fit the detected architecture ({'; '.join(problems)})")


def build_model(sd: Mapping[str, Any], name: str = "upscale model") -> UpscaleModel:
    """Detect, build (no random init: on the meta device) and load `sd` strictly, in float32."""
    sd = canonical_state_dict(sd)
    config = detect(sd)
    weights = _weights_for(config, sd)
    with torch.device("meta"):
        module = config.build()
    _check_keys(module.state_dict(), weights, f"{name} ({config.describe()})")
    # Upscalers are small; float32 everywhere matches ComfyUI (spandrel loads them in float32).
    tensors = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in weights.items()}
    module.load_state_dict(tensors, strict=True, assign=True)
    module.requires_grad_(False).eval()
    return UpscaleModel(module, config, name)


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """The raw contents of a weights file (safetensors, or a pickle read without running code)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"upscale model file not found: {path}")
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError) as exc:
            raise ModelError(f"cannot read '{path.name}' as safetensors: {exc}") from exc
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelError(
            f"refused to load '{path.name}': it is a pickle that would run code to load (only plain "
            f"tensors are accepted; convert it to .safetensors). Detail: {str(exc).splitlines()[0]}"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
        raise ModelError(f"cannot read '{path.name}' as a torch checkpoint: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ModelError(f"'{path.name}' holds a {type(data).__name__}, not a state dict of tensors")
    return dict(data)


def load_upscale_model(path: str | Path) -> UpscaleModel:
    """UpscaleModelLoader's work: read, detect, build and strictly load one file."""
    started = time.perf_counter()
    name = Path(path).name
    try:
        model = build_model(read_state_dict(path), name)
    except ModelError as exc:
        if name in str(exc):
            raise
        raise ModelError(f"'{name}': {exc}") from exc
    log.info("loaded upscale model %s: %s in %.2f s", name, model.config.describe(), time.perf_counter() - started)
    return model


# -- the UPSCALE_MODEL value ----------------------------------------------------------------------


class UpscaleModel:
    """A loaded upscaler (UPSCALE_MODEL). Optionally placed by a ModelManager (`manage`)."""

    def __init__(self, module: nn.Module, config: ArchConfig, name: str = "upscale model") -> None:
        self._module = module
        self.config = config
        self.name = name
        self.architecture = config.name
        self.scale = config.scale
        self.input_channels = config.in_channels
        self.output_channels = config.out_channels
        self._manager: Any = None
        self._record: Any = None

    def __repr__(self) -> str:
        return f"UpscaleModel({self.name!r}, {self.config.describe()})"

    @property
    def model(self) -> nn.Module:
        return self._module

    @property
    def device(self) -> torch.device:
        return next(self._module.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self._module.parameters()).dtype

    @property
    def size_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._module.state_dict().values())

    def to(self, *args: Any, **kwargs: Any) -> UpscaleModel:
        self._module.to(*args, **kwargs)
        return self

    def eval(self) -> UpscaleModel:
        self._module.eval()
        return self

    def manage(self, manager: Any) -> None:
        """Let `manager` (diffusion.memory.ModelManager) place the weights from now on."""
        if self._record is None:
            self._record = manager.adopt(f"{self.name}:upscale", "upscale", self._module)
            self._manager = manager

    @contextmanager
    def on_device(self, extra_memory: int = 0) -> Iterator[torch.device]:
        """The device to run on, for a block of work: the manager's compute device (making room
        for `extra_memory` bytes of activations) when managed, else wherever the weights are."""
        if self._record is None:
            yield self.device
            return
        with self._manager.use(self._record, extra_memory=extra_memory):
            yield self._record.load_device

    @torch.no_grad()
    def __call__(self, image: Tensor) -> Tensor:
        """(B, C, H, W) in 0..1 -> (B, C_out, H*scale, W*scale) in 0..1, dtype and device of the input."""
        if image.ndim != 4:
            raise ValueError(f"upscale model input must be (B, C, H, W), got shape {tuple(image.shape)}")
        out = self._module(image.to(self.device, self.dtype))
        return out.clamp_(0.0, 1.0).to(image.device, image.dtype)

    def memory_estimate(self, image: Tensor) -> int:
        """Activation bytes for one run on 512 px tiles (ComfyUI's rule of thumb) plus the image."""
        per_tile = 512 * 512 * 3 * image.element_size() * max(self.scale, 1.0) * 384.0
        return int(per_tile + image.nelement() * image.element_size())

    def upscale_image(
        self,
        image: Tensor,
        *,
        tile: int = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
        progress: Progress | None = None,
        check: Check | None = None,
    ) -> Tensor:
        """IMAGE (B, H, W, C) 0..1 -> IMAGE (B, H*scale, W*scale, 3 or C_out) 0..1, float32 on the CPU;
        tiled, with the tile halved on out-of-memory errors (see tiling.upscale_image)."""
        pixels = match_channels(image, self.input_channels)
        with self.on_device(self.memory_estimate(pixels)) as device:
            return upscale_image(
                self,
                pixels,
                scale=self.scale,
                out_channels=self.output_channels,
                device=device,
                tile=tile,
                overlap=overlap,
                progress=progress,
                check=check,
            )


_LUMA = (0.299, 0.587, 0.114)


def match_channels(image: Tensor, wanted: int) -> Tensor:
    """IMAGE (B, H, W, C) with the channel count a model takes: alpha (and anything past the
    model's channels) is dropped, RGB becomes luma (BT.601) for one-channel models, and a
    one-channel image is repeated for colour models."""
    if image.ndim != 4:
        raise ValueError(f"IMAGE must be (B, H, W, C), got shape {tuple(image.shape)}")
    have = image.shape[-1]
    if have == wanted:
        return image
    if wanted == 1 and have >= 3:
        weights = torch.tensor(_LUMA, dtype=image.dtype, device=image.device)
        return (image[..., :3] * weights).sum(-1, keepdim=True)
    if have > wanted:
        return image[..., :wanted]
    if have == 1:
        return image.expand(-1, -1, -1, wanted)
    raise ValueError(f"the upscale model takes {wanted} channels but the image has {have}")


__all__ = [
    "ARCHITECTURES",
    "ArchConfig",
    "UpscaleModel",
    "build_model",
    "canonical_state_dict",
    "detect",
    "load_upscale_model",
    "match_channels",
    "read_state_dict",
]
