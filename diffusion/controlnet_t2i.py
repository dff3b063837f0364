"""T2I-Adapter networks (TencentARC), full and light, in their original key layout.

An adapter sees only the hint image: pixel-unshuffle (8x, 16x for SDXL adapters), then four
levels of small residual blocks; each level's output is added to one UNet input block (and, for
SDXL, the last one to the middle block). Unlike a ControlNet it ignores the noisy latent, the
timestep and the text, so its features are computed once per hint and reused every step.

Layouts (keys):
- full (`Adapter`): conv_in, body.<i*nums_rb + j>.{in_conv?, block1, block2, skep?, down_opt.op?};
  the first block of a level may downsample (average pool, or a strided conv `down_opt.op`) and
  change the width (in_conv);
- light (`Adapter_light`): body.<level>.{in_conv, body.<k>.{block1, block2}, out_conv}, levels after
  the first start with an average pool.
Diffusers' FullAdapter / FullAdapterXL names (adapter.body.<i>.resnets.<j>. ...) are renamed here.

Feature order (what the UNet's control "input" list receives, consumed from its end): the level
outputs sit at the input block that ends each level (SD: blocks 2, 5, 8, 11 of 12; SDXL: 3, 5, 8
and the middle block), with None for the blocks in between -- the same list ComfyUI builds.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from core.errors import ModelError
from diffusion.families.base import StateDict, shape_of

log = logging.getLogger(__name__)

XL_INPUT_CHANNELS = (256, 768)
"""conv_in widths of SDXL adapters: 16x16 unshuffle of a 1- or 3-channel hint."""


def _avg_down(x: Tensor) -> Tensor:
    # Pads odd sizes by one before the 2x2 pool (counted as zeros), as the reference adapters do.
    return F.avg_pool2d(x, kernel_size=2, stride=2, padding=(x.shape[2] % 2, x.shape[3] % 2))


class _Downsample(nn.Module):
    """2x down: a strided 3x3 conv (key `op`) or an average pool."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else None

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x) if self.op is not None else _avg_down(x)


class _ResnetBlock(nn.Module):
    """[down] -> [in_conv] -> x + block2(relu(block1(x))) (+ skep(x) instead of x when present)."""

    def __init__(self, in_c: int, out_c: int, *, down: bool, ksize: int, sk: bool, use_conv: bool) -> None:
        super().__init__()
        pad = ksize // 2
        self.in_conv = nn.Conv2d(in_c, out_c, ksize, 1, pad) if in_c != out_c or not sk else None
        self.block1 = nn.Conv2d(out_c, out_c, 3, 1, 1)
        self.act = nn.ReLU()
        self.block2 = nn.Conv2d(out_c, out_c, ksize, 1, pad)
        self.skep = None if sk else nn.Conv2d(in_c, out_c, ksize, 1, pad)
        self.down_opt = _Downsample(in_c, use_conv) if down else None

    def forward(self, x: Tensor) -> Tensor:
        if self.down_opt is not None:
            x = self.down_opt(x)
        if self.in_conv is not None:
            x = self.in_conv(x)
        h = self.block2(self.act(self.block1(x)))
        return h + (self.skep(x) if self.skep is not None else x)


@dataclass(frozen=True)
class AdapterConfig:
    """What the weights say about an adapter (see adapter_config_from_state_dict)."""

    light: bool
    cin: int
    channels: tuple[int, ...]
    nums_rb: int
    ksize: int = 3
    sk: bool = True
    use_conv: bool = False
    xl: bool = False

    @property
    def unshuffle(self) -> int:
        return 16 if self.xl else 8

    @property
    def input_channels(self) -> int:
        return self.cin // (self.unshuffle * self.unshuffle)


class T2IAdapterModel(nn.Module):
    """The full adapter: forward(hint) -> {"input": [...], "middle": [...] (SDXL only)}."""

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.xl = config.xl
        self.unshuffle_amount = config.unshuffle
        self.input_channels = config.input_channels
        # SD adapters widen and downsample entering levels 1-3; SDXL ones widen entering levels 1
        # and 2 and downsample only entering level 2 (their 16x unshuffle starts one level down).
        widen = {1, 2} if config.xl else {1, 2, 3}
        down = {2} if config.xl else {1, 2, 3}
        chans = config.channels
        blocks = []
        for i in range(len(chans)):
            for j in range(config.nums_rb):
                in_c = chans[i - 1] if j == 0 and i in widen else chans[i]
                blocks.append(
                    _ResnetBlock(
                        in_c, chans[i], down=j == 0 and i in down,
                        ksize=config.ksize, sk=config.sk, use_conv=config.use_conv,
                    )
                )  # fmt: skip
        self.body = nn.ModuleList(blocks)
        self.conv_in = nn.Conv2d(config.cin, chans[0], 3, 1, 1)

    def forward(self, hint: Tensor) -> dict[str, list[Tensor | None]]:
        x = self.conv_in(F.pixel_unshuffle(hint, self.unshuffle_amount))
        features: list[Tensor | None] = []
        nums_rb = self.config.nums_rb
        for i in range(len(self.config.channels)):
            for j in range(nums_rb):
                x = self.body[i * nums_rb + j](x)
            # Placeholders for the input blocks between two level outputs.
            features += [None] * (_xl_gap(i) if self.xl else 2)
            features.append(x)
        features.reverse()
        if self.xl:
            return {"input": features[1:], "middle": features[:1]}
        return {"input": features}


def _xl_gap(level: int) -> int:
    return 3 if level == 0 else 2 if level == 2 else 1


class _LightResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.act = nn.ReLU()
        self.block2 = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.block2(self.act(self.block1(x))) + x


class _Extractor(nn.Module):
    """[avg pool] -> 1x1 in_conv -> light res blocks -> 1x1 out_conv."""

    def __init__(self, in_c: int, inter_c: int, out_c: int, nums_rb: int, down: bool) -> None:
        super().__init__()
        self.in_conv = nn.Conv2d(in_c, inter_c, 1, 1, 0)
        self.body = nn.Sequential(*[_LightResBlock(inter_c) for _ in range(nums_rb)])
        self.out_conv = nn.Conv2d(inter_c, out_c, 1, 1, 0)
        self.down = down

    def forward(self, x: Tensor) -> Tensor:
        if self.down:
            x = _avg_down(x)
        return self.out_conv(self.body(self.in_conv(x)))


class T2IAdapterLightModel(nn.Module):
    """The light adapter (inner width = level width / 4)."""

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.xl = False
        self.unshuffle_amount = config.unshuffle
        self.input_channels = config.input_channels
        chans = config.channels
        self.body = nn.ModuleList(
            _Extractor(config.cin if i == 0 else chans[i - 1], chans[i] // 4, chans[i], config.nums_rb, down=i > 0)
            for i in range(len(chans))
        )

    def forward(self, hint: Tensor) -> dict[str, list[Tensor | None]]:
        x = F.pixel_unshuffle(hint, self.unshuffle_amount)
        features: list[Tensor | None] = []
        for level in self.body:
            x = level(x)
            features += [None, None, x]
        features.reverse()
        return {"input": features}


# -- detection and key conversion -------------------------------------------------------------------


def is_t2i_adapter(sd: StateDict) -> bool:
    return any(k in sd for k in ("conv_in.weight", "body.0.in_conv.weight", "adapter.body.0.resnets.0.block1.weight"))


def adapter_diffusers_to_original(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Diffusers FullAdapter(XL) names -> the original ones (adapter.body.<i>.resnets.<j> ->
    body.<2i+j>, adapter.body.<i>.in_conv -> body.<2i>.in_conv, adapter.conv_in -> conv_in)."""
    out = {}
    resnet = re.compile(r"adapter\.body\.(\d+)\.resnets\.(\d+)\.(.*)")
    level = re.compile(r"adapter\.body\.(\d+)\.(.*)")
    for key, value in sd.items():
        if m := resnet.fullmatch(key):
            new = f"body.{int(m.group(1)) * 2 + int(m.group(2))}.{m.group(3)}"
        elif m := level.fullmatch(key):
            new = f"body.{int(m.group(1)) * 2}.{m.group(2)}"
        else:
            new = key.removeprefix("adapter.")
        out[new] = value
    return out


def _count(sd: StateDict, prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in sd if (m := pat.match(k))})


def adapter_config_from_state_dict(sd: StateDict) -> AdapterConfig:
    """Full or light adapter, widths, blocks per level and options, read from the weights."""
    if "body.0.in_conv.weight" in sd:
        levels = _count(sd, "body.")
        channels = tuple(shape_of(sd, f"body.{i}.out_conv.weight")[0] for i in range(levels))
        return AdapterConfig(
            light=True, cin=shape_of(sd, "body.0.in_conv.weight")[1], channels=channels,
            nums_rb=_count(sd, "body.0.body."),
        )  # fmt: skip
    if "conv_in.weight" not in sd:
        raise ModelError("not a T2I-Adapter: neither conv_in.weight (full) nor body.0.in_conv.weight (light)")
    cin = shape_of(sd, "conv_in.weight")[1]
    blocks = _count(sd, "body.")
    levels = 4
    if blocks % levels:
        raise ModelError(f"T2I-Adapter with {blocks} body blocks: expected a multiple of {levels} levels")
    nums_rb = blocks // levels
    channels = tuple(shape_of(sd, f"body.{i * nums_rb}.block1.weight")[0] for i in range(levels))
    return AdapterConfig(
        light=False, cin=cin, channels=channels, nums_rb=nums_rb,
        ksize=shape_of(sd, "body.0.block2.weight")[2], sk="body.0.skep.weight" not in sd,
        use_conv=any(k.endswith("down_opt.op.weight") for k in sd), xl=cin in XL_INPUT_CHANNELS,
    )  # fmt: skip


def build_adapter(config: AdapterConfig) -> nn.Module:
    return T2IAdapterLightModel(config) if config.light else T2IAdapterModel(config)


__all__ = [
    "AdapterConfig",
    "T2IAdapterLightModel",
    "T2IAdapterModel",
    "adapter_config_from_state_dict",
    "adapter_diffusers_to_original",
    "build_adapter",
    "is_t2i_adapter",
]
