"""Live sampler previews: the denoised estimate x0 -> a small PIL image (spec §2.4, ComfyUI's
latent_preview.py).

Two previewers:
- latent2rgb: a fixed (channels x 3) projection per latent format (+ a bias for SDXL), one pixel per
  latent pixel. Costs nothing, needs no file.
- TAESD: the tiny autoencoder's decoder (diffusion/taesd.py), 8x the latent's size, close to the
  real VAE's colours. Its weights are `models/vae_approx/<taesd_decoder_name>*` (taesd_decoder for
  SD1.x/SD2.x, taesdxl_decoder for SDXL; the first file whose name starts with it, as ComfyUI).

Method selection (`resolve_method` + `select_previewer`): the per-prompt `extra_data.preview_method`
overrides `--preview-method` unless it is "default"; "none" -> no previews; "auto" -> TAESD when the
family's decoder file is present, else latent2rgb; "taesd" -> TAESD, falling back to latent2rgb with
a warning when the file is missing or unusable; "latent2rgb" -> the projection.

Both previewers turn -1..1 values into bytes as ComfyUI's preview_to_image (clamp, (v + 1) * 127.5,
round) and shrink the image to fit `max_size` (--preview-size). Loaded decoders are kept (keyed by
file, its mtime and size, and device): a preview costs one decoder pass, not a file read.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from core.errors import ModelError
from diffusion.taesd import TAESDDecoder, load_decoder

log = logging.getLogger(__name__)

METHODS = ("none", "auto", "latent2rgb", "taesd")
"""--preview-method values; a prompt's extra_data.preview_method may also say "default"."""
DEFAULT = "default"
DECODER_FOLDER = "vae_approx"
MAX_CACHED_DECODERS = 4

Previewer = Callable[[Tensor], Any]
"""x0 (B, C, h, w) in model space -> a PIL image of the first item."""


# -- turning values into an image ----------------------------------------------------------------


def to_image(rgb: Tensor, max_size: int | None = None) -> Any:
    """(H, W, 3) values in about -1..1 -> an RGB PIL image no larger than max_size on either side."""
    from PIL import Image

    pixels = rgb.detach().float().cpu().clamp(-1.0, 1.0).add(1.0).mul(127.5).round().to(torch.uint8)
    image = Image.fromarray(pixels.numpy())
    if max_size and max(image.size) > max_size:
        image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    return image


# -- latent2rgb -----------------------------------------------------------------------------------


def latent2rgb_previewer(latent_format: Any, max_size: int | None = None) -> Previewer | None:
    """The projection previewer of a latent format; None when it has no rgb factors."""
    factors = getattr(latent_format, "latent_rgb_factors", None)
    if not factors:
        return None
    weights = torch.tensor(factors, dtype=torch.float32)  # (C, 3)
    bias_values = getattr(latent_format, "latent_rgb_factors_bias", None)
    bias = None if bias_values is None else torch.tensor(bias_values, dtype=torch.float32)

    def preview(x0: Tensor) -> Any:
        latent = x0[0].detach().float().cpu()  # (C, h, w)
        rgb = torch.einsum("chw,cr->hwr", latent[: weights.shape[0]], weights)
        if bias is not None:
            rgb = rgb + bias
        return to_image(rgb, max_size)

    return preview


# -- TAESD ----------------------------------------------------------------------------------------

_decoders: OrderedDict[tuple, TAESDDecoder] = OrderedDict()
_decoders_lock = threading.Lock()


def find_taesd_decoder(paths: Any, latent_format: Any) -> Path | None:
    """The family's decoder in the vae_approx folders (first listed name with its prefix), or None."""
    prefix = getattr(latent_format, "taesd_decoder_name", None)
    if not prefix or paths is None:
        return None
    try:
        names = paths.list(DECODER_FOLDER)
    except (OSError, ModelError) as exc:
        log.warning("cannot list %s: %s", DECODER_FOLDER, exc)
        return None
    for name in names:
        if name.startswith(prefix):  # names are relative to the folder, as ComfyUI matches them
            try:
                return Path(paths.resolve(DECODER_FOLDER, name))
            except ModelError as exc:
                log.warning("TAESD decoder %s: %s", name, exc)
    return None


def cached_decoder(path: str | Path, device: torch.device | str = "cpu") -> TAESDDecoder:
    """The decoder in `path` on `device`, loaded once per (file version, device)."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    key = (real, stat.st_mtime_ns, stat.st_size, str(torch.device(device)))
    with _decoders_lock:
        decoder = _decoders.get(key)
        if decoder is not None:
            _decoders.move_to_end(key)
            return decoder
    decoder = load_decoder(path).to(device)  # outside the lock: a file read
    with _decoders_lock:
        _decoders[key] = decoder
        while len(_decoders) > MAX_CACHED_DECODERS:
            _decoders.popitem(last=False)
    return decoder


def clear_decoder_cache() -> None:
    with _decoders_lock:
        _decoders.clear()


def taesd_previewer(decoder: TAESDDecoder, max_size: int | None = None) -> Previewer:
    """Decode the first item of x0 with TAESD (ComfyUI's TAESDPreviewerImpl)."""

    def preview(x0: Tensor) -> Any:
        with torch.no_grad():
            image = decoder.decode(x0[:1].detach())[0]  # (3, 8h, 8w), about -1..1
        return to_image(image.movedim(0, -1), max_size)

    return preview


# -- cost budget ----------------------------------------------------------------------------------

PREVIEW_SHARE = 0.04
"""The most of the sampling time previews may take between forced ones: 4 %, so that with the
forced preview of the last step a run stays under issue 8's 5 %."""


class BudgetedPreviewer:
    """A previewer that skips previews (returns None) while the time since the last one is short
    of its own cost / `share`, so previews take at most `share` of the sampling time however slow
    they are next to a step (TAESD at 512 px on a CPU costs a fifth of an SD1.5 step).
    `force=True` always previews (the last step's estimate is the image the user gets)."""

    def __init__(
        self, previewer: Previewer, share: float = PREVIEW_SHARE, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.previewer = previewer
        self.share = share
        self.clock = clock
        self.cost = 0.0
        self.ended = float("-inf")
        self.shown = 0
        self.skipped = 0

    def __call__(self, x0: Tensor, *, force: bool = False) -> Any:
        started = self.clock()
        if not force and started - self.ended < self.cost * (1.0 - self.share) / self.share:
            self.skipped += 1
            return None
        image = self.previewer(x0)
        self.ended = self.clock()
        self.cost = self.ended - started
        self.shown += 1
        return image


def budgeted(previewer: Previewer | None, share: float = PREVIEW_SHARE) -> BudgetedPreviewer | None:
    return None if previewer is None else BudgetedPreviewer(previewer, share)


# -- selection ------------------------------------------------------------------------------------


def resolve_method(configured: str | None, extra_data: Mapping[str, Any] | None = None) -> str:
    """The method for one prompt: extra_data.preview_method unless absent / "default" / unknown."""
    method = configured if configured in METHODS else "none"
    override = (extra_data or {}).get("preview_method")
    if override is None or override == DEFAULT:
        return method
    if override in METHODS:
        return str(override)
    log.warning("unknown preview_method %r in the prompt's extra_data; using %s", override, method)
    return method


def select_previewer(
    method: str,
    latent_format: Any,
    *,
    paths: Any = None,
    device: torch.device | str = "cpu",
    max_size: int | None = None,
) -> Previewer | None:
    """The previewer a resolved method gives for this latent format (None: no previews)."""
    if method not in ("auto", "taesd", "latent2rgb"):
        return None
    if method in ("auto", "taesd"):
        previewer = _taesd_for(method, latent_format, paths, device, max_size)
        if previewer is not None:
            return previewer
    return latent2rgb_previewer(latent_format, max_size)


def _taesd_for(method: str, latent_format: Any, paths: Any, device: Any, max_size: int | None) -> Previewer | None:
    name = getattr(latent_format, "taesd_decoder_name", None)
    path = find_taesd_decoder(paths, latent_format)
    if path is None:
        if method == "taesd":
            log.warning("TAESD previews enabled, but could not find models/%s/%s; using latent2rgb",
                        DECODER_FOLDER, name)  # fmt: skip
        return None
    try:
        decoder = cached_decoder(path, device)
    except (ModelError, OSError) as exc:
        log.warning("TAESD decoder %s cannot be used (%s); using latent2rgb previews", path.name, exc)
        return None
    expected = getattr(latent_format, "latent_channels", decoder.latent_channels)
    if decoder.latent_channels != expected:
        log.warning("TAESD decoder %s takes %d latent channels, the model has %d; using latent2rgb previews",
                    path.name, decoder.latent_channels, expected)  # fmt: skip
        return None
    return taesd_previewer(decoder, max_size)


__all__ = [
    "METHODS",
    "PREVIEW_SHARE",
    "BudgetedPreviewer",
    "budgeted",
    "Previewer",
    "cached_decoder",
    "clear_decoder_cache",
    "find_taesd_decoder",
    "latent2rgb_previewer",
    "resolve_method",
    "select_previewer",
    "taesd_previewer",
    "to_image",
]
