"""Compositing nodes: ImageCompositeMasked (comfy_extras/nodes_mask.py) and the alpha nodes of
comfy_extras/nodes_compositing.py (PorterDuffImageComposite, SplitImageWithAlpha,
JoinImageWithAlpha). Registered through nodes.image_ops.NODES.

MASK and alpha are opposite conventions: a MASK is 1 where the image is transparent (to be
changed), alpha is 1 where it is opaque, so these nodes convert with 1 - x at their borders.
"""

from __future__ import annotations

import enum
import logging
from typing import Any

from nodes.api import Boolean, Choice, Input, Int, Node, NodeRuntime, NodeSpec, Output
from nodes.image_ops_util import (
    MAX_RESOLUTION,
    common_upscale,
    composite,
    image_alpha_fix,
    image_batch,
    mask_batch,
    repeat_to_batch_size,
)

log = logging.getLogger(__name__)


class ImageCompositeMasked(Node):
    """Pastes `source` onto `destination` at (x, y), through the optional mask."""

    spec = NodeSpec(
        id="ImageCompositeMasked",
        category="image",
        inputs=(
            Input("destination", "IMAGE"),
            Input("source", "IMAGE"),
            Int("x", 0, min=0, max=MAX_RESOLUTION, step=1),
            Int("y", 0, min=0, max=MAX_RESOLUTION, step=1),
            Boolean("resize_source", False),
            Input("mask", "MASK", optional=True),
        ),
        outputs=(Output("IMAGE"),),
    )

    def run(
        self,
        ctx: NodeRuntime,
        destination: Any,
        source: Any,
        x: int,
        y: int,
        resize_source: bool,
        mask: Any = None,
    ) -> tuple[Any]:
        destination = image_batch(destination, "destination")
        destination, source = image_alpha_fix(destination, image_batch(source, "source"))
        if mask is not None:
            mask = mask_batch(mask)
        canvas = destination.clone().movedim(-1, 1)
        result = composite(canvas, source.movedim(-1, 1).to(canvas.dtype), x, y, mask, 1, resize_source)
        return (result.movedim(1, -1),)


class PorterDuffMode(enum.Enum):
    """The 18 Porter-Duff operators, in ComfyUI's order (the combo lists their names)."""

    ADD = 0
    CLEAR = 1
    DARKEN = 2
    DST = 3
    DST_ATOP = 4
    DST_IN = 5
    DST_OUT = 6
    DST_OVER = 7
    LIGHTEN = 8
    MULTIPLY = 9
    OVERLAY = 10
    SCREEN = 11
    SRC = 12
    SRC_ATOP = 13
    SRC_IN = 14
    SRC_OUT = 15
    SRC_OVER = 16
    XOR = 17


def _porter_duff_premultiplied(src: Any, sa: Any, dst: Any, da: Any, mode: PorterDuffMode) -> tuple[Any, Any]:
    """(colour, alpha) of one operator on premultiplied colours."""
    import torch

    union = sa + da - sa * da
    table = {
        PorterDuffMode.ADD: lambda: (torch.clamp(src + dst, 0, 1), torch.clamp(sa + da, 0, 1)),
        PorterDuffMode.CLEAR: lambda: (torch.zeros_like(dst), torch.zeros_like(da)),
        PorterDuffMode.DARKEN: lambda: ((1 - da) * src + (1 - sa) * dst + torch.min(src, dst), union),
        PorterDuffMode.DST: lambda: (dst, da),
        PorterDuffMode.DST_ATOP: lambda: (sa * dst + (1 - da) * src, sa),
        PorterDuffMode.DST_IN: lambda: (dst * sa, sa * da),
        PorterDuffMode.DST_OUT: lambda: ((1 - sa) * dst, (1 - sa) * da),
        PorterDuffMode.DST_OVER: lambda: (dst + (1 - da) * src, da + (1 - da) * sa),
        PorterDuffMode.LIGHTEN: lambda: ((1 - da) * src + (1 - sa) * dst + torch.max(src, dst), union),
        PorterDuffMode.MULTIPLY: lambda: (src * dst, sa * da),
        PorterDuffMode.OVERLAY: lambda: (
            torch.where(2 * dst < da, 2 * src * dst, sa * da - 2 * (da - src) * (sa - dst)),
            union,
        ),
        PorterDuffMode.SCREEN: lambda: (src + dst - src * dst, union),
        PorterDuffMode.SRC: lambda: (src, sa),
        PorterDuffMode.SRC_ATOP: lambda: (da * src + (1 - sa) * dst, da),
        PorterDuffMode.SRC_IN: lambda: (src * da, sa * da),
        PorterDuffMode.SRC_OUT: lambda: ((1 - da) * src, (1 - da) * sa),
        PorterDuffMode.SRC_OVER: lambda: (src + (1 - sa) * dst, sa + (1 - sa) * da),
        PorterDuffMode.XOR: lambda: ((1 - da) * src + (1 - sa) * dst, (1 - da) * sa + (1 - sa) * da),
    }
    return table[mode]()


def porter_duff_composite(
    src_image: Any, src_mask: Any, dst_image: Any, dst_mask: Any, mode: PorterDuffMode
) -> tuple[Any, Any]:
    """Composite two images given as (colour [.., H, W, C], MASK-convention alpha [.., H, W, 1]);
    returns the colour (straight, not premultiplied) and the result as a mask again."""
    import torch

    src_alpha, dst_alpha = 1 - src_mask, 1 - dst_mask
    colour, alpha = _porter_duff_premultiplied(src_image * src_alpha, src_alpha, dst_image * dst_alpha, dst_alpha, mode)
    colour = torch.where(alpha > 1e-5, colour / alpha, torch.zeros_like(colour))
    return torch.clamp(colour, 0, 1), 1 - alpha


def _fit(planes: Any, height: int, width: int) -> Any:
    """[B, H, W, C] resized (bicubic, centre crop) to height x width unless it already is."""
    if tuple(planes.shape[1:3]) == (height, width):
        return planes
    return common_upscale(planes.movedim(-1, 1), width, height, "bicubic", "center").movedim(1, -1)


class PorterDuffImageComposite(Node):
    """Composites source over destination with a Porter-Duff operator, using their alpha masks."""

    spec = NodeSpec(
        id="PorterDuffImageComposite",
        display_name="Porter-Duff Image Composite",
        category="mask/compositing",
        inputs=(
            Input("source", "IMAGE"),
            Input("source_alpha", "MASK"),
            Input("destination", "IMAGE"),
            Input("destination_alpha", "MASK"),
            Choice("mode", tuple(mode.name for mode in PorterDuffMode), PorterDuffMode.DST.name),
        ),
        outputs=(Output("IMAGE"), Output("MASK")),
    )

    def run(
        self,
        ctx: NodeRuntime,
        source: Any,
        source_alpha: Any,
        destination: Any,
        destination_alpha: Any,
        mode: str,
    ) -> tuple[Any, Any]:
        source, destination = image_batch(source, "source"), image_batch(destination, "destination")
        source_alpha = mask_batch(source_alpha, "source_alpha").unsqueeze(-1)
        destination_alpha = mask_batch(destination_alpha, "destination_alpha").unsqueeze(-1)
        if source.shape[-1] != destination.shape[-1]:
            raise ValueError(
                f"PorterDuffImageComposite: source has {source.shape[-1]} channels and destination has "
                f"{destination.shape[-1]}; they must match (use SplitImageWithAlpha to drop an alpha channel)"
            )
        count = min(len(source), len(source_alpha), len(destination), len(destination_alpha))
        source, destination = source[:count], destination[:count]
        source_alpha, destination_alpha = source_alpha[:count], destination_alpha[:count]
        height, width = int(destination.shape[1]), int(destination.shape[2])
        destination_alpha = _fit(destination_alpha, height, width)
        source = _fit(source, height, width)
        source_alpha = _fit(source_alpha, int(destination_alpha.shape[1]), int(destination_alpha.shape[2]))
        image, alpha = porter_duff_composite(source, source_alpha, destination, destination_alpha, PorterDuffMode[mode])
        return image, alpha.squeeze(-1)


class SplitImageWithAlpha(Node):
    """Splits an RGBA image into RGB and a mask (1 - alpha); RGB images give an empty mask."""

    spec = NodeSpec(
        id="SplitImageWithAlpha",
        display_name="Split Image with Alpha",
        category="mask/compositing",
        inputs=(Input("image", "IMAGE"),),
        outputs=(Output("IMAGE"), Output("MASK")),
    )

    def run(self, ctx: NodeRuntime, image: Any) -> tuple[Any, Any]:
        import torch

        image = image_batch(image)
        alpha = image[..., 3] if image.shape[-1] > 3 else torch.ones_like(image[..., 0])
        return image[..., :3].clone(), 1.0 - alpha


class JoinImageWithAlpha(Node):
    """Adds an alpha channel (1 - mask, resized bilinearly to the image) to the images."""

    spec = NodeSpec(
        id="JoinImageWithAlpha",
        display_name="Join Image with Alpha",
        category="mask/compositing",
        inputs=(Input("image", "IMAGE"), Input("alpha", "MASK")),
        outputs=(Output("IMAGE"),),
    )

    def run(self, ctx: NodeRuntime, image: Any, alpha: Any) -> tuple[Any]:
        import torch

        image, alpha = image_batch(image), mask_batch(alpha, "alpha")
        size = max(len(image), len(alpha))
        image = repeat_to_batch_size(image, size)
        alpha = repeat_to_batch_size(alpha, size)
        resized = torch.nn.functional.interpolate(
            alpha.unsqueeze(1).to(image.dtype), size=(int(image.shape[1]), int(image.shape[2])), mode="bilinear"
        ).squeeze(1)
        return (torch.cat((image[..., :3], (1.0 - resized).unsqueeze(-1)), dim=-1),)


__all__ = [
    "ImageCompositeMasked",
    "JoinImageWithAlpha",
    "PorterDuffImageComposite",
    "PorterDuffMode",
    "SplitImageWithAlpha",
    "porter_duff_composite",
]
