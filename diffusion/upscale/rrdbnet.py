"""RRDBNet: ESRGAN and Real-ESRGAN (Wang et al. 2018, "ESRGAN"; Wang et al. 2021, "Real-ESRGAN").

One module in BasicSR's key layout (`conv_first`, `body.N.rdbK.convJ`, `conv_body`, `conv_upN`,
`conv_hr`, `conv_last`) loads all three layouts found in the wild, renamed at load time:

- BasicSR / Real-ESRGAN: the layout itself (`params_ema` / `params` wrappers are unwrapped by
  the loader). Real-ESRGAN x2 / x1 models pixel-unshuffle the input by 2 / 4 first, which shows
  as a `conv_first` with 4x / 16x the output channels (12 / 48 for RGB).
- ESRGAN "new arch" (xinntao/ESRGAN after 2019, BSRGAN, RealSR): `RRDB_trunk.N.RDBK.convJ`,
  `trunk_conv`, `upconvN`, `HRconv`.
- ESRGAN "old arch" (the original release and most community models): one flattened
  `model.N` sequence: 0 first conv, 1 the shortcut block whose `sub.0..nb-1` are the RRDBs
  (`RDBK.convJ.0`) and `sub.nb` the trunk conv, then per x2 upsample (nearest, conv, lrelu) at
  3, 6, ..., then the HR conv at 3n+2 and the last conv at 3n+4.

Every upsample step is nearest x2 then conv + LeakyReLU(0.2); dense blocks scale their residual
by 0.2, as in the paper.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.errors import ModelError
from diffusion.upscale.tiling import pad_to_multiple

_OLD_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_NEW_RDB = re.compile(r"^RRDB_trunk\.(\d+)\.RDB(\d)\.conv(\d)\.(weight|bias)$")
_BASICSR_RDB = re.compile(r"^body\.(\d+)\.rdb(\d)\.conv(\d)\.(weight|bias)$")
_OLD_TOP = re.compile(r"^model\.(\d+)\.(weight|bias)$")
_UPCONV = re.compile(r"^(?:conv_up|upconv)(\d+)\.(weight|bias)$")


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the block input and every earlier output (dense links)."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            features.append(F.leaky_relu(conv(torch.cat(features, 1)), 0.2))
        return self.conv5(torch.cat(features, 1)) * 0.2 + x


class RRDB(nn.Module):
    """Residual in residual dense block: three dense blocks, residual scaled by 0.2."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(nf, gc)
        self.rdb2 = ResidualDenseBlock(nf, gc)
        self.rdb3 = ResidualDenseBlock(nf, gc)

    def forward(self, x: Tensor) -> Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


@dataclass(frozen=True)
class RRDBConfig:
    """Hyper-parameters read from a state dict (see `detect`)."""

    in_channels: int = 3
    out_channels: int = 3
    nf: int = 64
    nb: int = 23
    gc: int = 32
    upsamples: int = 2
    """Nearest-x2 + conv stages after the trunk."""
    unshuffle: int = 1
    """Pixel-unshuffle factor applied to the input first (Real-ESRGAN x2: 2, x1: 4)."""
    layout: str = "basicsr"
    """Which key layout the file uses: "basicsr", "new" or "old" (see the module doc)."""

    name = "ESRGAN"

    @property
    def scale(self) -> int:
        return 2**self.upsamples // self.unshuffle

    def describe(self) -> str:
        unshuffle = f", pixel-unshuffle {self.unshuffle}" if self.unshuffle > 1 else ""
        return f"ESRGAN ({self.layout} layout) x{self.scale}, nf {self.nf}, nb {self.nb}{unshuffle}"

    def build(self) -> RRDBNet:
        return RRDBNet(self)

    def rename(self, key: str) -> str:
        """The module's key for a file key (identity for the BasicSR layout)."""
        if self.layout == "new":
            return _rename_new(key)
        if self.layout == "old":
            return _rename_old(key, self.nb, self.upsamples)
        return key


class RRDBNet(nn.Module):
    """(B, C, H, W) in 0..1 -> (B, C_out, H*scale, W*scale)."""

    def __init__(self, config: RRDBConfig) -> None:
        super().__init__()
        self.config = config
        nf = config.nf
        self.conv_first = nn.Conv2d(config.in_channels * config.unshuffle**2, nf, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(nf, config.gc) for _ in range(config.nb)))
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        self.up_names = tuple(f"conv_up{i + 1}" for i in range(config.upsamples))
        for name in self.up_names:
            self.add_module(name, nn.Conv2d(nf, nf, 3, 1, 1))
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, config.out_channels, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        factor = self.config.unshuffle
        if factor > 1:
            # Real-ESRGAN pads (reflect) to a multiple of the factor and crops the result.
            x = F.pixel_unshuffle(pad_to_multiple(x, factor), factor)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for name in self.up_names:
            conv = getattr(self, name)
            feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        out = self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))
        if factor > 1:
            scale = self.config.scale
            out = out[..., : height * scale, : width * scale]
        return out


# -- detection ------------------------------------------------------------------------------------


def detect(sd: Mapping[str, Any]) -> RRDBConfig | None:
    """The RRDBNet config of a state dict in any of the three layouts, or None if it is none of
    them. ModelError when it looks like ESRGAN but cannot be read (say what is odd)."""
    if "model.0.weight" in sd and "model.1.sub.0.RDB1.conv1.0.weight" in sd:
        layout, rdb = "old", _OLD_RDB
    elif "conv_first.weight" in sd and "RRDB_trunk.0.RDB1.conv1.weight" in sd:
        layout, rdb = "new", _NEW_RDB
    elif "conv_first.weight" in sd and "body.0.rdb1.conv1.weight" in sd:
        layout, rdb = "basicsr", _BASICSR_RDB
    else:
        return None
    if any(".conv1x1." in key for key in sd):
        raise ModelError("ESRGAN+ models (RRDB blocks with conv1x1 layers) are not supported")
    blocks = {int(m.group(1)) for m in map(rdb.match, sd) if m}
    nb = max(blocks) + 1
    if blocks != set(range(nb)):
        raise ModelError(f"ESRGAN state dict: RRDB blocks are not numbered 0..{nb - 1} (found {sorted(blocks)})")
    if layout == "old":
        first, upsamples, last = _old_layout(sd, nb)
    else:
        first, last = sd["conv_first.weight"], sd.get("conv_last.weight")
        if last is None:
            raise ModelError("ESRGAN state dict has conv_first but no conv_last.weight")
        ups = {int(m.group(1)) for m in map(_UPCONV.match, sd) if m}
        upsamples = len(ups)
        if ups != set(range(1, upsamples + 1)):
            raise ModelError(f"ESRGAN state dict: upsample convs are not numbered 1..{upsamples} (found {sorted(ups)})")
    return _config(layout, first, last, nb, upsamples, gc=_shape(sd, _rdb_conv1(layout))[0])


def _config(layout: str, first: Tensor, last: Tensor, nb: int, upsamples: int, gc: int) -> RRDBConfig:
    nf, in_ch = first.shape[0], first.shape[1]
    out_ch = last.shape[0]
    unshuffle = 1
    for factor in (2, 4):
        if in_ch == out_ch * factor * factor and 2**upsamples >= factor:
            unshuffle = factor
    return RRDBConfig(
        in_channels=in_ch // unshuffle**2,
        out_channels=out_ch,
        nf=nf,
        nb=nb,
        gc=gc,
        upsamples=upsamples,
        unshuffle=unshuffle,
        layout=layout,
    )


def _rdb_conv1(layout: str) -> str:
    return {
        "old": "model.1.sub.0.RDB1.conv1.0.weight",
        "new": "RRDB_trunk.0.RDB1.conv1.weight",
        "basicsr": "body.0.rdb1.conv1.weight",
    }[layout]


def _shape(sd: Mapping[str, Any], key: str) -> tuple[int, ...]:
    return tuple(sd[key].shape)


def _old_layout(sd: Mapping[str, Any], nb: int) -> tuple[Tensor, int, Tensor]:
    """(first conv, number of x2 upsamples, last conv) of an old-arch sequence."""
    indices = sorted({int(m.group(1)) for m in map(_OLD_TOP.match, sd) if m})
    last_index = indices[-1]
    upsamples, rest = divmod(last_index - 4, 3)
    expected = [0, *(3 * (i + 1) for i in range(max(upsamples, 0))), last_index - 2, last_index]
    if rest or upsamples < 0 or indices != expected:
        raise ModelError(
            f"ESRGAN (old arch) state dict: top-level layers model.{indices} do not form the "
            f"first conv, x2 upsample convs, HR conv and last conv (expected model.{expected}); "
            "x3 or pixel-shuffle ESRGAN variants are not supported"
        )
    if f"model.1.sub.{nb}.weight" not in sd:
        raise ModelError(f"ESRGAN (old arch) state dict has {nb} RRDB blocks but no trunk conv model.1.sub.{nb}")
    return sd["model.0.weight"], upsamples, sd[f"model.{last_index}.weight"]


def _rename_new(key: str) -> str:
    match = _NEW_RDB.match(key)
    if match:
        block, rdb, conv, kind = match.groups()
        return f"body.{block}.rdb{rdb}.conv{conv}.{kind}"
    match = _UPCONV.match(key)
    if match:
        return f"conv_up{match.group(1)}.{match.group(2)}"
    head, _, kind = key.rpartition(".")
    renamed = {"trunk_conv": "conv_body", "HRconv": "conv_hr"}.get(head)
    return f"{renamed}.{kind}" if renamed else key


def _rename_old(key: str, nb: int, upsamples: int) -> str:
    match = _OLD_RDB.match(key)
    if match:
        block, rdb, conv, kind = match.groups()
        return f"body.{block}.rdb{rdb}.conv{conv}.{kind}"
    if key.startswith(f"model.1.sub.{nb}."):
        return "conv_body." + key.rsplit(".", 1)[1]
    match = _OLD_TOP.match(key)
    if not match:
        return key
    index, kind = int(match.group(1)), match.group(2)
    names = {0: "conv_first", 3 * upsamples + 2: "conv_hr", 3 * upsamples + 4: "conv_last"}
    names.update({3 * (i + 1): f"conv_up{i + 1}" for i in range(upsamples)})
    return f"{names[index]}.{kind}" if index in names else key


__all__ = ["RRDB", "RRDBConfig", "RRDBNet", "ResidualDenseBlock", "detect"]
