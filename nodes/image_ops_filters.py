"""Image filters: blend, blur, sharpen, quantize, add noise (ComfyUI's
comfy_extras/nodes_post_processing.py and nodes_images.py). Registered through nodes.image_ops.NODES.

Blur and sharpen pad by reflection, as ComfyUI does, so the radius must be smaller than the
image. Quantize uses Pillow's median-cut palette and dithering, exactly as ComfyUI calls it.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from nodes.api import Choice, Float, Input, Int, Node, NodeRuntime, NodeSpec, Output
from nodes.image_ops_util import gaussian_kernel, image_alpha_fix, image_batch, scale_image

log = logging.getLogger(__name__)

BLEND_MODES = ("normal", "multiply", "screen", "overlay", "soft_light", "difference")
DITHER_METHODS = ("none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16")


def blend(image1: Any, image2: Any, mode: str) -> Any:
    """The blend of image2 over image1 before mixing with blend_factor."""
    import torch

    if mode == "normal":
        return image2
    if mode == "multiply":
        return image1 * image2
    if mode == "screen":
        return 1 - (1 - image1) * (1 - image2)
    if mode == "overlay":
        return torch.where(image1 <= 0.5, 2 * image1 * image2, 1 - 2 * (1 - image1) * (1 - image2))
    if mode == "soft_light":
        # The W3C soft-light formula: D(x) is a cubic below 0.25 and sqrt(x) above.
        d = torch.where(image1 <= 0.25, ((16 * image1 - 12) * image1 + 4) * image1, torch.sqrt(image1))
        return torch.where(
            image2 <= 0.5, image1 - (1 - 2 * image2) * image1 * (1 - image1), image1 + (2 * image2 - 1) * (d - image1)
        )
    if mode == "difference":
        return image1 - image2
    raise ValueError(f"unknown blend_mode {mode!r}; expected one of {BLEND_MODES}")


class ImageBlend(Node):
    """Blends image2 onto image1 with a blend mode; image2 is resized (bicubic, centre crop) to
    image1's size first, and image1's alpha channel is kept."""

    spec = NodeSpec(
        id="ImageBlend",
        display_name="Image Blend",
        category="image/postprocessing",
        inputs=(
            Input("image1", "IMAGE"),
            Input("image2", "IMAGE"),
            Float("blend_factor", 0.5, min=0.0, max=1.0, step=0.01),
            Choice("blend_mode", BLEND_MODES),
        ),
        outputs=(Output("IMAGE"),),
    )

    def run(self, ctx: NodeRuntime, image1: Any, image2: Any, blend_factor: float, blend_mode: str) -> tuple[Any]:
        import torch

        image1, image2 = image_alpha_fix(image_batch(image1, "image1"), image_batch(image2, "image2"))
        image2 = image2.to(image1.device, image1.dtype)
        if image1.shape[1:] != image2.shape[1:]:
            image2 = scale_image(image2, int(image1.shape[2]), int(image1.shape[1]), "bicubic", "center")
        if image1.shape[0] != image2.shape[0] and 1 not in (image1.shape[0], image2.shape[0]):
            raise ValueError(
                f"ImageBlend: image1 has {image1.shape[0]} images and image2 has {image2.shape[0]}; "
                "the batch sizes must match, or one of them must be a single image"
            )
        blended = image1 * (1 - blend_factor) + blend(image1, image2, blend_mode) * blend_factor
        blended = torch.clamp(blended, 0, 1)
        if image1.shape[-1] == 4:  # alpha is transparency, not colour: it is not blended
            blended[..., 3] = image1[..., 3]
        return (blended,)


def _reflect_conv(image: Any, kernel: Any, radius: int, node: str, input_name: str) -> Any:
    """Convolve each channel of [B, H, W, C] with `kernel`, padding by reflection (ComfyUI's
    reflect pad + zero-padded conv + crop gives exactly this)."""
    import torch

    height, width = int(image.shape[1]), int(image.shape[2])
    if radius >= height or radius >= width:
        raise ValueError(
            f"{node}: {input_name}={radius} is too large for a {width}x{height} image; "
            f"it must be smaller than both sides (at most {min(width, height) - 1})"
        )
    channels = int(image.shape[-1])
    weights = kernel.to(image.device, image.dtype).repeat(channels, 1, 1).unsqueeze(1)
    planes = image.permute(0, 3, 1, 2)
    planes = torch.nn.functional.pad(planes, (radius, radius, radius, radius), mode="reflect")
    return torch.nn.functional.conv2d(planes, weights, groups=channels).permute(0, 2, 3, 1)


class ImageBlur(Node):
    """Gaussian blur over a (2 * blur_radius + 1) square window."""

    spec = NodeSpec(
        id="ImageBlur",
        display_name="Image Blur",
        category="image/postprocessing",
        inputs=(
            Input("image", "IMAGE"),
            Int("blur_radius", 1, min=1, max=31, step=1),
            Float("sigma", 1.0, min=0.1, max=10.0, step=0.1),
        ),
        outputs=(Output("IMAGE"),),
    )

    def run(self, ctx: NodeRuntime, image: Any, blur_radius: int, sigma: float) -> tuple[Any]:
        image = image_batch(image)
        if blur_radius == 0:
            return (image,)
        kernel = gaussian_kernel(blur_radius * 2 + 1, sigma)
        return (_reflect_conv(image, kernel, blur_radius, "ImageBlur", "blur_radius"),)


class ImageSharpen(Node):
    """Unsharp-style sharpening: the image minus alpha x 10 times its Gaussian blur, renormalised."""

    spec = NodeSpec(
        id="ImageSharpen",
        display_name="Image Sharpen",
        category="image/postprocessing",
        inputs=(
            Input("image", "IMAGE"),
            Int("sharpen_radius", 1, min=1, max=31, step=1),
            Float("sigma", 1.0, min=0.1, max=10.0, step=0.01),
            Float("alpha", 1.0, min=0.0, max=5.0, step=0.01),
        ),
        outputs=(Output("IMAGE"),),
    )

    def run(self, ctx: NodeRuntime, image: Any, sharpen_radius: int, sigma: float, alpha: float) -> tuple[Any]:
        import torch

        image = image_batch(image)
        if sharpen_radius == 0:
            return (image,)
        size = sharpen_radius * 2 + 1
        kernel = gaussian_kernel(size, sigma) * -(alpha * 10)
        center = size // 2
        kernel[center, center] = kernel[center, center] - kernel.sum() + 1.0
        sharpened = _reflect_conv(image, kernel, sharpen_radius, "ImageSharpen", "sharpen_radius")
        return (torch.clamp(sharpened, 0, 1),)


def _bayer_matrix(order: int) -> Any:
    """ComfyUI's normalised Bayer threshold matrix of size order x order (order a power of 2)."""
    import numpy as np

    matrix = np.zeros((1, 1), dtype=np.float64)
    for level in range(1, int(math.log2(order)) + 1):
        q = 4**level
        m = q * matrix
        matrix = np.block([[m - 1.5, m + 0.5], [m + 1.5, m - 0.5]]) / q
    return matrix


def _bayer_dither(image: Any, palette: Any, order: int) -> Any:
    """Ordered dithering: add the Bayer offsets, then map to the palette without dithering."""
    import numpy as np
    from PIL import Image

    colors = len(palette.getpalette()) // 3
    spread = 2 * 256 / colors
    matrix = spread * _bayer_matrix(order) + 0.5
    pixels = np.asarray(image).astype(np.float64)
    rows = math.ceil(pixels.shape[0] / matrix.shape[0])
    cols = math.ceil(pixels.shape[1] / matrix.shape[1])
    tiled = np.tile(matrix, (rows, cols))[: pixels.shape[0], : pixels.shape[1], None]
    # Added in double precision and rounded to float32 before truncating, as ComfyUI's in-place
    # float32 += float64 does: a sum just under an integer can round up to it.
    shifted = np.clip((pixels + tiled).astype(np.float32), 0, 255).astype(np.uint8)
    return Image.fromarray(shifted).quantize(palette=palette, dither=Image.Dither.NONE)


class ImageQuantize(Node):
    """Reduces each image to `colors` colours (median cut), with optional dithering."""

    spec = NodeSpec(
        id="ImageQuantize",
        display_name="Image Quantize",
        category="image/postprocessing",
        inputs=(
            Input("image", "IMAGE"),
            Int("colors", 256, min=1, max=256, step=1),
            Choice("dither", DITHER_METHODS),
        ),
        outputs=(Output("IMAGE"),),
    )

    def run(self, ctx: NodeRuntime, image: Any, colors: int, dither: str) -> tuple[Any]:
        import numpy as np
        import torch
        from PIL import Image

        if dither not in DITHER_METHODS:
            raise ValueError(f"ImageQuantize: unknown dither {dither!r}; expected one of {DITHER_METHODS}")
        image = image_batch(image)
        # Truncation to uint8, as ComfyUI does (0.999 -> 254).
        pixels = (image[..., :3].clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
        results = []
        for frame in pixels:
            ctx.check_interrupted()
            source = Image.fromarray(frame)
            palette = source.quantize(colors=colors)  # Pillow needs a palette image to map onto
            if dither.startswith("bayer"):
                quantized = _bayer_dither(source, palette, int(dither.split("-")[-1]))
            else:
                method = Image.Dither.FLOYDSTEINBERG if dither == "floyd-steinberg" else Image.Dither.NONE
                quantized = source.quantize(palette=palette, dither=method)
            results.append(np.asarray(quantized.convert("RGB")))
        result = torch.from_numpy(np.stack(results)).float() / 255
        result = result.to(image.device)
        if image.shape[-1] == 4:
            result = torch.cat((result, image[..., 3:]), dim=-1)
        return (result,)


class ImageAddNoise(Node):
    """Adds seeded Gaussian noise times strength, clipped to 0..1."""

    spec = NodeSpec(
        id="ImageAddNoise",
        category="image",
        inputs=(
            Input("image", "IMAGE"),
            Int(
                "seed",
                0,
                min=0,
                max=0xFFFFFFFFFFFFFFFF,
                control_after_generate=True,
                tooltip="The random seed used for creating the noise.",
            ),
            Float("strength", 0.5, min=0.0, max=1.0, step=0.01),
        ),
        outputs=(Output("IMAGE"),),
    )

    def run(self, ctx: NodeRuntime, image: Any, seed: int, strength: float) -> tuple[Any]:
        import torch

        image = image_batch(image)
        # A private CPU generator: the same numbers as ComfyUI's torch.manual_seed(seed) without
        # reseeding the process-wide generator other nodes draw from.
        generator = torch.Generator(device="cpu").manual_seed(seed)
        noise = torch.randn(image.size(), generator=generator, device="cpu").to(image)
        return (torch.clip(image + strength * noise, min=0.0, max=1.0),)


__all__ = [
    "BLEND_MODES",
    "DITHER_METHODS",
    "ImageAddNoise",
    "ImageBlend",
    "ImageBlur",
    "ImageQuantize",
    "ImageSharpen",
    "blend",
]
