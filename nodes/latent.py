"""Latent nodes: EmptyLatentImage, upscaling, compositing, batching, transforms, noise masks
(spec §5.1, §5.4; ComfyUI's nodes.py and nodes_latent.py).

LATENT is a dict {"samples": (B, C, h, w), "noise_mask"?: ..., "batch_index"?: [...]}. Every node
returns a new dict (a shallow copy keeps the keys it does not touch, as ComfyUI's `.copy()` does)
and new tensors; inputs may be cached results that other nodes also read, so nothing is changed
in place. Resizing (`common_upscale`, `bislerp`) is shared with the image nodes in
nodes/image_ops_util.py. torch is imported inside the functions.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from nodes.api import Choice, Float, Input, Int, Node, NodeRuntime, NodeSpec, Output
from nodes.image_ops_util import bislerp, center_crop_to_aspect, common_upscale

log = logging.getLogger(__name__)

MAX_RESOLUTION = 16384
UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
CROP_METHODS = ("disabled", "center")

Latent = dict[str, Any]


def repeat_batch(t: Any, size: int) -> Any:
    """t repeated (or cut) along dim 0 to exactly `size` items."""
    if t.shape[0] == size:
        return t
    times = math.ceil(size / t.shape[0])
    return t.repeat((times,) + (1,) * (t.ndim - 1))[:size]


# -- nodes ---------------------------------------------------------------------------------------------


class EmptyLatentImage(Node):
    """Create a new batch of empty latent images to be denoised via sampling."""

    spec = NodeSpec(
        id="EmptyLatentImage",
        display_name="Empty Latent Image",
        category="latent",
        inputs=(
            Int("width", 512, min=16, max=MAX_RESOLUTION, step=8, tooltip="The width of the latent images in pixels."),
            Int(
                "height", 512, min=16, max=MAX_RESOLUTION, step=8, tooltip="The height of the latent images in pixels."
            ),
            Int("batch_size", 1, min=1, max=4096, tooltip="The number of latent images in the batch."),
        ),
        outputs=(Output("LATENT", tooltip="The empty latent image batch."),),
    )

    def run(self, ctx: NodeRuntime, width: int, height: int, batch_size: int = 1) -> tuple[Latent]:
        import torch

        return ({"samples": torch.zeros([batch_size, 4, height // 8, width // 8])},)


class LatentUpscale(Node):
    spec = NodeSpec(
        id="LatentUpscale",
        display_name="Upscale Latent",
        category="latent",
        inputs=(
            Input("samples", "LATENT"),
            Choice("upscale_method", UPSCALE_METHODS, legacy=True),
            Int("width", 512, min=0, max=MAX_RESOLUTION, step=8),
            Int("height", 512, min=0, max=MAX_RESOLUTION, step=8),
            Choice("crop", CROP_METHODS, legacy=True),
        ),
        outputs=(Output("LATENT"),),
    )

    def run(self, ctx: NodeRuntime, samples: Latent, upscale_method: str, width: int, height: int,
            crop: str) -> tuple[Latent]:  # fmt: skip
        if width == 0 and height == 0:
            return (samples,)
        s = samples["samples"]
        # 0 keeps the aspect ratio from the other side; sizes below 64 px are raised to 64.
        if width == 0:
            height = max(64, height)
            width = max(64, round(s.shape[-1] * height / s.shape[-2]))
        elif height == 0:
            width = max(64, width)
            height = max(64, round(s.shape[-2] * width / s.shape[-1]))
        else:
            width, height = max(64, width), max(64, height)
        return ({**samples, "samples": common_upscale(s, width // 8, height // 8, upscale_method, crop)},)


class LatentUpscaleBy(Node):
    spec = NodeSpec(
        id="LatentUpscaleBy",
        display_name="Upscale Latent By",
        category="latent",
        inputs=(
            Input("samples", "LATENT"),
            Choice("upscale_method", UPSCALE_METHODS, legacy=True),
            Float("scale_by", 1.5, min=0.01, max=8.0, step=0.01),
        ),
        outputs=(Output("LATENT"),),
    )

    def run(self, ctx: NodeRuntime, samples: Latent, upscale_method: str, scale_by: float) -> tuple[Latent]:
        s = samples["samples"]
        width, height = round(s.shape[-1] * scale_by), round(s.shape[-2] * scale_by)
        return ({**samples, "samples": common_upscale(s, width, height, upscale_method, "disabled")},)


class LatentComposite(Node):
    spec = NodeSpec(
        id="LatentComposite",
        display_name="Latent Composite",
        category="latent",
        inputs=(
            Input("samples_to", "LATENT"),
            Input("samples_from", "LATENT"),
            Int("x", 0, min=0, max=MAX_RESOLUTION, step=8),
            Int("y", 0, min=0, max=MAX_RESOLUTION, step=8),
            Int("feather", 0, min=0, max=MAX_RESOLUTION, step=8),
        ),
        outputs=(Output("LATENT"),),
    )

    def run(self, ctx: NodeRuntime, samples_to: Latent, samples_from: Latent, x: int, y: int,
            feather: int = 0) -> tuple[Latent]:  # fmt: skip
        import torch

        x, y, feather = x // 8, y // 8, feather // 8
        to = samples_to["samples"]
        out = to.clone()
        source = samples_from["samples"][:, :, : to.shape[2] - y, : to.shape[3] - x]
        h, w = source.shape[2], source.shape[3]
        if feather == 0:
            out[:, :, y : y + h, x : x + w] = source
            return ({**samples_to, "samples": out},)
        # Feathered edges ramp linearly over `feather` latent pixels, except along the target's border.
        mask = torch.ones_like(source)
        for t in range(feather):
            weight = (t + 1) / feather
            if y != 0:
                mask[:, :, t : t + 1, :] *= weight
            if y + h < to.shape[2]:
                mask[:, :, h - 1 - t : h - t, :] *= weight
            if x != 0:
                mask[:, :, :, t : t + 1] *= weight
            if x + w < to.shape[3]:
                mask[:, :, :, w - 1 - t : w - t] *= weight
        region = out[:, :, y : y + h, x : x + w]
        out[:, :, y : y + h, x : x + w] = source * mask + region * (1.0 - mask)
        return ({**samples_to, "samples": out},)


class LatentBlend(Node):
    spec = NodeSpec(
        id="LatentBlend",
        display_name="Latent Blend",
        category="_for_testing",
        inputs=(
            Input("samples1", "LATENT"),
            Input("samples2", "LATENT"),
            Float("blend_factor", 0.5, min=0, max=1, step=0.01),
        ),
        outputs=(Output("LATENT"),),
    )

    def run(self, ctx: NodeRuntime, samples1: Latent, samples2: Latent, blend_factor: float) -> tuple[Latent]:
        s1, s2 = samples1["samples"], samples2["samples"]
        if s1.shape != s2.shape:
            s2 = common_upscale(s2, s1.shape[3], s1.shape[2], "bicubic", "center")
        return ({**samples1, "samples": s1 * blend_factor + s2 * (1 - blend_factor)},)


class LatentFromBatch(Node):
    spec = NodeSpec(
        id="LatentFromBatch",
        display_name="Latent From Batch",
        category="latent/batch",
        inputs=(Input("samples", "LATENT"), Int("batch_index", 0, min=0, max=63), Int("length", 1, min=1, max=64)),
        outputs=(Output("LATENT"),),
    )

    def run(self, ctx: NodeRuntime, samples: Latent, batch_index: int, length: int) -> tuple[Latent]:
        s_in = samples["samples"]
        batch = s_in.shape[0]
        if batch_index < 0:
            batch_index += batch
        batch_index = max(0, min(batch - 1, batch_index))
        length = min(batch - batch_index, length)
        out = {**samples, "samples": s_in[batch_index : batch_index + length].clone()}
        if "noise_mask" in samples:
            masks = samples["noise_mask"]
            if masks.shape[0] == 1:
                out["noise_mask"] = masks.clone()
            else:
                out["noise_mask"] = repeat_batch(masks, batch)[batch_index : batch_index + length].clone()
        # batch_index keeps each picked item's noise identical to what it got in the full batch.
        if "batch_index" in samples:
            out["batch_index"] = list(samples["batch_index"][batch_index : batch_index + length])
        else:
            out["batch_index"] = list(range(batch_index, batch_index + length))
        return (out,)


class RepeatLatentBatch(Node):
    spec = NodeSpec(
        id="RepeatLatentBatch",
        display_name="Repeat Latent Batch",
        category="latent/batch",
        inputs=(Input("samples", "LATENT"), Int("amount", 1, min=1, max=64)),
        outputs=(Output("LATENT"),),
    )

    def run(self, ctx: NodeRuntime, samples: Latent, amount: int) -> tuple[Latent]:
        s_in = samples["samples"]
        out = {**samples, "samples": s_in.repeat((amount,) + (1,) * (s_in.ndim - 1))}
        mask = samples.get("noise_mask")
        if mask is not None and mask.shape[0] > 1:  # a single mask already applies to every item
            mask = repeat_batch(mask, s_in.shape[0])
            out["noise_mask"] = mask.repeat((amount,) + (1,) * (mask.ndim - 1))
        if "batch_index" in samples:
            index = list(samples["batch_index"])
            offset = max(index) - min(index) + 1
            out["batch_index"] = index + [i + k * offset for k in range(1, amount) for i in index]
        return (out,)


class LatentBatch(Node):
    spec = NodeSpec(
        id="LatentBatch",
        category="latent/batch",
        deprecated=True,
        inputs=(Input("samples1", "LATENT"), Input("samples2", "LATENT")),
        outputs=(Output("LATENT"),),
    )

    def run(self, ctx: NodeRuntime, samples1: Latent, samples2: Latent) -> tuple[Latent]:
        import torch

        s1, s2 = samples1["samples"], samples2["samples"]
        if s2.shape[1:] != s1.shape[1:]:
            s2 = common_upscale(s2, s1.shape[-1], s1.shape[-2], "bilinear", "center")
        index1 = samples1.get("batch_index", list(range(s1.shape[0])))
        index2 = samples2.get("batch_index", list(range(s2.shape[0])))
        return ({**samples1, "samples": torch.cat((s1, s2), dim=0), "batch_index": list(index1) + list(index2)},)


class LatentCrop(Node):
    spec = NodeSpec(
        id="LatentCrop",
        display_name="Crop Latent",
        category="latent/transform",
        inputs=(
            Input("samples", "LATENT"),
            Int("width", 512, min=64, max=MAX_RESOLUTION, step=8),
            Int("height", 512, min=64, max=MAX_RESOLUTION, step=8),
            Int("x", 0, min=0, max=MAX_RESOLUTION, step=8),
            Int("y", 0, min=0, max=MAX_RESOLUTION, step=8),
        ),
        outputs=(Output("LATENT"),),
    )

    def run(self, ctx: NodeRuntime, samples: Latent, width: int, height: int, x: int, y: int) -> tuple[Latent]:
        s = samples["samples"]
        # The crop keeps at least 8 latent pixels (64 px) after its origin, as ComfyUI does.
        x = min(x // 8, s.shape[3] - 8)
        y = min(y // 8, s.shape[2] - 8)
        return ({**samples, "samples": s[:, :, y : y + height // 8, x : x + width // 8]},)


class LatentFlip(Node):
    spec = NodeSpec(
        id="LatentFlip",
        display_name="Flip Latent",
        category="latent/transform",
        inputs=(
            Input("samples", "LATENT"),
            Choice("flip_method", ("x-axis: vertically", "y-axis: horizontally"), legacy=True),
        ),
        outputs=(Output("LATENT"),),
    )

    def run(self, ctx: NodeRuntime, samples: Latent, flip_method: str) -> tuple[Latent]:
        import torch

        dims = [2] if flip_method.startswith("x") else [3]
        return ({**samples, "samples": torch.flip(samples["samples"], dims=dims)},)


class LatentRotate(Node):
    spec = NodeSpec(
        id="LatentRotate",
        display_name="Rotate Latent",
        category="latent/transform",
        inputs=(
            Input("samples", "LATENT"),
            Choice("rotation", ("none", "90 degrees", "180 degrees", "270 degrees"), legacy=True),
        ),
        outputs=(Output("LATENT"),),
    )

    def run(self, ctx: NodeRuntime, samples: Latent, rotation: str) -> tuple[Latent]:
        import torch

        turns = {"90": 1, "180": 2, "270": 3}.get(rotation.split(" ")[0], 0)
        # dims (3, 2): clockwise turns, as ComfyUI rotates.
        return ({**samples, "samples": torch.rot90(samples["samples"], k=turns, dims=[3, 2])},)


class SetLatentNoiseMask(Node):
    spec = NodeSpec(
        id="SetLatentNoiseMask",
        display_name="Set Latent Noise Mask",
        category="latent/inpaint",
        inputs=(Input("samples", "LATENT"), Input("mask", "MASK")),
        outputs=(Output("LATENT"),),
    )

    def run(self, ctx: NodeRuntime, samples: Latent, mask: Any) -> tuple[Latent]:
        return ({**samples, "noise_mask": mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))},)


NODES = [
    EmptyLatentImage,
    LatentUpscale,
    LatentUpscaleBy,
    LatentComposite,
    LatentBlend,
    LatentFromBatch,
    RepeatLatentBatch,
    LatentBatch,
    LatentCrop,
    LatentFlip,
    LatentRotate,
    SetLatentNoiseMask,
]

__all__ = [
    "CROP_METHODS",
    "MAX_RESOLUTION",
    "NODES",
    "UPSCALE_METHODS",
    "EmptyLatentImage",
    "LatentBatch",
    "LatentBlend",
    "LatentComposite",
    "LatentCrop",
    "LatentFlip",
    "LatentFromBatch",
    "LatentRotate",
    "LatentUpscale",
    "LatentUpscaleBy",
    "RepeatLatentBatch",
    "SetLatentNoiseMask",
    "bislerp",
    "center_crop_to_aspect",
    "common_upscale",
    "repeat_batch",
]
