"""Text encoding and conditioning nodes: CLIPTextEncode (sd15, sdxl), the SDXL encoders' size
fields, and the list/option operations of the Conditioning* nodes."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from nodes import conditioning as C
from tests.nodes.test_nodes_engine_fixtures import Engine, call, engine_fixture, session_engine_fixture  # noqa: F401


def cond(value: float, tokens: int = 77, width: int = 8, **options: Any) -> list:
    return [[torch.full((1, tokens, width), value), dict(options)]]


def test_clip_text_encode_is_the_clip_handles_encoding(engine: Engine) -> None:
    _, clip, _ = engine.load("sd15")
    (out,) = call(engine, C.CLIPTextEncode, text="a (red:1.3) apple", clip=clip)
    assert len(out) == 1
    tensor, options = out[0]
    assert tensor.shape == (1, 77, 64) and set(options) == {"pooled_output"}
    expected = clip.encode_from_tokens_scheduled(clip.tokenize("a (red:1.3) apple"))
    assert torch.equal(tensor, expected[0][0])
    (other,) = call(engine, C.CLIPTextEncode, text="a green pear", clip=clip)
    assert not torch.allclose(other[0][0], tensor)
    with pytest.raises(ValueError, match="clip input is invalid"):
        call(engine, C.CLIPTextEncode, text="x", clip=None)


def test_sdxl_encoders_add_the_size_fields(engine: Engine) -> None:
    _, clip, _ = engine.load("sdxl")
    (plain,) = call(engine, C.CLIPTextEncode, text="a castle", clip=clip)
    (sdxl,) = call(engine, C.CLIPTextEncodeSDXL, clip=clip, width=832, height=1216, crop_w=8, crop_h=16,
                   target_width=1024, target_height=1024, text_g="a castle", text_l="a castle")  # fmt: skip
    tensor, options = sdxl[0]
    assert {k: options[k] for k in ("width", "height", "crop_w", "crop_h", "target_width", "target_height")} == {
        "width": 832, "height": 1216, "crop_w": 8, "crop_h": 16, "target_width": 1024, "target_height": 1024
    }  # fmt: skip
    assert torch.equal(tensor, plain[0][0])  # same text for both encoders: the plain encoding
    assert options["pooled_output"].shape == plain[0][1]["pooled_output"].shape
    (split,) = call(engine, C.CLIPTextEncodeSDXL, clip=clip, width=1024, height=1024, crop_w=0, crop_h=0,
                    target_width=1024, target_height=1024, text_g="a castle", text_l="a dragon")  # fmt: skip
    assert not torch.allclose(split[0][0], tensor)
    long_l = " ".join(["dragon"] * 90)  # two 77-token chunks for L, one for G: G is padded
    (padded,) = call(engine, C.CLIPTextEncodeSDXL, clip=clip, width=1024, height=1024, crop_w=0, crop_h=0,
                     target_width=1024, target_height=1024, text_g="a castle", text_l=long_l)  # fmt: skip
    assert padded[0][0].shape[1] == 154
    (refiner,) = call(engine, C.CLIPTextEncodeSDXLRefiner, ascore=2.5, width=640, height=512, text="x", clip=clip)
    assert {k: refiner[0][1][k] for k in ("aesthetic_score", "width", "height")} == {
        "aesthetic_score": 2.5, "width": 640, "height": 512
    }  # fmt: skip


def test_combine_concat_and_average() -> None:
    a, b = cond(1.0, pooled_output=torch.ones(1, 4)), cond(3.0, tokens=10, pooled_output=torch.full((1, 4), 5.0))
    (combined,) = call(None, C.ConditioningCombine, conditioning_1=a, conditioning_2=b)
    assert len(combined) == 2 and combined[0][0] is a[0][0] and combined[1][0] is b[0][0]
    (concat,) = call(None, C.ConditioningConcat, conditioning_to=a, conditioning_from=b)
    assert concat[0][0].shape == (1, 87, 8) and concat[0][1] == a[0][1] and concat[0][1] is not a[0][1]
    (avg,) = call(None, C.ConditioningAverage, conditioning_to=a, conditioning_from=b, conditioning_to_strength=0.25)
    mixed = avg[0][0]
    assert mixed.shape == (1, 77, 8)
    assert torch.allclose(mixed[:, :10], torch.full((1, 10, 8), 0.25 * 1 + 0.75 * 3))
    assert torch.allclose(mixed[:, 10:], torch.full((1, 67, 8), 0.25))  # the shorter prompt is zero-padded
    assert torch.allclose(avg[0][1]["pooled_output"], torch.full((1, 4), 0.25 + 0.75 * 5))
    assert torch.equal(a[0][0], torch.ones(1, 77, 8))  # inputs untouched


def test_area_mask_strength_range_and_zero_out() -> None:
    base = cond(2.0, pooled_output=torch.ones(1, 4), keep="me")
    (area,) = call(None, C.ConditioningSetArea, conditioning=base, width=256, height=128, x=64, y=32, strength=0.7)
    assert area[0][1] == {"pooled_output": base[0][1]["pooled_output"], "keep": "me", "area": (16, 32, 4, 8),
                          "strength": 0.7, "set_area_to_bounds": False}  # fmt: skip
    assert "area" not in base[0][1]
    (pct,) = call(None, C.ConditioningSetAreaPercentage, conditioning=base, width=0.5, height=0.25, x=0.1, y=0.2,
                  strength=1.0)  # fmt: skip
    assert pct[0][1]["area"] == ("percentage", 0.25, 0.5, 0.2, 0.1)
    (strength,) = call(None, C.ConditioningSetAreaStrength, conditioning=area, strength=3.0)
    assert strength[0][1]["strength"] == 3.0 and strength[0][1]["area"] == (16, 32, 4, 8)
    mask = torch.ones(16, 16)
    (masked,) = call(
        None, C.ConditioningSetMask, conditioning=base, mask=mask, strength=0.5, set_cond_area="mask bounds"
    )
    assert masked[0][1]["mask"].shape == (1, 16, 16) and masked[0][1]["mask_strength"] == 0.5
    assert masked[0][1]["set_area_to_bounds"] is True
    (timed,) = call(None, C.ConditioningSetTimestepRange, conditioning=base, start=0.2, end=0.6)
    assert (timed[0][1]["start_percent"], timed[0][1]["end_percent"]) == (0.2, 0.6)
    (zero,) = call(None, C.ConditioningZeroOut, conditioning=base)
    assert zero[0][0].abs().sum() == 0 and zero[0][1]["pooled_output"].abs().sum() == 0
    assert base[0][0].abs().sum() > 0 and base[0][1]["pooled_output"].sum() == 4
