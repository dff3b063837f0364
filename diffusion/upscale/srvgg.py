"""SRVGGNetCompact: Real-ESRGAN's compact VGG-style network (realesr-general-x4v3,
realesr-animevideov3 and community "compact" models).

Key layout `body.N`: conv (in -> nf), PReLU, then `num_conv` times (conv nf -> nf, PReLU), then a
last conv to out * scale^2 channels. The output is pixel-shuffled by `scale` and added to the
nearest-upsampled input, so the network learns only the residual.

Only the PReLU variant can be read from a state dict (ReLU / LeakyReLU activations leave no keys
behind to tell them apart); every released model uses PReLU.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from core.errors import ModelError

_BODY = re.compile(r"^body\.(\d+)\.(weight|bias)$")


@dataclass(frozen=True)
class SRVGGConfig:
    in_channels: int = 3
    out_channels: int = 3
    nf: int = 64
    num_conv: int = 16
    upscale: int = 4

    name = "SRVGGNetCompact"

    @property
    def scale(self) -> int:
        return self.upscale

    def describe(self) -> str:
        return f"SRVGGNetCompact x{self.scale}, nf {self.nf}, {self.num_conv} body convs"

    def build(self) -> SRVGGNetCompact:
        return SRVGGNetCompact(self)

    def rename(self, key: str) -> str:
        return key


class SRVGGNetCompact(nn.Module):
    """(B, C, H, W) in 0..1 -> (B, C, H*scale, W*scale)."""

    def __init__(self, config: SRVGGConfig) -> None:
        super().__init__()
        self.config = config
        nf = config.nf
        layers: list[nn.Module] = [nn.Conv2d(config.in_channels, nf, 3, 1, 1), nn.PReLU(nf)]
        for _ in range(config.num_conv):
            layers += [nn.Conv2d(nf, nf, 3, 1, 1), nn.PReLU(nf)]
        layers.append(nn.Conv2d(nf, config.out_channels * config.upscale**2, 3, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = F.pixel_shuffle(self.body(x), self.config.upscale)
        return out + F.interpolate(x, scale_factor=self.config.upscale, mode="nearest")


def detect(sd: Mapping[str, Any]) -> SRVGGConfig | None:
    """The config of a SRVGGNetCompact state dict, or None if the keys are not that layout."""
    if "body.0.weight" not in sd or "body.1.weight" not in sd:
        return None
    if any(not _BODY.match(key) for key in sd):
        return None  # other networks also have a `body.N` list, but never only that
    first, prelu = sd["body.0.weight"], sd["body.1.weight"]
    if first.ndim != 4 or prelu.ndim != 1:
        return None
    last_index = max(int(m.group(1)) for m in map(_BODY.match, sd) if m)
    num_conv, rest = divmod(last_index - 2, 2)
    last = sd[f"body.{last_index}.weight"]
    in_channels, nf = first.shape[1], first.shape[0]
    upscale = math.isqrt(last.shape[0] // in_channels)
    if rest or num_conv < 0 or last.ndim != 4 or upscale * upscale * in_channels != last.shape[0]:
        raise ModelError(
            f"SRVGGNetCompact state dict: the last layer body.{last_index} has shape {list(last.shape)}, "
            f"which is not a conv to {in_channels} x scale^2 channels after an even number of layers"
        )
    return SRVGGConfig(in_channels=in_channels, out_channels=in_channels, nf=nf, num_conv=num_conv, upscale=upscale)


__all__ = ["SRVGGConfig", "SRVGGNetCompact", "detect"]
