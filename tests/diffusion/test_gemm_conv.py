"""The small-input GEMM convolution path equals torch's convolution."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from diffusion import layers
from diffusion.layers import GemmConv2d, gemm_conv2d


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "size"),
    [(3, 1, 1, 4), (3, 2, 1, 4), (1, 1, 0, 2), (3, 1, 0, 5), (3, 2, 0, 7)],
)
def test_gemm_conv2d_matches_conv2d(kernel: int, stride: int, padding: int, size: int) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, size, size, generator=gen)
    weight = torch.randn(5, 6, kernel, kernel, generator=gen)
    bias = torch.randn(5, generator=gen)
    ours = gemm_conv2d(x, weight, bias, (stride, stride), (padding, padding))
    ref = F.conv2d(x, weight, bias, stride=stride, padding=padding)
    assert ours.is_contiguous()
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_gemm_conv_module_takes_the_fast_path_only_for_small_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layers, "GEMM_CONV_MIN_WEIGHT", 1)
    calls = []
    real = layers.gemm_conv2d
    monkeypatch.setattr(layers, "gemm_conv2d", lambda *a: calls.append(1) or real(*a))
    conv = GemmConv2d(4, 8, 3, padding=1)
    small, large = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 16, 16)
    torch.testing.assert_close(conv(small), F.conv2d(small, conv.weight, conv.bias, padding=1), rtol=1e-5, atol=1e-5)
    assert calls == [1]
    conv(large)  # 2 x 16 x 16 positions: the normal path
    assert calls == [1]
