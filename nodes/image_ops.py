"""Image nodes: scaling, batches, sizes (ComfyUI's nodes.py and comfy_extras/nodes_images.py,
nodes_post_processing.py). This module also registers the image nodes of the split modules
(image_ops_transform, image_ops_filters, image_ops_compositing): `NODES` lists them all.

Names, inputs, defaults and categories follow ComfyUI, so workflows load unchanged; the numbers
follow ComfyUI too (same rounding of target sizes, same resize kernels, see image_ops_util).
Classes ported from ComfyUI's V1 nodes.py keep V1's bare-list combos in /object_info
(`legacy=True`); those from comfy_extras (V3 there) render as ["COMBO", {"options": [...]}].

IMAGE is float32 [B, H, W, C] in 0..1. torch is imported inside run().
"""

from __future__ import annotations

import logging
import math
from typing import Any

from nodes.api import Choice, Float, Hidden, Input, Int, Node, NodeRuntime, NodeSpec, Output
from nodes.image_ops_compositing import (
    ImageCompositeMasked,
    JoinImageWithAlpha,
    PorterDuffImageComposite,
    SplitImageWithAlpha,
)
from nodes.image_ops_filters import ImageAddNoise, ImageBlend, ImageBlur, ImageQuantize, ImageSharpen
from nodes.image_ops_transform import ImageCrop, ImageFlip, ImagePadForOutpaint, ImageRotate, ImageStitch
from nodes.image_ops_util import CROP_METHODS, MAX_RESOLUTION, UPSCALE_METHODS, image_batch, scale_image

log = logging.getLogger(__name__)

MAX_BATCH = 4096


def _scaled(image: Any, width: int, height: int, method: str, crop: str, node: str) -> Any:
    """scale_image with an error that says which node computed an impossible size."""
    if width < 1 or height < 1:
        raise ValueError(
            f"{node}: the target size {width}x{height} for the {image.shape[2]}x{image.shape[1]} image "
            "is smaller than 1 pixel; use a larger size or scale factor"
        )
    return scale_image(image, width, height, method, crop)


class ImageScale(Node):
    """Resizes the images to width x height; 0 keeps the aspect ratio from the other side."""

    spec = NodeSpec(
        id="ImageScale",
        display_name="Upscale Image",
        category="image/upscaling",
        inputs=(
            Input("image", "IMAGE"),
            Choice("upscale_method", UPSCALE_METHODS, legacy=True),
            Int("width", 512, min=0, max=MAX_RESOLUTION, step=1),
            Int("height", 512, min=0, max=MAX_RESOLUTION, step=1),
            Choice("crop", CROP_METHODS, legacy=True),
        ),
        outputs=(Output("IMAGE"),),
    )

    def run(self, ctx: NodeRuntime, image: Any, upscale_method: str, width: int, height: int, crop: str) -> tuple[Any]:
        image = image_batch(image)
        if width == 0 and height == 0:
            return (image,)
        if width == 0:
            width = max(1, round(image.shape[2] * height / image.shape[1]))
        elif height == 0:
            height = max(1, round(image.shape[1] * width / image.shape[2]))
        return (_scaled(image, width, height, upscale_method, crop, "ImageScale"),)


class ImageScaleBy(Node):
    """Resizes the images by a factor (each side rounded to the nearest pixel)."""

    spec = NodeSpec(
        id="ImageScaleBy",
        display_name="Upscale Image By",
        category="image/upscaling",
        inputs=(
            Input("image", "IMAGE"),
            Choice("upscale_method", UPSCALE_METHODS, legacy=True),
            Float("scale_by", 1.0, min=0.01, max=8.0, step=0.01),
        ),
        outputs=(Output("IMAGE"),),
    )

    def run(self, ctx: NodeRuntime, image: Any, upscale_method: str, scale_by: float) -> tuple[Any]:
        image = image_batch(image)
        width = round(image.shape[2] * scale_by)
        height = round(image.shape[1] * scale_by)
        return (_scaled(image, width, height, upscale_method, "disabled", "ImageScaleBy"),)


class ImageScaleToTotalPixels(Node):
    """Resizes the images to about `megapixels` (x 1024 x 1024) pixels, keeping the aspect ratio;
    each side is rounded to a multiple of resolution_steps."""

    spec = NodeSpec(
        id="ImageScaleToTotalPixels",
        display_name="Scale Image to Total Pixels",
        category="image/upscaling",
        inputs=(
            Input("image", "IMAGE"),
            Choice("upscale_method", UPSCALE_METHODS),
            Float("megapixels", 1.0, min=0.01, max=16.0, step=0.01),
            Int("resolution_steps", 1, min=1, max=256),
        ),
        outputs=(Output("IMAGE"),),
    )

    def run(
        self, ctx: NodeRuntime, image: Any, upscale_method: str, megapixels: float, resolution_steps: int
    ) -> tuple[Any]:
        image = image_batch(image)
        height, width = int(image.shape[1]), int(image.shape[2])
        scale_by = math.sqrt(megapixels * 1024 * 1024 / (width * height))
        # At least one step per side: ComfyUI fails on a 0-pixel side here, a tiny image is more useful.
        new_width = max(1, round(width * scale_by / resolution_steps)) * resolution_steps
        new_height = max(1, round(height * scale_by / resolution_steps)) * resolution_steps
        return (_scaled(image, new_width, new_height, upscale_method, "disabled", "ImageScaleToTotalPixels"),)


class ImageScaleToMaxDimension(Node):
    """Resizes the images so that their longer side is largest_size, keeping the aspect ratio."""

    spec = NodeSpec(
        id="ImageScaleToMaxDimension",
        category="image/upscaling",
        inputs=(
            Input("image", "IMAGE"),
            # ComfyUI lists "bilinear" twice here; once is enough for the same choices.
            Choice("upscale_method", ("area", "lanczos", "bilinear", "nearest-exact", "bicubic")),
            Int("largest_size", 512, min=0, max=MAX_RESOLUTION, step=1),
        ),
        outputs=(Output("IMAGE"),),
    )

    def run(self, ctx: NodeRuntime, image: Any, upscale_method: str, largest_size: int) -> tuple[Any]:
        image = image_batch(image)
        height, width = int(image.shape[1]), int(image.shape[2])
        if height > width:
            width, height = round(width / height * largest_size), largest_size
        elif width > height:
            width, height = largest_size, round(height / width * largest_size)
        else:
            width = height = largest_size
        return (_scaled(image, width, height, upscale_method, "disabled", "ImageScaleToMaxDimension"),)


class ResizeAndPadImage(Node):
    """Fits the images inside target_width x target_height (aspect kept) and pads the rest."""

    spec = NodeSpec(
        id="ResizeAndPadImage",
        category="image/transform",
        inputs=(
            Input("image", "IMAGE"),
            Int("target_width", 512, min=1, max=MAX_RESOLUTION, step=1),
            Int("target_height", 512, min=1, max=MAX_RESOLUTION, step=1),
            Choice("padding_color", ("white", "black")),
            Choice("interpolation", ("area", "bicubic", "nearest-exact", "bilinear", "lanczos")),
        ),
        outputs=(Output("IMAGE"),),
    )

    def run(
        self,
        ctx: NodeRuntime,
        image: Any,
        target_width: int,
        target_height: int,
        padding_color: str,
        interpolation: str,
    ) -> tuple[Any]:
        import torch

        image = image_batch(image)
        batch, height, width, channels = (int(n) for n in image.shape)
        scale = min(target_width / width, target_height / height)
        new_width, new_height = int(width * scale), int(height * scale)
        resized = _scaled(image, new_width, new_height, interpolation, "disabled", "ResizeAndPadImage")
        fill = 0.0 if padding_color == "black" else 1.0
        padded = torch.full(
            (batch, target_height, target_width, channels), fill, dtype=image.dtype, device=image.device
        )
        top, left = (target_height - new_height) // 2, (target_width - new_width) // 2
        padded[:, top : top + new_height, left : left + new_width, :] = resized
        return (padded,)


class ImageInvert(Node):
    """Inverts the colours: 1 - value."""

    spec = NodeSpec(
        id="ImageInvert",
        display_name="Invert Image",
        category="image",
        inputs=(Input("image", "IMAGE"),),
        outputs=(Output("IMAGE"),),
    )

    def run(self, ctx: NodeRuntime, image: Any) -> tuple[Any]:
        return (1.0 - image,)


class ImageBatch(Node):
    """Joins two image batches; image2 is resized (bilinear, centre crop) to image1's size."""

    spec = NodeSpec(
        id="ImageBatch",
        display_name="Batch Images",
        category="image",
        inputs=(Input("image1", "IMAGE"), Input("image2", "IMAGE")),
        outputs=(Output("IMAGE"),),
        deprecated=True,
    )

    def run(self, ctx: NodeRuntime, image1: Any, image2: Any) -> tuple[Any]:
        import torch

        image1, image2 = image_batch(image1, "image1"), image_batch(image2, "image2")
        # A missing alpha channel is added as opaque so RGB and RGBA batches can be joined.
        channels = max(int(image1.shape[-1]), int(image2.shape[-1]))
        image1 = torch.nn.functional.pad(image1, (0, channels - int(image1.shape[-1])), value=1.0)
        image2 = torch.nn.functional.pad(image2, (0, channels - int(image2.shape[-1])), value=1.0)
        if image1.shape[1:] != image2.shape[1:]:
            image2 = scale_image(image2, int(image1.shape[2]), int(image1.shape[1]), "bilinear", "center")
        return (torch.cat((image1, image2.to(image1.dtype)), dim=0),)


class EmptyImage(Node):
    """A batch of images filled with one colour (0xRRGGBB)."""

    spec = NodeSpec(
        id="EmptyImage",
        category="image",
        inputs=(
            Int("width", 512, min=1, max=MAX_RESOLUTION, step=1),
            Int("height", 512, min=1, max=MAX_RESOLUTION, step=1),
            Int("batch_size", 1, min=1, max=MAX_BATCH),
            Int("color", 0, min=0, max=0xFFFFFF, step=1, display="color"),
        ),
        outputs=(Output("IMAGE"),),
    )

    def run(self, ctx: NodeRuntime, width: int, height: int, batch_size: int = 1, color: int = 0) -> tuple[Any]:
        import torch

        rgb = [((color >> shift) & 0xFF) / 0xFF for shift in (16, 8, 0)]
        planes = [torch.full((batch_size, height, width, 1), value, dtype=torch.float32) for value in rgb]
        return (torch.cat(planes, dim=-1),)


class RepeatImageBatch(Node):
    """Repeats the whole batch `amount` times."""

    spec = NodeSpec(
        id="RepeatImageBatch",
        category="image/batch",
        inputs=(Input("image", "IMAGE"), Int("amount", 1, min=1, max=MAX_BATCH)),
        outputs=(Output("IMAGE"),),
    )

    def run(self, ctx: NodeRuntime, image: Any, amount: int) -> tuple[Any]:
        return (image_batch(image).repeat((amount, 1, 1, 1)),)


class ImageFromBatch(Node):
    """Takes `length` images from the batch starting at batch_index (negative counts from the end)."""

    spec = NodeSpec(
        id="ImageFromBatch",
        category="image/batch",
        inputs=(
            Input("image", "IMAGE"),
            Int("batch_index", 0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION),
            Int("length", 1, min=1, max=MAX_BATCH),
        ),
        outputs=(Output("IMAGE"),),
    )

    def run(self, ctx: NodeRuntime, image: Any, batch_index: int, length: int) -> tuple[Any]:
        image = image_batch(image)
        size = int(image.shape[0])
        if batch_index < 0:
            batch_index += size
        batch_index = max(0, min(size - 1, batch_index))
        length = min(size - batch_index, length)
        return (image[batch_index : batch_index + length].clone(),)


class GetImageSize(Node):
    """Returns the width, height, and batch size of the image."""

    spec = NodeSpec(
        id="GetImageSize",
        display_name="Get Image Size",
        category="image",
        inputs=(Input("image", "IMAGE"), Hidden("unique_id", "UNIQUE_ID")),
        outputs=(Output("INT", "width"), Output("INT", "height"), Output("INT", "batch_size")),
    )

    def run(self, ctx: NodeRuntime, image: Any, unique_id: Any = None) -> tuple[int, int, int]:
        image = image_batch(image)
        return int(image.shape[2]), int(image.shape[1]), int(image.shape[0])


NODES = [
    ImageScale,
    ImageScaleBy,
    ImageScaleToTotalPixels,
    ImageScaleToMaxDimension,
    ResizeAndPadImage,
    ImageInvert,
    ImageBatch,
    EmptyImage,
    ImagePadForOutpaint,
    ImageCrop,
    ImageStitch,
    ImageRotate,
    ImageFlip,
    RepeatImageBatch,
    ImageFromBatch,
    GetImageSize,
    ImageBlend,
    ImageBlur,
    ImageSharpen,
    ImageQuantize,
    ImageAddNoise,
    ImageCompositeMasked,
    PorterDuffImageComposite,
    SplitImageWithAlpha,
    JoinImageWithAlpha,
]

__all__ = [
    "NODES",
    "EmptyImage",
    "GetImageSize",
    "ImageBatch",
    "ImageFromBatch",
    "ImageInvert",
    "ImageScale",
    "ImageScaleBy",
    "ImageScaleToMaxDimension",
    "ImageScaleToTotalPixels",
    "RepeatImageBatch",
    "ResizeAndPadImage",
]
