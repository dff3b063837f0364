"""Running an image model on overlapping tiles, as ComfyUI's ImageUpscaleWithModel does.

Tiling (ComfyUI's `tiled_scale`): along each axis longer than the tile, tiles start every
`tile - overlap` pixels from 0 while the start is below `size - overlap`; a start is clamped to
`size - overlap` and a tile to the image, so the last one may be short. Each upscaled tile is
weighted by a mask that ramps linearly over `overlap * scale` pixels at each of its edges
((t + 1) / feather for the t-th pixel in), and the output is the weighted sum divided by the
summed weights. An image that fits in one tile is run whole. The result is assembled on the
CPU, so only one tile's activations live on the GPU.

`upscale_image` is the node's whole job: IMAGE [B, H, W, C] in, tiles of 512 px overlapping by
32, the tile size halved on out-of-memory errors down to 128, IMAGE [B, H*s, W*s, C] clamped to
0..1 out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""progress(done, total): called after each tile; may raise to interrupt."""
Check = Callable[[], None]
"""Called before each tile; raises to stop (core.errors.Interrupted)."""

DEFAULT_TILE = 512
DEFAULT_OVERLAP = 32
MIN_TILE = 128


def pad_to_multiple(x: Tensor, multiple: int, minimum: int = 0) -> Tensor:
    """Pad the bottom / right of (B, C, H, W) to multiples of `multiple` (and at least `minimum`)
    by reflection, as the reference implementations do; replicate where the image is too small
    to reflect (a pad as large as the side)."""
    height, width = x.shape[-2:]
    pad_h = -max(height, minimum) % multiple + max(minimum - height, 0)
    pad_w = -max(width, minimum) % multiple + max(minimum - width, 0)
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Where tiles begin along one axis of `size` pixels (ComfyUI's positions, clamped)."""
    if size <= tile:
        return [0]
    if tile <= overlap:
        raise ValueError(f"tile size {tile} must be larger than the overlap {overlap}")
    return [max(0, min(size - overlap, start)) for start in range(0, size - overlap, tile - overlap)]


def tile_count(height: int, width: int, tile: int, overlap: int) -> int:
    """Tiles per image (what progress counts)."""
    return len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))


def _feather_mask(shape: torch.Size, feather: int) -> Tensor:
    """Ones with linear ramps over `feather` pixels at every H / W edge (skipped where the tile
    is not longer than the ramp, as in ComfyUI)."""
    mask = torch.ones(shape)
    for dim in (2, 3):
        length = shape[dim]
        if feather <= 0 or feather >= length:
            continue
        ramp = torch.arange(1, feather + 1, dtype=torch.float32) / feather
        view = [1, 1, 1, 1]
        view[dim] = feather
        mask.narrow(dim, 0, feather).mul_(ramp.view(view))
        mask.narrow(dim, length - feather, feather).mul_(ramp.flip(0).view(view))
    return mask


def tiled_scale(
    x: Tensor,
    function: Callable[[Tensor], Tensor],
    *,
    scale: int,
    out_channels: int,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    progress: Progress | None = None,
    check: Check | None = None,
) -> Tensor:
    """x: (B, C, H, W) on any device -> (B, out_channels, H*scale, W*scale) float32 on the CPU.

    `function` maps a (1, C, h, w) tile to (1, out_channels, h*scale, w*scale)."""
    batch, _, height, width = x.shape
    rows, cols = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    total, done = batch * len(rows) * len(cols), 0
    output = torch.empty((batch, out_channels, height * scale, width * scale))
    for b in range(batch):
        item = x[b : b + 1]
        if height <= tile and width <= tile:
            if check is not None:
                check()
            output[b : b + 1] = function(item).float().cpu()
            done += 1
            if progress is not None:
                progress(done, total)
            continue
        out = torch.zeros((1, out_channels, height * scale, width * scale))
        weight = torch.zeros_like(out)
        for top in rows:
            for left in cols:
                if check is not None:
                    check()
                piece = item[:, :, top : top + tile, left : left + tile]
                result = function(piece).float().cpu()
                mask = _feather_mask(result.shape, round(overlap * scale))
                region = (slice(None), slice(None), slice(top * scale, top * scale + result.shape[2]),
                          slice(left * scale, left * scale + result.shape[3]))  # fmt: skip
                out[region] += result * mask
                weight[region] += mask
                done += 1
                if progress is not None:
                    progress(done, total)
        output[b : b + 1] = out / weight
    return output


def _oom_errors() -> tuple[type[BaseException], ...]:
    error = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    return (error,) if error is not None else ()


def upscale_image(
    model: Callable[[Tensor], Tensor],
    image: Tensor,
    *,
    scale: int,
    out_channels: int,
    device: torch.device | None = None,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    min_tile: int = MIN_TILE,
    progress: Progress | None = None,
    check: Check | None = None,
) -> Tensor:
    """IMAGE (B, H, W, C) -> IMAGE (B, H*scale, W*scale, C') in 0..1, float32 on the CPU.

    `model` maps (1, C, h, w) tiles on `device` to upscaled tiles. On an out-of-memory error
    the whole image is redone with half the tile size, until the tile would drop below
    `min_tile` (then the error propagates). A one-channel result is repeated to RGB."""
    pixels = image.movedim(-1, 1)
    if device is not None:
        pixels = pixels.to(device)
    while True:
        try:
            result = tiled_scale(
                pixels,
                model,
                scale=scale,
                out_channels=out_channels,
                tile=tile,
                overlap=overlap,
                progress=progress,
                check=check,
            )
            break
        except _oom_errors():
            if tile // 2 < min_tile:
                raise
            tile //= 2
            log.warning("out of memory while upscaling; retrying with %d px tiles", tile)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    if result.shape[1] == 1:
        result = result.expand(-1, 3, -1, -1)
    return torch.clamp(result.movedim(1, -1), min=0.0, max=1.0).contiguous()


__all__ = [
    "DEFAULT_OVERLAP",
    "DEFAULT_TILE",
    "MIN_TILE",
    "Check",
    "Progress",
    "pad_to_multiple",
    "tile_count",
    "tiled_scale",
    "tile_starts",
    "upscale_image",
]
