"""Mask nodes (ComfyUI's comfy_extras/nodes_mask.py): create, invert, crop, combine, grow, feather,
threshold, convert to and from images, composite latents through a mask, preview.
(ImageCompositeMasked, which ComfyUI keeps in the same file, is registered with the image nodes.)

MASK is float32 [B, H, W] with 1 = the area to change; like ComfyUI, every node also accepts a
single [H, W] mask. Results match ComfyUI's numbers: GrowMask is a grey dilation/erosion with a
3x3 cross (tapered corners) or square, applied |expand| times, and FeatherMask multiplies the
edge rows/columns by (i + 1) / width, one side after the other.

torch is imported inside run(): the server imports this module before torch loads.
"""

from __future__ import annotations

import logging
import random
import string
from pathlib import Path
from typing import Any

from nodes.api import Boolean, Choice, Float, Hidden, Input, Int, Node, NodeRuntime, NodeSpec, Output
from nodes.image_io import metadata_enabled, save_png_batch
from nodes.image_ops_util import MAX_RESOLUTION, composite, image_batch, mask_batch
from nodes.pngmeta import metadata_texts

log = logging.getLogger(__name__)

MASK_CHANNELS = ("red", "green", "blue", "alpha")
COMPOSITE_OPERATIONS = ("multiply", "add", "subtract", "and", "or", "xor")


def _mask_input(name: str = "mask") -> Any:
    return Input(name, "MASK")


def _size(name: str, default: int, minimum: int = 1) -> Any:
    return Int(name, default, min=minimum, max=MAX_RESOLUTION, step=1)


class LatentCompositeMasked(Node):
    """Pastes the source latent onto the destination at pixel (x, y) (multiples of 8), through
    the optional mask."""

    spec = NodeSpec(
        id="LatentCompositeMasked",
        category="latent",
        inputs=(
            Input("destination", "LATENT"),
            Input("source", "LATENT"),
            Int("x", 0, min=0, max=MAX_RESOLUTION, step=8),
            Int("y", 0, min=0, max=MAX_RESOLUTION, step=8),
            Boolean("resize_source", False),
            Input("mask", "MASK", optional=True),
        ),
        outputs=(Output("LATENT"),),
    )

    def run(
        self,
        ctx: NodeRuntime,
        destination: dict[str, Any],
        source: dict[str, Any],
        x: int,
        y: int,
        resize_source: bool,
        mask: Any = None,
    ) -> tuple[dict[str, Any]]:
        target, pasted = _latent_samples(destination, "destination"), _latent_samples(source, "source")
        if mask is not None:
            mask = mask_batch(mask)
        output = dict(destination)  # noise_mask, batch_index ... of the destination carry over
        output["samples"] = composite(target.clone(), pasted.to(target.dtype), x, y, mask, 8, resize_source)
        return (output,)


def _latent_samples(latent: Any, name: str) -> Any:
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if getattr(samples, "ndim", 0) < 4:
        raise ValueError(f"input '{name}' must be a LATENT dict with 'samples' [batch, channels, height, width]")
    return samples


class MaskToImage(Node):
    """A greyscale IMAGE (the mask in all three channels)."""

    spec = NodeSpec(
        id="MaskToImage",
        display_name="Convert Mask to Image",
        category="mask",
        inputs=(_mask_input(),),
        outputs=(Output("IMAGE"),),
    )

    def run(self, ctx: NodeRuntime, mask: Any) -> tuple[Any]:
        return (mask_batch(mask).unsqueeze(-1).expand(-1, -1, -1, 3),)


class ImageToMask(Node):
    """One channel of the image as a mask."""

    spec = NodeSpec(
        id="ImageToMask",
        display_name="Convert Image to Mask",
        category="mask",
        inputs=(Input("image", "IMAGE"), Choice("channel", MASK_CHANNELS)),
        outputs=(Output("MASK"),),
    )

    def run(self, ctx: NodeRuntime, image: Any, channel: str) -> tuple[Any]:
        image = image_batch(image)
        index = MASK_CHANNELS.index(channel)
        if index >= image.shape[-1]:
            raise ValueError(
                f"ImageToMask: channel '{channel}' does not exist in an image with {image.shape[-1]} channels "
                "(RGB images have no alpha; pick red, green or blue)"
            )
        return (image[..., index],)


class ImageColorToMask(Node):
    """1 where the pixel's 8-bit colour equals `color` (0xRRGGBB), else 0."""

    spec = NodeSpec(
        id="ImageColorToMask",
        category="mask",
        inputs=(Input("image", "IMAGE"), Int("color", 0, min=0, max=0xFFFFFF, step=1, display="number")),
        outputs=(Output("MASK"),),
    )

    def run(self, ctx: NodeRuntime, image: Any, color: int) -> tuple[Any]:
        import torch

        image = image_batch(image)
        levels = (torch.clamp(image, 0, 1.0) * 255.0).round().to(torch.int64)
        packed = (levels[..., 0] << 16) + (levels[..., 1] << 8) + levels[..., 2]
        return ((packed == color).float(),)


class SolidMask(Node):
    """A width x height mask filled with `value`."""

    spec = NodeSpec(
        id="SolidMask",
        category="mask",
        inputs=(Float("value", 1.0, min=0.0, max=1.0, step=0.01), _size("width", 512), _size("height", 512)),
        outputs=(Output("MASK"),),
    )

    def run(self, ctx: NodeRuntime, value: float, width: int, height: int) -> tuple[Any]:
        import torch

        return (torch.full((1, height, width), value, dtype=torch.float32),)


class InvertMask(Node):
    """1 - mask."""

    spec = NodeSpec(id="InvertMask", category="mask", inputs=(_mask_input(),), outputs=(Output("MASK"),))

    def run(self, ctx: NodeRuntime, mask: Any) -> tuple[Any]:
        mask_batch(mask)  # only checks: ComfyUI keeps the shape it was given
        return (1.0 - mask,)


class CropMask(Node):
    """Cuts a width x height region at (x, y), clipped to the mask."""

    spec = NodeSpec(
        id="CropMask",
        category="mask",
        inputs=(_mask_input(), _size("x", 0, 0), _size("y", 0, 0), _size("width", 512), _size("height", 512)),
        outputs=(Output("MASK"),),
    )

    def run(self, ctx: NodeRuntime, mask: Any, x: int, y: int, width: int, height: int) -> tuple[Any]:
        return (mask_batch(mask)[:, y : y + height, x : x + width],)


class MaskComposite(Node):
    """Combines `source` into `destination` at (x, y) with an operation, clamped to 0..1; and/or/xor
    round both masks to 0 or 1 first."""

    spec = NodeSpec(
        id="MaskComposite",
        category="mask",
        inputs=(
            _mask_input("destination"),
            _mask_input("source"),
            _size("x", 0, 0),
            _size("y", 0, 0),
            Choice("operation", COMPOSITE_OPERATIONS),
        ),
        outputs=(Output("MASK"),),
    )

    def run(self, ctx: NodeRuntime, destination: Any, source: Any, x: int, y: int, operation: str) -> tuple[Any]:
        import torch

        output = mask_batch(destination, "destination").clone()
        source = mask_batch(source, "source").to(output.device, output.dtype)
        if source.shape[0] != output.shape[0]:
            if output.shape[0] != 1 and source.shape[0] != 1:
                raise ValueError(
                    f"MaskComposite: destination has {output.shape[0]} masks and source has {source.shape[0]}; "
                    "the batch sizes must match, or one of them must be a single mask"
                )
            # ComfyUI fails when only the source is a batch; one destination for all is the natural reading.
            output = output.expand(source.shape[0], -1, -1).clone() if output.shape[0] == 1 else output
        bottom = min(y + int(source.shape[-2]), int(output.shape[-2]))
        right = min(x + int(source.shape[-1]), int(output.shape[-1]))
        if bottom <= y or right <= x:  # the source lies entirely outside the destination
            return (torch.clamp(output, 0.0, 1.0),)
        region = output[:, y:bottom, x:right]
        output[:, y:bottom, x:right] = _combine(region, source[:, : bottom - y, : right - x], operation)
        return (torch.clamp(output, 0.0, 1.0),)


def _combine(destination: Any, source: Any, operation: str) -> Any:
    import torch

    if operation == "multiply":
        return destination * source
    if operation == "add":
        return destination + source
    if operation == "subtract":
        return destination - source
    logical = {"and": torch.logical_and, "or": torch.logical_or, "xor": torch.logical_xor}.get(operation)
    if logical is None:
        raise ValueError(f"MaskComposite: unknown operation {operation!r}; expected one of {COMPOSITE_OPERATIONS}")
    return logical(destination.round().bool(), source.round().bool()).to(destination.dtype)


class FeatherMask(Node):
    """Fades the mask towards each edge over the given number of pixels."""

    spec = NodeSpec(
        id="FeatherMask",
        category="mask",
        inputs=(_mask_input(), _size("left", 0, 0), _size("top", 0, 0), _size("right", 0, 0), _size("bottom", 0, 0)),
        outputs=(Output("MASK"),),
    )

    def run(self, ctx: NodeRuntime, mask: Any, left: int, top: int, right: int, bottom: int) -> tuple[Any]:
        output = mask_batch(mask).clone()
        height, width = int(output.shape[-2]), int(output.shape[-1])
        # One multiplication per side, in ComfyUI's order, so overlapping ramps round identically.
        output = output * _ramp(width, min(left, width), from_end=False).view(1, 1, width)
        output = output * _ramp(width, min(right, width), from_end=True).view(1, 1, width)
        output = output * _ramp(height, min(top, height), from_end=False).view(1, height, 1)
        output = output * _ramp(height, min(bottom, height), from_end=True).view(1, height, 1)
        return (output,)


def _ramp(size: int, span: int, *, from_end: bool) -> Any:
    """Factors (i + 1) / span for the first `span` positions (or the last, counted from the
    end), 1 elsewhere; computed in double precision like ComfyUI's Python floats."""
    import torch

    factors = torch.ones(size, dtype=torch.float64)
    if span > 0:
        ramp = (torch.arange(span, dtype=torch.float64) + 1.0) / span
        if from_end:
            factors[size - span :] = ramp.flip(0)
        else:
            factors[:span] = ramp
    return factors.to(torch.float32)


class GrowMask(Node):
    """Grows the mask by `expand` pixels (shrinks it when negative); tapered corners grow with a
    cross instead of a square, rounding the corners."""

    spec = NodeSpec(
        id="GrowMask",
        category="mask",
        inputs=(
            _mask_input(),
            Int("expand", 0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION, step=1),
            Boolean("tapered_corners", True),
        ),
        outputs=(Output("MASK"),),
    )

    def run(self, ctx: NodeRuntime, mask: Any, expand: int, tapered_corners: bool) -> tuple[Any]:
        output = mask_batch(mask).float()
        # After height + width steps every pixel has seen every other: more steps change nothing.
        steps = min(abs(expand), int(output.shape[-2]) + int(output.shape[-1]))
        for step in range(steps):
            if step % 64 == 0:
                ctx.check_interrupted()
            output = morphology_step(output, grow=expand > 0, cross=tapered_corners)
        return (output if steps else output.clone(),)


def morphology_step(masks: Any, *, grow: bool, cross: bool) -> Any:
    """One grey dilation (grow) or erosion of [B, H, W] with a 3x3 cross or square footprint.
    Pixels outside the mask are ignored, which equals scipy's default 'reflect' border for a
    3x3 footprint (the reflected neighbour is a pixel the footprint already covers)."""
    import torch

    fill = float("-inf") if grow else float("inf")
    padded = torch.nn.functional.pad(masks.unsqueeze(1), (1, 1, 1, 1), value=fill).squeeze(1)
    height, width = int(masks.shape[-2]), int(masks.shape[-1])
    offsets = [(1, 1), (0, 1), (2, 1), (1, 0), (1, 2)]
    if not cross:
        offsets += [(0, 0), (0, 2), (2, 0), (2, 2)]
    pick = torch.maximum if grow else torch.minimum
    result = padded[:, 1 : 1 + height, 1 : 1 + width]
    for dy, dx in offsets[1:]:
        result = pick(result, padded[:, dy : dy + height, dx : dx + width])
    return result


class ThresholdMask(Node):
    """1 where the mask is above `value`, else 0."""

    spec = NodeSpec(
        id="ThresholdMask",
        category="mask",
        inputs=(_mask_input(), Float("value", 0.5, min=0.0, max=1.0, step=0.01)),
        outputs=(Output("MASK"),),
    )

    def run(self, ctx: NodeRuntime, mask: Any, value: float) -> tuple[Any]:
        mask_batch(mask)
        return ((mask > value).float(),)


_PREVIEW_LETTERS = string.ascii_lowercase


class MaskPreview(Node):
    """Preview the masks without saving them to the output folder (written to the temp folder)."""

    spec = NodeSpec(
        id="MaskPreview",
        display_name="Preview Mask",
        category="mask",
        inputs=(_mask_input(), Hidden("prompt", "PROMPT"), Hidden("extra_pnginfo", "EXTRA_PNGINFO")),
        output_node=True,
    )

    def run(self, ctx: NodeRuntime, mask: Any, prompt: Any = None, extra_pnginfo: Any = None) -> dict[str, Any]:
        images = mask_batch(mask).unsqueeze(-1).expand(-1, -1, -1, 3)
        prefix = "ComfyUI_temp_" + "".join(random.choice(_PREVIEW_LETTERS) for _ in range(5))
        texts = metadata_texts(prompt, extra_pnginfo) if metadata_enabled(ctx) else None
        folder = Path(ctx.service("temp_dir"))
        results = save_png_batch(ctx, images, folder, prefix, kind="temp", compress_level=1, texts=texts)
        # ComfyUI's V3 preview reports "animated" next to the images.
        return {"ui": {"images": results, "animated": [False]}}


NODES = [
    LatentCompositeMasked,
    MaskToImage,
    ImageToMask,
    ImageColorToMask,
    SolidMask,
    InvertMask,
    CropMask,
    MaskComposite,
    FeatherMask,
    GrowMask,
    ThresholdMask,
    MaskPreview,
]

__all__ = [
    "COMPOSITE_OPERATIONS",
    "MASK_CHANNELS",
    "NODES",
    "CropMask",
    "FeatherMask",
    "GrowMask",
    "ImageColorToMask",
    "ImageToMask",
    "InvertMask",
    "LatentCompositeMasked",
    "MaskComposite",
    "MaskPreview",
    "MaskToImage",
    "SolidMask",
    "ThresholdMask",
    "morphology_step",
]
