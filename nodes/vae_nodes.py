"""VAE nodes: VAEDecode, VAEEncode, their tiled variants, VAEEncodeForInpaint and
InpaintModelConditioning (spec §5.1; ComfyUI's nodes.py).

The VAE handle (diffusion/handles.py VAEHandle) does the work: IMAGE [B, H, W, C] in 0..1 goes in,
LATENT samples (B, 4, H/8, W/8) come out unscaled (the MODEL's latent format scales them for
sampling), and decoding returns IMAGE on the CPU. The inpainting nodes add ComfyUI's pixel-side
preparation: the masked area is set to 0.5 grey before encoding, and the mask is grown or kept at
pixel resolution as the latent's noise_mask.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from nodes.api import Boolean, Input, Int, Node, NodeRuntime, NodeSpec, Output

log = logging.getLogger(__name__)

Latent = dict[str, Any]


def _need_vae(vae: Any) -> Any:
    if vae is None:
        raise ValueError(
            "vae input is invalid: None. If the VAE comes from a checkpoint loader, the checkpoint "
            "does not contain a VAE; load one with VAELoader instead."
        )
    return vae


def crop_to_multiple(pixels: Any, mask: Any, factor: int) -> tuple[Any, Any]:
    """Centre-crop IMAGE [B, H, W, C] and mask (B, 1, H, W) to multiples of `factor`, as the VAE
    encoder crops, so the mask keeps lining up with the pixels."""
    h, w = (pixels.shape[1] // factor) * factor, (pixels.shape[2] // factor) * factor
    if (pixels.shape[1], pixels.shape[2]) != (h, w):
        top, left = (pixels.shape[1] % factor) // 2, (pixels.shape[2] % factor) // 2
        pixels = pixels[:, top : top + h, left : left + w, :]
        mask = mask[:, :, top : top + h, left : left + w]
    return pixels, mask


def pixel_mask(mask: Any, pixels: Any) -> Any:
    """MASK [B, H, W] (any size) -> (B, 1, H, W) at the image's size, bilinear (ComfyUI)."""
    import torch

    flat = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
    return torch.nn.functional.interpolate(flat, size=(pixels.shape[1], pixels.shape[2]), mode="bilinear")


def grey_out(pixels: Any, mask: Any) -> Any:
    """A copy of the RGB pixels with the masked area (mask rounded to 0/1) set to 0.5 grey."""
    keep = (1.0 - mask.round()).squeeze(1).unsqueeze(-1)
    return (pixels[..., :3] - 0.5) * keep + 0.5


def grow_mask(mask: Any, grow_by: int) -> Any:
    """Dilate a rounded (B, 1, H, W) mask with a grow_by x grow_by box, same size out (it keeps the
    inpainted area's edge seamless in latent space)."""
    import torch

    if grow_by == 0:
        return mask
    kernel = torch.ones((1, 1, grow_by, grow_by), dtype=mask.dtype, device=mask.device)
    padding = math.ceil((grow_by - 1) / 2)
    grown = torch.clamp(torch.nn.functional.conv2d(mask.round(), kernel, padding=padding), 0, 1)
    return grown[:, :, : mask.shape[2], : mask.shape[3]]  # an even box adds a row and a column


# -- nodes ---------------------------------------------------------------------------------------------


class VAEDecode(Node):
    """Decodes latent images back into pixel space images."""

    spec = NodeSpec(
        id="VAEDecode",
        display_name="VAE Decode",
        category="latent",
        inputs=(
            Input("samples", "LATENT", tooltip="The latent to be decoded."),
            Input("vae", "VAE", tooltip="The VAE model used for decoding the latent."),
        ),
        outputs=(Output("IMAGE", tooltip="The decoded image."),),
    )

    def run(self, ctx: NodeRuntime, samples: Latent, vae: Any) -> tuple[Any]:
        return (_need_vae(vae).decode(samples["samples"]),)


class VAEEncode(Node):
    spec = NodeSpec(
        id="VAEEncode",
        display_name="VAE Encode",
        category="latent",
        inputs=(Input("pixels", "IMAGE"), Input("vae", "VAE")),
        outputs=(Output("LATENT"),),
    )

    def run(self, ctx: NodeRuntime, pixels: Any, vae: Any) -> tuple[Latent]:
        return ({"samples": _need_vae(vae).encode(pixels[:, :, :, :3])},)


class VAEDecodeTiled(Node):
    spec = NodeSpec(
        id="VAEDecodeTiled",
        display_name="VAE Decode (Tiled)",
        category="_for_testing",
        inputs=(
            Input("samples", "LATENT"),
            Input("vae", "VAE"),
            Int("tile_size", 512, min=64, max=4096, step=32),
            Int("overlap", 64, min=0, max=4096, step=32),
            Int(
                "temporal_size",
                64,
                min=8,
                max=4096,
                step=4,
                tooltip="Only used for video VAEs: Amount of frames to decode at a time.",
            ),
            Int(
                "temporal_overlap",
                8,
                min=4,
                max=4096,
                step=4,
                tooltip="Only used for video VAEs: Amount of frames to overlap.",
            ),
        ),
        outputs=(Output("IMAGE"),),
    )

    def run(self, ctx: NodeRuntime, samples: Latent, vae: Any, tile_size: int, overlap: int = 64,
            temporal_size: int = 64, temporal_overlap: int = 8) -> tuple[Any]:  # fmt: skip
        vae = _need_vae(vae)
        if tile_size < overlap * 4:
            overlap = tile_size // 4
        f = vae.downscale_ratio  # sizes are given in pixels; the decoder tiles the latent
        return (
            vae.decode_tiled(samples["samples"], tile_x=tile_size // f, tile_y=tile_size // f, overlap=overlap // f),
        )


class VAEEncodeTiled(Node):
    spec = NodeSpec(
        id="VAEEncodeTiled",
        display_name="VAE Encode (Tiled)",
        category="_for_testing",
        inputs=(
            Input("pixels", "IMAGE"),
            Input("vae", "VAE"),
            Int("tile_size", 512, min=64, max=4096, step=64),
            Int("overlap", 64, min=0, max=4096, step=32),
            Int(
                "temporal_size",
                64,
                min=8,
                max=4096,
                step=4,
                tooltip="Only used for video VAEs: Amount of frames to encode at a time.",
            ),
            Int(
                "temporal_overlap",
                8,
                min=4,
                max=4096,
                step=4,
                tooltip="Only used for video VAEs: Amount of frames to overlap.",
            ),
        ),
        outputs=(Output("LATENT"),),
    )

    def run(self, ctx: NodeRuntime, pixels: Any, vae: Any, tile_size: int, overlap: int,
            temporal_size: int = 64, temporal_overlap: int = 8) -> tuple[Latent]:  # fmt: skip
        latent = _need_vae(vae).encode_tiled(pixels[:, :, :, :3], tile_x=tile_size, tile_y=tile_size, overlap=overlap)
        return ({"samples": latent},)


class VAEEncodeForInpaint(Node):
    spec = NodeSpec(
        id="VAEEncodeForInpaint",
        display_name="VAE Encode (for Inpainting)",
        category="latent/inpaint",
        inputs=(
            Input("pixels", "IMAGE"),
            Input("vae", "VAE"),
            Input("mask", "MASK"),
            Int("grow_mask_by", 6, min=0, max=64, step=1),
        ),
        outputs=(Output("LATENT"),),
    )

    def run(self, ctx: NodeRuntime, pixels: Any, vae: Any, mask: Any, grow_mask_by: int = 6) -> tuple[Latent]:
        vae = _need_vae(vae)
        pixels, mask = crop_to_multiple(pixels, pixel_mask(mask, pixels), vae.downscale_ratio)
        noise_mask = grow_mask(mask, grow_mask_by)
        latent = vae.encode(grey_out(pixels, mask))
        return ({"samples": latent, "noise_mask": noise_mask.round()},)


class InpaintModelConditioning(Node):
    spec = NodeSpec(
        id="InpaintModelConditioning",
        category="conditioning/inpaint",
        inputs=(
            Input("positive", "CONDITIONING"),
            Input("negative", "CONDITIONING"),
            Input("vae", "VAE"),
            Input("pixels", "IMAGE"),
            Input("mask", "MASK"),
            Boolean(
                "noise_mask",
                True,
                tooltip="Add a noise mask to the latent so sampling will only happen within the mask. "
                "Might improve results or completely break things depending on the model.",
            ),
        ),
        outputs=(Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"), Output("LATENT", "latent")),
    )

    def run(self, ctx: NodeRuntime, positive: list, negative: list, vae: Any, pixels: Any, mask: Any,
            noise_mask: bool = True) -> tuple[list, list, Latent]:  # fmt: skip
        vae = _need_vae(vae)
        full_mask = pixel_mask(mask, pixels)
        cropped, mask = crop_to_multiple(pixels, full_mask, 8)
        concat_latent = vae.encode(grey_out(cropped, mask))
        latent: Latent = {"samples": vae.encode(pixels)}
        if noise_mask:
            latent["noise_mask"] = mask
        extra = {"concat_latent_image": concat_latent, "concat_mask": mask}
        out = [[[cond, {**options, **extra}] for cond, options in c] for c in (positive, negative)]
        return out[0], out[1], latent


NODES = [VAEDecode, VAEEncode, VAEDecodeTiled, VAEEncodeTiled, VAEEncodeForInpaint, InpaintModelConditioning]

__all__ = [
    "NODES",
    "InpaintModelConditioning",
    "VAEDecode",
    "VAEDecodeTiled",
    "VAEEncode",
    "VAEEncodeForInpaint",
    "VAEEncodeTiled",
    "crop_to_multiple",
    "grey_out",
    "grow_mask",
    "pixel_mask",
]
