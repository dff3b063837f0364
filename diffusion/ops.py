"""Layer factories handed to the architectures as `operations=` (never monkey-patched).

Three sets, all with the same constructor signatures as torch.nn:
- `PLAIN`: torch.nn itself (default init). Right for tests and for anything built from scratch.
- `SKIP_INIT`: the same layers without the random init. A model that is about to receive a
  checkpoint's weights does not need kaiming-uniform on 2.6 billion numbers first (seconds on a
  CPU); ComfyUI skips it for the same reason.
- `MANUAL_CAST`: SKIP_INIT plus a cast of weight and bias to the input's dtype and device on every
  call. Only for weights kept in a storage dtype that cannot compute (fp8) or kept on another
  device (low-memory offload); the normal path casts once at load and never per step.

`seeded_init_` fills a module with the random-checkpoint recipe (shared/tools/
make_random_checkpoint.py): conv/linear weights randn/sqrt(fan_in), norm weights 1, biases 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F


@dataclass(frozen=True)
class Operations:
    """The four layer classes the UNet and the VAE build from."""

    name: str
    Linear: type[nn.Linear]
    Conv2d: type[nn.Conv2d]
    GroupNorm: type[nn.GroupNorm]
    LayerNorm: type[nn.LayerNorm]


class _NoInitLinear(nn.Linear):
    def reset_parameters(self) -> None:  # weights come from a checkpoint
        return None


class _NoInitConv2d(nn.Conv2d):
    def reset_parameters(self) -> None:
        return None


class _NoInitGroupNorm(nn.GroupNorm):
    def reset_parameters(self) -> None:
        return None


class _NoInitLayerNorm(nn.LayerNorm):
    def reset_parameters(self) -> None:
        return None


def _cast(param: Tensor | None, like: Tensor) -> Tensor | None:
    if param is None:
        return None
    return param.to(device=like.device, dtype=like.dtype, non_blocking=True)


class _CastLinear(_NoInitLinear):
    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, _cast(self.weight, x), _cast(self.bias, x))


class _CastConv2d(_NoInitConv2d):
    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, _cast(self.weight, x), _cast(self.bias, x))


class _CastGroupNorm(_NoInitGroupNorm):
    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(x, self.num_groups, _cast(self.weight, x), _cast(self.bias, x), self.eps)


class _CastLayerNorm(_NoInitLayerNorm):
    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, _cast(self.weight, x), _cast(self.bias, x), self.eps)


PLAIN = Operations("plain", nn.Linear, nn.Conv2d, nn.GroupNorm, nn.LayerNorm)
SKIP_INIT = Operations("skip_init", _NoInitLinear, _NoInitConv2d, _NoInitGroupNorm, _NoInitLayerNorm)
MANUAL_CAST = Operations("manual_cast", _CastLinear, _CastConv2d, _CastGroupNorm, _CastLayerNorm)


@torch.no_grad()
def seeded_init_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every parameter deterministically (CPU generator), in place; returns the module.

    Matrices and kernels (ndim >= 2): randn / sqrt(fan_in); 1-D weights of norm layers: 1;
    every other 1-D parameter (biases): 0. Parameters are visited in `named_parameters()` order
    so the same module and seed always give the same numbers.
    """
    gen = torch.Generator("cpu").manual_seed(seed)
    for name, param in module.named_parameters():
        if param.ndim >= 2:
            fan_in = math.prod(param.shape[1:])
            values = torch.randn(param.shape, generator=gen, dtype=torch.float32) / math.sqrt(fan_in)
            param.copy_(values.to(param.dtype))
        elif name.endswith("weight"):
            param.fill_(1.0)
        else:
            param.zero_()
    return module
