"""Latent nodes (nodes/latent.py): ComfyUI's shapes, values, batch bookkeeping and resizing rules.
No model is needed: these are tensor operations on LATENT dicts."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from nodes import latent as L
from nodes.api import DeclarativeNode
from tests.nodes.conftest import call_node


def run(node: type, **inputs: Any) -> Any:
    return call_node(DeclarativeNode(node), inputs)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_empty_latent_is_zeros_at_one_eighth() -> None:
    (out,) = run(L.EmptyLatentImage, width=72, height=48, batch_size=3)
    assert set(out) == {"samples"}
    assert out["samples"].shape == (3, 4, 6, 9) and out["samples"].dtype == torch.float32
    assert out["samples"].abs().sum() == 0


def test_upscale_to_size_keeps_other_keys_and_aspect_from_zero() -> None:
    samples = randn(1, 4, 8, 16)
    source = {"samples": samples, "noise_mask": torch.ones(1, 1, 64, 128)}
    (out,) = run(L.LatentUpscale, samples=source, upscale_method="bilinear", width=256, height=128, crop="disabled")
    assert out["samples"].shape == (1, 4, 16, 32) and out["noise_mask"] is source["noise_mask"]
    expected = torch.nn.functional.interpolate(samples, size=(16, 32), mode="bilinear")
    assert torch.equal(out["samples"], expected)
    (keep,) = run(L.LatentUpscale, samples=source, upscale_method="nearest-exact", width=0, height=256, crop="disabled")
    assert keep["samples"].shape == (1, 4, 32, 64)  # width from the aspect ratio
    (small,) = run(L.LatentUpscale, samples=source, upscale_method="area", width=16, height=16, crop="disabled")
    assert small["samples"].shape == (1, 4, 8, 8)  # sizes below 64 px become 64
    (same,) = run(L.LatentUpscale, samples=source, upscale_method="area", width=0, height=0, crop="disabled")
    assert same is source
    assert samples.shape == (1, 4, 8, 16)  # the input is untouched


def test_center_crop_cuts_to_the_target_aspect() -> None:
    samples = torch.arange(8 * 16, dtype=torch.float32).reshape(1, 1, 8, 16)
    (out,) = run(L.LatentUpscale, samples={"samples": samples}, upscale_method="nearest-exact", width=64, height=64,
                 crop="center")  # fmt: skip
    assert torch.equal(out["samples"], samples[..., 4:12])  # 8x8 from the middle, same size: unchanged


def test_upscale_by_and_bislerp() -> None:
    samples = randn(2, 4, 6, 10)
    (out,) = run(L.LatentUpscaleBy, samples={"samples": samples}, upscale_method="bicubic", scale_by=1.5)
    assert out["samples"].shape == (2, 4, 9, 15)
    (slerped,) = run(L.LatentUpscaleBy, samples={"samples": samples}, upscale_method="bislerp", scale_by=2.0)
    assert slerped["samples"].shape == (2, 4, 12, 20) and torch.isfinite(slerped["samples"]).all()
    # Slerp interpolates channel-vector norms linearly: corners are the source's own vectors.
    assert torch.allclose(slerped["samples"][..., 0, 0], samples[..., 0, 0], atol=1e-5)
    assert torch.allclose(L.bislerp(samples, 10, 6), samples, atol=1e-5)  # same size is the identity
    constant = torch.ones(1, 4, 3, 3)
    assert torch.allclose(L.bislerp(constant, 7, 5), torch.ones(1, 4, 5, 7))


def test_composite_pastes_and_feathers() -> None:
    to = {"samples": torch.zeros(1, 4, 8, 8), "batch_index": [0]}
    source = {"samples": torch.ones(1, 4, 4, 4)}
    (out,) = run(L.LatentComposite, samples_to=to, samples_from=source, x=16, y=8, feather=0)
    expected = torch.zeros(1, 4, 8, 8)
    expected[:, :, 1:5, 2:6] = 1
    assert torch.equal(out["samples"], expected) and out["batch_index"] == [0]
    assert to["samples"].abs().sum() == 0
    (soft,) = run(L.LatentComposite, samples_to=to, samples_from=source, x=16, y=8, feather=16)
    region = soft["samples"][0, 0, 1:5, 2:6]
    assert region[1:3, 1:3].eq(1).all()  # the inside keeps the source
    assert region[0, 1].item() == pytest.approx(0.5) and region[0, 0].item() == pytest.approx(0.25)
    (edge,) = run(L.LatentComposite, samples_to=to, samples_from=source, x=0, y=0, feather=16)
    assert edge["samples"][0, 0, 0, 0] == 1  # no feathering along the target's own border
    (clipped,) = run(L.LatentComposite, samples_to=to, samples_from=source, x=48, y=48, feather=0)
    assert clipped["samples"][0, 0, 6:, 6:].eq(1).all() and clipped["samples"].sum() == 4 * 4


def test_blend_and_resize_on_mismatch() -> None:
    a, b = {"samples": torch.ones(1, 4, 4, 4)}, {"samples": torch.full((1, 4, 4, 4), 3.0)}
    (out,) = run(L.LatentBlend, samples1=a, samples2=b, blend_factor=0.25)
    assert torch.allclose(out["samples"], torch.full((1, 4, 4, 4), 0.25 * 1 + 0.75 * 3))
    (resized,) = run(L.LatentBlend, samples1=a, samples2={"samples": torch.full((1, 4, 8, 8), 3.0)}, blend_factor=0.5)
    assert resized["samples"].shape == (1, 4, 4, 4) and torch.allclose(
        resized["samples"], torch.full((1, 4, 4, 4), 2.0)
    )


def test_from_batch_sets_batch_index_and_slices_masks() -> None:
    samples = randn(4, 4, 2, 2)
    masks = torch.arange(4.0).reshape(4, 1, 1, 1).expand(4, 1, 2, 2)
    (out,) = run(L.LatentFromBatch, samples={"samples": samples, "noise_mask": masks}, batch_index=1, length=2)
    assert torch.equal(out["samples"], samples[1:3]) and out["batch_index"] == [1, 2]
    assert out["noise_mask"][:, 0, 0, 0].tolist() == [1.0, 2.0]
    (again,) = run(L.LatentFromBatch, samples=out, batch_index=1, length=5)
    assert again["batch_index"] == [2] and torch.equal(again["samples"], samples[2:3])  # index kept, length cut
    (last,) = run(L.LatentFromBatch, samples={"samples": samples}, batch_index=63, length=1)
    assert last["batch_index"] == [3]


def test_repeat_batch_extends_index_and_masks() -> None:
    samples = randn(2, 4, 2, 2)
    source = {"samples": samples, "batch_index": [3, 4], "noise_mask": torch.rand(2, 1, 2, 2)}
    (out,) = run(L.RepeatLatentBatch, samples=source, amount=3)
    assert out["samples"].shape == (6, 4, 2, 2) and torch.equal(out["samples"][4:], samples)
    assert out["batch_index"] == [3, 4, 5, 6, 7, 8]
    assert out["noise_mask"].shape[0] == 6
    (plain,) = run(L.RepeatLatentBatch, samples={"samples": samples, "noise_mask": torch.ones(1, 1, 2, 2)}, amount=2)
    assert plain["noise_mask"].shape[0] == 1 and "batch_index" not in plain


def test_latent_batch_concatenates_and_resizes() -> None:
    a, b = {"samples": randn(2, 4, 4, 4)}, {"samples": randn(1, 4, 8, 8, seed=1), "batch_index": [7]}
    (out,) = run(L.LatentBatch, samples1=a, samples2=b)
    assert out["samples"].shape == (3, 4, 4, 4) and out["batch_index"] == [0, 1, 7]
    assert torch.equal(out["samples"][:2], a["samples"])


def test_crop_flip_rotate() -> None:
    samples = torch.arange(16 * 16, dtype=torch.float32).reshape(1, 1, 16, 16)
    (crop,) = run(L.LatentCrop, samples={"samples": samples}, width=64, height=64, x=16, y=8)
    assert torch.equal(crop["samples"], samples[:, :, 1:9, 2:10])
    (far,) = run(L.LatentCrop, samples={"samples": samples}, width=512, height=64, x=1000, y=1000)
    assert torch.equal(far["samples"], samples[:, :, 8:16, 8:16])  # origin kept 8 latent pixels from the end
    (flip_x,) = run(L.LatentFlip, samples={"samples": samples}, flip_method="x-axis: vertically")
    assert torch.equal(flip_x["samples"][0, 0, 0], samples[0, 0, 15])
    (flip_y,) = run(L.LatentFlip, samples={"samples": samples}, flip_method="y-axis: horizontally")
    assert torch.equal(flip_y["samples"][0, 0, :, 0], samples[0, 0, :, 15])
    wide = torch.arange(6, dtype=torch.float32).reshape(1, 1, 2, 3)  # [[0 1 2], [3 4 5]]
    (r90,) = run(L.LatentRotate, samples={"samples": wide}, rotation="90 degrees")
    assert r90["samples"][0, 0].tolist() == [[3, 0], [4, 1], [5, 2]]  # clockwise
    (r180,) = run(L.LatentRotate, samples={"samples": wide}, rotation="180 degrees")
    assert torch.equal(r180["samples"], wide.flip(2, 3))
    (none,) = run(L.LatentRotate, samples={"samples": wide}, rotation="none")
    assert torch.equal(none["samples"], wide)


def test_set_noise_mask_reshapes_to_b1hw() -> None:
    source = {"samples": randn(1, 4, 2, 2)}
    (out,) = run(L.SetLatentNoiseMask, samples=source, mask=torch.ones(16, 16))
    assert out["noise_mask"].shape == (1, 1, 16, 16) and "noise_mask" not in source
    (batch,) = run(L.SetLatentNoiseMask, samples=source, mask=torch.ones(3, 16, 16))
    assert batch["noise_mask"].shape == (3, 1, 16, 16)


def test_unknown_upscale_method_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown upscale method 'sinc'"):
        L.common_upscale(torch.zeros(1, 4, 2, 2), 4, 4, "sinc", "disabled")
