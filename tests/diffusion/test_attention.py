"""attention(): SDPA dispatch vs the plain formula; transformer blocks; timestep embedding."""

from __future__ import annotations

import math

import pytest
import torch

from diffusion.attention import (
    BasicTransformerBlock,
    CrossAttention,
    SpatialTransformer,
    attention,
    attention_math,
)
from diffusion.layers import timestep_embedding
from diffusion.ops import seeded_init_


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=_gen(seed))


@pytest.mark.parametrize(("heads", "nq", "nk"), [(1, 16, 16), (2, 16, 7), (8, 33, 77), (5, 9, 1)])
def test_sdpa_matches_plain_formula(heads: int, nq: int, nk: int) -> None:
    width = heads * 8
    q, k, v = _randn(3, nq, width, seed=1), _randn(3, nk, width, seed=2), _randn(3, nk, width, seed=3)
    out = attention(q, k, v, heads)
    assert out.shape == (3, nq, width)
    torch.testing.assert_close(out, attention_math(q, k, v, heads), rtol=1e-5, atol=1e-5)


def test_plain_formula_is_per_head_softmax() -> None:
    # The reference itself, against a loop over heads written from the definition.
    heads, d = 3, 4
    q, k, v = _randn(1, 5, heads * d, seed=4), _randn(1, 6, heads * d, seed=5), _randn(1, 6, heads * d, seed=6)
    expected = []
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        weights = torch.softmax(q[0, :, sl] @ k[0, :, sl].T / math.sqrt(d), dim=-1)
        expected.append(weights @ v[0, :, sl])
    torch.testing.assert_close(attention_math(q, k, v, heads)[0], torch.cat(expected, dim=-1))


@pytest.mark.parametrize("mask_ndim", [2, 3])
def test_boolean_mask_hides_keys(mask_ndim: int) -> None:
    heads, width = 2, 8
    q, k, v = _randn(2, 4, width, seed=7), _randn(2, 6, width, seed=8), _randn(2, 6, width, seed=9)
    keep = torch.ones(4, 6, dtype=torch.bool)
    keep[:, 3:] = False
    mask = keep if mask_ndim == 2 else keep.expand(2, 4, 6)
    out = attention(q, k, v, heads, mask=mask)
    torch.testing.assert_close(out, attention_math(q, k, v, heads, mask=mask), rtol=1e-5, atol=1e-5)
    # Hidden keys must not matter: attending only the first three keys gives the same result.
    torch.testing.assert_close(out, attention(q, k[:, :3], v[:, :3], heads), rtol=1e-5, atol=1e-5)


def test_additive_float_mask() -> None:
    heads, width = 2, 8
    q, k, v = _randn(1, 4, width, seed=10), _randn(1, 5, width, seed=11), _randn(1, 5, width, seed=12)
    bias = _randn(4, 5, seed=13)
    out = attention(q, k, v, heads, mask=bias)
    torch.testing.assert_close(out, attention_math(q, k, v, heads, mask=bias), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, attention(q, k, v, heads))


def test_width_not_divisible_by_heads_is_an_error() -> None:
    x = _randn(1, 4, 10)
    with pytest.raises(ValueError, match="not divisible by 3 heads"):
        attention(x, x, x, 3)


def test_cross_attention_keys_and_shapes() -> None:
    attn = CrossAttention(16, context_dim=12, heads=2, dim_head=4)
    shapes = {k: tuple(v.shape) for k, v in attn.state_dict().items()}
    assert shapes == {
        "to_q.weight": (8, 16),
        "to_k.weight": (8, 12),
        "to_v.weight": (8, 12),
        "to_out.0.weight": (16, 8),
        "to_out.0.bias": (16,),
    }
    seeded_init_(attn, 1)
    x, ctx = _randn(2, 9, 16, seed=14), _randn(2, 5, 12, seed=15)
    with torch.no_grad():
        out = attn(x, ctx)
        expected = attn.to_out(attention_math(attn.to_q(x), attn.to_k(ctx), attn.to_v(ctx), 2))
    assert out.shape == (2, 9, 16)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_transformer_block_uses_context_and_is_residual() -> None:
    block = seeded_init_(BasicTransformerBlock(16, heads=2, dim_head=8, context_dim=12), 2)
    x = _randn(1, 6, 16, seed=16)
    with torch.no_grad():
        a = block(x, _randn(1, 3, 12, seed=17))
        b = block(x, _randn(1, 3, 12, seed=18))
    assert a.shape == x.shape
    assert not torch.allclose(a, b), "the text context must change the output"
    # Zeroing every sub-layer's output projection leaves only the residual path.
    for layer in (block.attn1.to_out[0], block.attn2.to_out[0], block.ff.net[2]):
        torch.nn.init.zeros_(layer.weight)
    with torch.no_grad():
        torch.testing.assert_close(block(x, _randn(1, 3, 12, seed=17)), x)


def _conv_to_linear_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v[:, :, 0, 0] if k.startswith(("proj_in.weight", "proj_out.weight")) else v) for k, v in state.items()}


def test_spatial_transformer_conv_and_linear_layouts() -> None:
    conv = seeded_init_(SpatialTransformer(16, 2, 8, depth=2, context_dim=12, norm_groups=4), 3)
    linear = SpatialTransformer(16, 2, 8, depth=2, context_dim=12, norm_groups=4, use_linear=True)
    conv_shapes = {k: tuple(v.shape) for k, v in conv.state_dict().items()}
    linear_shapes = {k: tuple(v.shape) for k, v in linear.state_dict().items()}
    assert conv_shapes.keys() == linear_shapes.keys()
    differing = {k for k in conv_shapes if conv_shapes[k] != linear_shapes[k]}
    assert differing == {"proj_in.weight", "proj_out.weight"}
    assert conv_shapes["proj_in.weight"] == (16, 16, 1, 1) and linear_shapes["proj_in.weight"] == (16, 16)
    assert "transformer_blocks.1.ff.net.0.proj.weight" in conv_shapes

    # Same weights in the other layout compute the same function.
    linear.load_state_dict(_conv_to_linear_state(conv.state_dict()))
    x, ctx = _randn(2, 16, 5, 7, seed=19), _randn(2, 4, 12, seed=20)
    with torch.no_grad():
        a, b = conv(x, ctx), linear(x, ctx)
    assert a.shape == x.shape
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a, x)


@pytest.mark.parametrize("dim", [8, 320, 7])
def test_timestep_embedding_is_cos_then_sin(dim: int) -> None:
    t = torch.tensor([0.0, 1.0, 37.5, 999.0])
    emb = timestep_embedding(t, dim)
    assert emb.shape == (4, dim) and emb.dtype == torch.float32
    half = dim // 2
    freqs = [math.exp(-math.log(10000.0) * i / half) for i in range(half)]
    for row, step in enumerate(t.tolist()):
        expected = [math.cos(step * f) for f in freqs] + [math.sin(step * f) for f in freqs]
        if dim % 2:
            expected.append(0.0)
        torch.testing.assert_close(emb[row], torch.tensor(expected), rtol=0, atol=2e-4)
    # t = 0: cos half all ones, sin half all zeros (the LDM order, not diffusers' flip_sin_to_cos=False).
    assert torch.all(emb[0, :half] == 1) and torch.all(emb[0, half : 2 * half] == 0)
