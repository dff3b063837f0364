"""TAESD decoder: the tiny autoencoder's decoder that turns SD latents into small RGB previews.

Architecture (madebyollin/taesd; ComfyUI's comfy/taesd/taesd.py), one nn.Sequential whose indices
are the checkpoint's key names (`taesd_decoder.safetensors`, `taesdxl_decoder.safetensors` in
models/vae_approx/):

    0 Clamp (tanh(x / 3) * 3)   1 conv latent->64 (+bias)   2 ReLU
    3-5 Block x3    6 Upsample x2 (nearest)    7 conv 64->64 (no bias)
    8-10 Block x3   11 Upsample                12 conv (no bias)
    13-15 Block x3  16 Upsample                17 conv (no bias)
    18 Block        19 conv 64->3 (+bias)

A Block is conv-ReLU-conv-ReLU-conv (`conv.0`, `conv.2`, `conv.4`, each 3x3 with bias) plus the
input (an identity skip: every block here is 64 -> 64, so there are no `skip` weights), then ReLU.
All convolutions are 3x3 with padding 1, so the output is 8x the latent's size.

The decoder takes latents in the diffusion model's space (the sampler's x0, VAE latent x scale
factor); `decode` maps its 0..1 output to -1..1 as ComfyUI's TAESD.decode does (vae_scale 1, shift
0 for previews). The latent channel count is read from the weights (`1.weight`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from core.errors import ModelError

log = logging.getLogger(__name__)

WIDTH = 64
"""Channels of every hidden layer of the released TAESD decoders."""
STAGES = 3
"""Upsample stages (each x2): 8x in all, the KL-f8 VAE's factor."""
FIRST_CONV_KEY = "1.weight"


def _conv(n_in: int, n_out: int, *, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias)


class Clamp(nn.Module):
    """Soft clamp of the input latent to about +-3 (keeps outliers from blowing up the preview)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """conv-ReLU-conv-ReLU-conv plus an identity skip, then ReLU (64 -> 64 only)."""

    def __init__(self, channels: int = WIDTH) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            _conv(channels, channels), nn.ReLU(), _conv(channels, channels), nn.ReLU(), _conv(channels, channels)
        )
        self.skip = nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(self.conv(x) + self.skip(x))


class TAESDDecoder(nn.Sequential):
    """The decoder; `state_dict()` keys equal the released file's (`1.weight`, `3.conv.0.weight`...)."""

    def __init__(self, latent_channels: int = 4) -> None:
        layers: list[nn.Module] = [Clamp(), _conv(latent_channels, WIDTH), nn.ReLU()]
        for _ in range(STAGES):
            layers += [Block(), Block(), Block(), nn.Upsample(scale_factor=2), _conv(WIDTH, WIDTH, bias=False)]
        layers += [Block(), _conv(WIDTH, 3)]
        super().__init__(*layers)
        self.latent_channels = latent_channels

    @property
    def dtype(self) -> torch.dtype:
        return self[1].weight.dtype

    @property
    def device(self) -> torch.device:
        return self[1].weight.device

    def decode(self, latent: Tensor) -> Tensor:
        """(B, C, h, w) model-space latent -> (B, 3, 8h, 8w) image, about -1..1 (not clamped)."""
        if latent.ndim != 4 or latent.shape[1] != self.latent_channels:
            raise ModelError(
                f"TAESD decoder expects latents of shape (B, {self.latent_channels}, h, w); got {tuple(latent.shape)}"
            )
        out = self(latent.to(self.device, self.dtype))
        return out.sub(0.5).mul(2)


def latent_channels_of(sd: Mapping[str, Tensor]) -> int:
    """The decoder's input channels, from its first convolution (ModelError if it is not a decoder)."""
    from diffusion.families.base import shape_of

    if FIRST_CONV_KEY not in sd:
        sample = ", ".join(sorted(sd)[:4]) or "none"
        raise ModelError(f"not a TAESD decoder: no key '{FIRST_CONV_KEY}' (first keys: {sample})")
    shape = shape_of(sd, FIRST_CONV_KEY)
    if len(shape) != 4 or shape[0] != WIDTH:
        raise ModelError(f"not a TAESD decoder: '{FIRST_CONV_KEY}' has shape {list(shape)}, expected [64, C, 3, 3]")
    return int(shape[1])


def decoder_from_state_dict(sd: Mapping[str, Tensor], dtype: torch.dtype = torch.float32) -> TAESDDecoder:
    """Build the decoder the weights describe and load them strictly (ModelError on any mismatch)."""
    from diffusion.loading import build_module

    channels = latent_channels_of(sd)
    module = build_module(lambda: TAESDDecoder(channels), sd, dtype, "TAESD decoder")
    return module  # type: ignore[return-value]


def load_decoder(path: str | Path, dtype: torch.dtype = torch.float32) -> TAESDDecoder:
    """A TAESD decoder file (.safetensors or a weights-only .pth), on the CPU."""
    from diffusion.loading import open_state_dict

    with open_state_dict(path) as sd:
        try:
            decoder = decoder_from_state_dict(sd, dtype)
        except ModelError as exc:
            raise ModelError(f"{Path(path).name}: {exc}") from exc
    log.debug("loaded TAESD decoder %s (%d latent channels)", Path(path).name, decoder.latent_channels)
    return decoder


__all__ = [
    "Block",
    "Clamp",
    "TAESDDecoder",
    "decoder_from_state_dict",
    "latent_channels_of",
    "load_decoder",
]
