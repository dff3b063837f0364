"""Geometric image nodes: crop, pad for outpainting, stitch, rotate, flip (ComfyUI's nodes.py and
comfy_extras/nodes_images.py). Registered through nodes.image_ops.NODES.

ImagePadForOutpaint's mask ramps exactly as ComfyUI's: inside the original image, a pixel at
distance d < feathering from a padded side gets ((feathering - d) / feathering)^2, computed in
double precision and stored as float32, and the padding itself is 1.
"""

from __future__ import annotations

import logging
from typing import Any

from nodes.api import Boolean, Choice, Input, Int, Node, NodeRuntime, NodeSpec, Output
from nodes.image_ops_util import MAX_RESOLUTION, image_batch, scale_image

log = logging.getLogger(__name__)

STITCH_COLORS: dict[str, float | tuple[float, float, float]] = {
    "white": 1.0,
    "black": 0.0,
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
}


class ImageCrop(Node):
    """Cuts a width x height region at (x, y); the region is clipped to the image."""

    spec = NodeSpec(
        id="ImageCrop",
        display_name="Image Crop",
        category="image/transform",
        inputs=(
            Input("image", "IMAGE"),
            Int("width", 512, min=1, max=MAX_RESOLUTION, step=1),
            Int("height", 512, min=1, max=MAX_RESOLUTION, step=1),
            Int("x", 0, min=0, max=MAX_RESOLUTION, step=1),
            Int("y", 0, min=0, max=MAX_RESOLUTION, step=1),
        ),
        outputs=(Output("IMAGE"),),
    )

    def run(self, ctx: NodeRuntime, image: Any, width: int, height: int, x: int, y: int) -> tuple[Any]:
        image = image_batch(image)
        # An origin past the edge moves back to the last row/column, so the result is never empty.
        x = min(x, int(image.shape[2]) - 1)
        y = min(y, int(image.shape[1]) - 1)
        return (image[:, y : y + height, x : x + width, :],)


def outpaint_mask(height: int, width: int, left: int, top: int, right: int, bottom: int, feathering: int) -> Any:
    """The [1, H', W'] mask of ImagePadForOutpaint for an image of height x width."""
    import torch

    mask = torch.ones((height + top + bottom, width + left + right), dtype=torch.float32)
    inner = torch.zeros((height, width), dtype=torch.float32)
    if feathering > 0 and feathering * 2 < height and feathering * 2 < width:
        rows = torch.arange(height, dtype=torch.float64).unsqueeze(1)
        cols = torch.arange(width, dtype=torch.float64).unsqueeze(0)
        # Distance to each padded side; a side without padding never counts (ComfyUI uses the size).
        to_top = rows if top else torch.full_like(rows, height)
        to_bottom = height - rows if bottom else torch.full_like(rows, height)
        to_left = cols if left else torch.full_like(cols, width)
        to_right = width - cols if right else torch.full_like(cols, width)
        distance = torch.minimum(torch.minimum(to_top, to_bottom), torch.minimum(to_left, to_right))
        ramp = (feathering - distance) / feathering
        inner = torch.where(distance < feathering, ramp * ramp, torch.zeros_like(ramp)).to(torch.float32)
    mask[top : top + height, left : left + width] = inner
    return mask.unsqueeze(0)


class ImagePadForOutpaint(Node):
    """Pads the images with grey (0.5) for outpainting; the mask is 1 on the padding and fades
    into the image over `feathering` pixels."""

    spec = NodeSpec(
        id="ImagePadForOutpaint",
        display_name="Pad Image for Outpainting",
        category="image",
        inputs=(
            Input("image", "IMAGE"),
            Int("left", 0, min=0, max=MAX_RESOLUTION, step=8),
            Int("top", 0, min=0, max=MAX_RESOLUTION, step=8),
            Int("right", 0, min=0, max=MAX_RESOLUTION, step=8),
            Int("bottom", 0, min=0, max=MAX_RESOLUTION, step=8),
            Int("feathering", 40, min=0, max=MAX_RESOLUTION, step=1),
        ),
        outputs=(Output("IMAGE"), Output("MASK")),
    )

    def run(
        self, ctx: NodeRuntime, image: Any, left: int, top: int, right: int, bottom: int, feathering: int
    ) -> tuple[Any, Any]:
        import torch

        image = image_batch(image)
        batch, height, width, channels = (int(n) for n in image.shape)
        padded = torch.full((batch, height + top + bottom, width + left + right, channels), 0.5, dtype=torch.float32)
        padded[:, top : top + height, left : left + width, :] = image
        return padded, outpaint_mask(height, width, left, top, right, bottom, feathering)


class ImageStitch(Node):
    """Stitches image2 to image1 in the specified direction.
    If image2 is not provided, returns image1 unchanged.
    Optional spacing can be added between images."""

    spec = NodeSpec(
        id="ImageStitch",
        display_name="Image Stitch",
        category="image/transform",
        inputs=(
            Input("image1", "IMAGE"),
            Choice("direction", ("right", "down", "left", "up"), "right"),
            Boolean("match_image_size", True),
            Int("spacing_width", 0, min=0, max=1024, step=2),
            Choice("spacing_color", tuple(STITCH_COLORS), "white"),
            Input("image2", "IMAGE", optional=True),
        ),
        outputs=(Output("IMAGE"),),
    )

    def run(
        self,
        ctx: NodeRuntime,
        image1: Any,
        direction: str,
        match_image_size: bool,
        spacing_width: int,
        spacing_color: str,
        image2: Any = None,
    ) -> tuple[Any]:
        import torch

        image1 = image_batch(image1, "image1")
        if image2 is None:
            return (image1,)
        image1, image2 = _same_batch(image1, image_batch(image2, "image2"))
        horizontal = direction in ("left", "right")
        color = STITCH_COLORS[spacing_color]
        if match_image_size:
            height1, width1 = int(image1.shape[1]), int(image1.shape[2])
            aspect = int(image2.shape[2]) / int(image2.shape[1])
            size = (int(height1 * aspect), height1) if horizontal else (width1, int(width1 / aspect))
            if min(size) < 1:
                raise ValueError(
                    f"ImageStitch: matching image2 ({image2.shape[2]}x{image2.shape[1]}) to image1 "
                    f"({width1}x{height1}) gives {size[0]}x{size[1]} pixels; turn off match_image_size "
                    "or use images of closer aspect ratios"
                )
            image2 = scale_image(image2, size[0], size[1], "lanczos")
        else:
            fill = color if isinstance(color, float) else 0.0
            image1, image2 = _pad_cross_axis(image1, image2, horizontal, fill)
        image1, image2 = _same_channels(image1, image2)
        parts = [image2, image1] if direction in ("left", "up") else [image1, image2]
        if spacing_width > 0:
            parts.insert(1, _spacing(image1, image2, spacing_width + spacing_width % 2, horizontal, color))
        return (torch.cat(parts, dim=2 if horizontal else 1),)


def _same_batch(image1: Any, image2: Any) -> tuple[Any, Any]:
    """Repeat the last image of the shorter batch until both have the same size."""
    import torch

    size = max(int(image1.shape[0]), int(image2.shape[0]))

    def grow(image: Any) -> Any:
        missing = size - int(image.shape[0])
        return torch.cat([image, image[-1:].repeat(missing, 1, 1, 1)]) if missing else image

    return grow(image1), grow(image2)


def _pad_cross_axis(image1: Any, image2: Any, horizontal: bool, fill: float) -> tuple[Any, Any]:
    """Centre the smaller image on the axis the stitch does not extend (height for left/right)."""
    import torch

    axis = 1 if horizontal else 2
    target = max(int(image1.shape[axis]), int(image2.shape[axis]))

    def pad(image: Any) -> Any:
        missing = target - int(image.shape[axis])
        if not missing:
            return image
        before, after = missing // 2, missing - missing // 2
        widths = (0, 0, 0, 0, before, after) if horizontal else (0, 0, before, after)
        return torch.nn.functional.pad(image, widths, mode="constant", value=fill)

    return pad(image1), pad(image2)


def _same_channels(image1: Any, image2: Any) -> tuple[Any, Any]:
    """Add opaque channels to the image with fewer (RGB next to RGBA)."""
    import torch

    channels = max(int(image1.shape[-1]), int(image2.shape[-1]))

    def widen(image: Any) -> Any:
        missing = channels - int(image.shape[-1])
        if not missing:
            return image
        ones = torch.ones(*image.shape[:-1], missing, dtype=image.dtype, device=image.device)
        return torch.cat([image, ones], dim=-1)

    return widen(image1), widen(image2)


def _spacing(image1: Any, image2: Any, width: int, horizontal: bool, color: Any) -> Any:
    import torch

    channels = int(image1.shape[-1])
    if horizontal:
        shape = (int(image1.shape[0]), max(int(image1.shape[1]), int(image2.shape[1])), width, channels)
    else:
        shape = (int(image1.shape[0]), width, max(int(image1.shape[2]), int(image2.shape[2])), channels)
    spacing = torch.zeros(shape, dtype=image1.dtype, device=image1.device)
    if isinstance(color, tuple):
        for index, value in enumerate(color[:channels]):
            spacing[..., index] = value
    else:
        spacing[..., : min(3, channels)] = color
    if channels == 4:
        spacing[..., 3] = 1.0
    return spacing


class ImageRotate(Node):
    """Rotates the images clockwise by a multiple of 90 degrees."""

    spec = NodeSpec(
        id="ImageRotate",
        category="image/transform",
        inputs=(Input("image", "IMAGE"), Choice("rotation", ("none", "90 degrees", "180 degrees", "270 degrees"))),
        outputs=(Output("IMAGE"),),
    )

    def run(self, ctx: NodeRuntime, image: Any, rotation: str) -> tuple[Any]:
        import torch

        turns = {"90": 1, "180": 2, "270": 3}.get(rotation.split(" ")[0], 0)
        # dims=[2, 1] (width towards height) turns the picture clockwise.
        return (torch.rot90(image_batch(image), k=turns, dims=[2, 1]),)


class ImageFlip(Node):
    """Mirrors the images: across the x axis (upside down) or the y axis (left to right)."""

    spec = NodeSpec(
        id="ImageFlip",
        category="image/transform",
        inputs=(Input("image", "IMAGE"), Choice("flip_method", ("x-axis: vertically", "y-axis: horizontally"))),
        outputs=(Output("IMAGE"),),
    )

    def run(self, ctx: NodeRuntime, image: Any, flip_method: str) -> tuple[Any]:
        import torch

        image = image_batch(image)
        if flip_method.startswith("x"):
            return (torch.flip(image, dims=[1]),)
        if flip_method.startswith("y"):
            return (torch.flip(image, dims=[2]),)
        return (image,)


__all__ = ["ImageCrop", "ImageFlip", "ImagePadForOutpaint", "ImageRotate", "ImageStitch", "outpaint_mask"]
