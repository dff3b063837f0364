"""Tensor helpers shared by the image and mask nodes (ComfyUI's comfy/utils.py and node_helpers.py).

`common_upscale` resizes channels-first batches exactly as ComfyUI does, so a workflow gives the
same pixels here: torch's interpolate for nearest-exact/bilinear/area/bicubic ("area" is adaptive
average pooling) and Pillow's LANCZOS per image for "lanczos", which goes through 8 bits like
ComfyUI. `composite` is ComfyUI's paste-with-mask used by ImageCompositeMasked and
LatentCompositeMasked.

torch, numpy and Pillow are imported inside the functions: the server imports node modules before
torch loads.
"""

from __future__ import annotations

import logging
import math
from typing import Any

log = logging.getLogger(__name__)

MAX_RESOLUTION = 16384
"""ComfyUI's nodes.MAX_RESOLUTION: the largest width/height a node input accepts."""

UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
"""ComfyUI's image upscale_method combo, in its order."""

CROP_METHODS = ("disabled", "center")

_TORCH_MODES = frozenset({"nearest", "nearest-exact", "bilinear", "area", "bicubic"})


def common_upscale(samples: Any, width: int, height: int, method: str, crop: str = "disabled") -> Any:
    """Resize `samples` [B, C, H, W] to height x width; crop="center" first cuts the middle to the
    target aspect ratio (comfy.utils.common_upscale)."""
    if getattr(samples, "ndim", None) != 4:
        raise ValueError(f"expected a [B, C, H, W] batch to resize, got shape {tuple(getattr(samples, 'shape', ()))}")
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise ValueError(f"cannot resize to {width}x{height}: the target size must be at least 1x1 pixels")
    if crop == "center":
        samples = _center_crop(samples, width, height)
    elif crop != "disabled":
        raise ValueError(f"unknown crop method {crop!r}; expected one of {CROP_METHODS}")
    if method == "lanczos":
        return lanczos(samples, width, height)
    if method == "bislerp":  # the latent nodes' slerp resize
        return bislerp(samples, width, height)
    if method not in _TORCH_MODES:
        raise ValueError(f"unknown upscale method {method!r}; expected one of {UPSCALE_METHODS}")
    import torch

    return torch.nn.functional.interpolate(samples, size=(height, width), mode=method)


def _slerp(a: Any, b: Any, ratio: Any) -> Any:
    """Spherical interpolation of rows of a and b (N, C) by ratio (N, 1); norms interpolate linearly."""
    import torch

    channels = a.shape[-1]
    a_norm = torch.norm(a, dim=-1, keepdim=True)
    b_norm = torch.norm(b, dim=-1, keepdim=True)
    a_unit = a / a_norm
    b_unit = b / b_norm
    a_unit[a_norm.expand(-1, channels) == 0.0] = 0.0
    b_unit[b_norm.expand(-1, channels) == 0.0] = 0.0
    dot = (a_unit * b_unit).sum(1)
    omega = torch.acos(dot)
    sin_omega = torch.sin(omega)
    r = ratio.squeeze(1)
    out = (torch.sin((1.0 - r) * omega) / sin_omega).unsqueeze(1) * a_unit
    out = out + (torch.sin(r * omega) / sin_omega).unsqueeze(1) * b_unit
    out *= (a_norm * (1.0 - ratio) + b_norm * ratio).expand(-1, channels)
    # (anti)parallel rows: slerp is undefined there; take a, or lerp for opposites, as ComfyUI does
    out[dot > 1 - 1e-5] = a[dot > 1 - 1e-5]
    out[dot < 1e-5 - 1] = (a * (1.0 - ratio) + b * ratio)[dot < 1e-5 - 1]
    return out


def _bilinear_indices(old: int, new: int, device: Any) -> tuple[Any, Any, Any]:
    """For each of `new` positions: (fraction, left index, right index) of bilinear sampling."""
    import torch

    coords = torch.arange(old, dtype=torch.float32, device=device).reshape((1, 1, 1, -1))
    left = torch.nn.functional.interpolate(coords, size=(1, new), mode="bilinear")
    ratios = left - left.floor()
    right = coords + 1
    right[:, :, :, -1] -= 1
    right = torch.nn.functional.interpolate(right, size=(1, new), mode="bilinear")
    return ratios, left.to(torch.int64), right.to(torch.int64)


def bislerp(samples: Any, width: int, height: int) -> Any:
    """Bilinear resize that slerps channel vectors instead of lerping them (keeps latent norms).
    samples: (N, C, H, W) -> (N, C, height, width)."""
    dtype = samples.dtype
    x = samples.float()
    n, c, h, w = x.shape
    ratios, left, right = _bilinear_indices(w, width, x.device)
    left, right = left.expand((n, c, h, -1)), right.expand((n, c, h, -1))
    ratios = ratios.expand((n, 1, h, -1)).movedim(1, -1).reshape((-1, 1))
    a = x.gather(-1, left).movedim(1, -1).reshape((-1, c))
    b = x.gather(-1, right).movedim(1, -1).reshape((-1, c))
    x = _slerp(a, b, ratios).reshape(n, h, width, c).movedim(-1, 1)
    ratios, top, bottom = _bilinear_indices(h, height, x.device)
    top = top.reshape((1, 1, -1, 1)).expand((n, c, -1, width))
    bottom = bottom.reshape((1, 1, -1, 1)).expand((n, c, -1, width))
    ratios = ratios.reshape((1, 1, -1, 1)).expand((n, 1, -1, width)).movedim(1, -1).reshape((-1, 1))
    a = x.gather(-2, top).movedim(1, -1).reshape((-1, c))
    b = x.gather(-2, bottom).movedim(1, -1).reshape((-1, c))
    return _slerp(a, b, ratios).reshape(n, height, width, c).movedim(-1, 1).to(dtype)


def center_crop_to_aspect(samples: Any, width: int, height: int) -> Any:
    """The centred part of samples (..., H, W) with the aspect ratio of width:height."""
    return _center_crop(samples, width, height)


def _center_crop(samples: Any, width: int, height: int) -> Any:
    old_height, old_width = int(samples.shape[-2]), int(samples.shape[-1])
    old_aspect = old_width / old_height
    new_aspect = width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_width - old_width * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_height - old_height * (old_aspect / new_aspect)) / 2)
    return samples.narrow(-2, y, old_height - y * 2).narrow(-1, x, old_width - x * 2)


def lanczos(samples: Any, width: int, height: int) -> Any:
    """Pillow's LANCZOS resize of each image of [B, C, H, W], through uint8 (truncated) as ComfyUI
    does. 1, 3 and 4 channels resize as L, RGB and RGBA (Pillow premultiplies RGBA's alpha); other
    channel counts resize one channel at a time."""
    import numpy as np
    import torch
    from PIL import Image

    channels = int(samples.shape[1])
    pixels = np.clip(255.0 * samples.detach().movedim(1, -1).cpu().float().numpy(), 0, 255).astype(np.uint8)
    results = []
    for image in pixels:
        if channels in (3, 4):
            planes = [image]
        else:  # one plane per channel: Pillow has no mode for 2 or 5+ channels of uint8
            planes = [image[..., c] for c in range(channels)]
        resized = [np.asarray(Image.fromarray(p).resize((width, height), Image.Resampling.LANCZOS)) for p in planes]
        results.append(resized[0] if channels in (3, 4) else np.stack(resized, axis=-1))
    out = torch.from_numpy(np.stack(results).astype(np.float32) / 255.0).movedim(-1, 1)
    return out.to(samples.device, samples.dtype)


def repeat_to_batch_size(tensor: Any, batch_size: int, dim: int = 0) -> Any:
    """Cut or cycle `tensor` along `dim` to `batch_size` entries (comfy.utils.repeat_to_batch_size)."""
    size = int(tensor.shape[dim])
    if size > batch_size:
        return tensor.narrow(dim, 0, batch_size)
    if size < batch_size:
        repeats = [1] * tensor.ndim
        repeats[dim] = math.ceil(batch_size / size)
        return tensor.repeat(repeats).narrow(dim, 0, batch_size)
    return tensor


def image_alpha_fix(destination: Any, source: Any) -> tuple[Any, Any]:
    """Give `source` the channel count of `destination`: drop its alpha, or add an opaque one."""
    import torch

    if destination.shape[-1] < source.shape[-1]:
        source = source[..., : destination.shape[-1]]
    elif destination.shape[-1] > source.shape[-1]:
        missing = int(destination.shape[-1] - source.shape[-1])
        source = torch.nn.functional.pad(source, (0, missing), value=1.0)
    return destination, source


def scale_image(image: Any, width: int, height: int, method: str, crop: str = "disabled") -> Any:
    """common_upscale for an IMAGE [B, H, W, C] (channels last in and out)."""
    return common_upscale(image.movedim(-1, 1), width, height, method, crop).movedim(1, -1)


def image_batch(image: Any, name: str = "image") -> Any:
    """`image` checked to be an IMAGE [B, H, W, C]; the error names the input otherwise."""
    if getattr(image, "ndim", None) != 4:
        raise ValueError(
            f"input '{name}' must be an IMAGE tensor [batch, height, width, channels], got {_describe(image)}"
        )
    return image


def mask_batch(mask: Any, name: str = "mask") -> Any:
    """`mask` as [B, H, W]: a single [H, W] mask (or [B, 1, H, W]) is accepted, as in ComfyUI."""
    ndim = getattr(mask, "ndim", None)
    if ndim is None or ndim < 2:
        raise ValueError(f"input '{name}' must be a MASK tensor [batch, height, width] or [height, width], "
                         f"got {_describe(mask)}")  # fmt: skip
    return mask.reshape((-1, mask.shape[-2], mask.shape[-1]))


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return f"shape {tuple(shape)}" if shape is not None else type(value).__name__


def composite(
    destination: Any,
    source: Any,
    x: int,
    y: int,
    mask: Any = None,
    multiplier: int = 8,
    resize_source: bool = False,
) -> Any:
    """Paste `source` [B, C, h, w] onto `destination` [B, C, H, W] (modified in place: pass a
    copy) at pixel (x, y); coordinates are divided by `multiplier` (8 for latents). The optional
    mask (any [.., h, w]) is resized bilinearly to the source and blends source over destination."""
    import torch

    interpolate = torch.nn.functional.interpolate
    source = source.to(destination.device)
    if resize_source:
        source = interpolate(source, size=(destination.shape[-2], destination.shape[-1]), mode="bilinear")
    source = repeat_to_batch_size(source, int(destination.shape[0]))
    # Negative offsets are not reachable through the inputs' min=0; clamping keeps slicing sane.
    x = max(0, min(int(x), int(destination.shape[-1]) * multiplier))
    y = max(0, min(int(y), int(destination.shape[-2]) * multiplier))
    left, top = x // multiplier, y // multiplier
    right, bottom = left + int(source.shape[-1]), top + int(source.shape[-2])
    if mask is None:
        mask = torch.ones_like(source)
    else:
        mask = mask.to(destination.device, dtype=source.dtype, copy=True)
        mask = interpolate(
            mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])), size=source.shape[-2:], mode="bilinear"
        )
        mask = repeat_to_batch_size(mask, int(source.shape[0]))
    visible_width = int(destination.shape[-1]) - left
    visible_height = int(destination.shape[-2]) - top
    mask = mask[..., :visible_height, :visible_width]
    source_portion = mask * source[..., :visible_height, :visible_width]
    destination_portion = (1.0 - mask) * destination[..., top:bottom, left:right]
    destination[..., top:bottom, left:right] = source_portion + destination_portion
    return destination


def gaussian_kernel(kernel_size: int, sigma: float, dtype: Any = None) -> Any:
    """ComfyUI's blur kernel: a Gaussian over [-1, 1]^2 (sigma in those units), summing to 1."""
    import torch

    axis = torch.linspace(-1, 1, kernel_size)
    grid_x, grid_y = torch.meshgrid(axis, axis, indexing="ij")
    distance = torch.sqrt(grid_x * grid_x + grid_y * grid_y)
    kernel = torch.exp(-(distance * distance) / (2.0 * sigma * sigma))
    return (kernel / kernel.sum()).to(dtype or torch.float32)


__all__ = [
    "CROP_METHODS",
    "MAX_RESOLUTION",
    "UPSCALE_METHODS",
    "bislerp",
    "center_crop_to_aspect",
    "common_upscale",
    "composite",
    "gaussian_kernel",
    "image_alpha_fix",
    "image_batch",
    "lanczos",
    "mask_batch",
    "repeat_to_batch_size",
    "scale_image",
]
