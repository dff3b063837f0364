"""Image nodes (nodes/image_ops*.py): ComfyUI's shapes in /object_info and hand-computed numbers."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from execution.cache import make_cache
from execution.executor import Executor
from execution.validate import validate_prompt
from nodes.api import GraphBuilder
from nodes.builtin import builtin_registry
from nodes.image_ops_util import common_upscale, mask_batch
from nodes.registry import NodeRegistry
from tests.nodes.conftest import call_node

REGISTRY: NodeRegistry = builtin_registry()
UPSCALE = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]


def run(class_type: str, **inputs: Any) -> Any:
    return call_node(REGISTRY[class_type], inputs)


def grey(value: float, height: int = 4, width: int = 4, channels: int = 3, batch: int = 1) -> torch.Tensor:
    return torch.full((batch, height, width, channels), value, dtype=torch.float32)


def ramp(height: int, width: int) -> torch.Tensor:
    """[1, H, W, 3] whose pixel (y, x) holds y * width + x in every channel (distinct values)."""
    values = torch.arange(height * width, dtype=torch.float32).reshape(1, height, width, 1)
    return values.expand(-1, -1, -1, 3).clone()


# --- /object_info ---------------------------------------------------------------------------------------

EXPECTED = {
    # class_type: (display name, category, outputs, output names)
    "ImageScale": ("Upscale Image", "image/upscaling", ["IMAGE"], ["IMAGE"]),
    "ImageScaleBy": ("Upscale Image By", "image/upscaling", ["IMAGE"], ["IMAGE"]),
    "ImageScaleToTotalPixels": ("Scale Image to Total Pixels", "image/upscaling", ["IMAGE"], ["IMAGE"]),
    "ImageScaleToMaxDimension": ("ImageScaleToMaxDimension", "image/upscaling", ["IMAGE"], ["IMAGE"]),
    "ResizeAndPadImage": ("ResizeAndPadImage", "image/transform", ["IMAGE"], ["IMAGE"]),
    "ImageInvert": ("Invert Image", "image", ["IMAGE"], ["IMAGE"]),
    "ImageBatch": ("Batch Images", "image", ["IMAGE"], ["IMAGE"]),
    "EmptyImage": ("EmptyImage", "image", ["IMAGE"], ["IMAGE"]),
    "ImagePadForOutpaint": ("Pad Image for Outpainting", "image", ["IMAGE", "MASK"], ["IMAGE", "MASK"]),
    "ImageCrop": ("Image Crop", "image/transform", ["IMAGE"], ["IMAGE"]),
    "ImageStitch": ("Image Stitch", "image/transform", ["IMAGE"], ["IMAGE"]),
    "ImageRotate": ("ImageRotate", "image/transform", ["IMAGE"], ["IMAGE"]),
    "ImageFlip": ("ImageFlip", "image/transform", ["IMAGE"], ["IMAGE"]),
    "RepeatImageBatch": ("RepeatImageBatch", "image/batch", ["IMAGE"], ["IMAGE"]),
    "ImageFromBatch": ("ImageFromBatch", "image/batch", ["IMAGE"], ["IMAGE"]),
    "GetImageSize": ("Get Image Size", "image", ["INT", "INT", "INT"], ["width", "height", "batch_size"]),
    "ImageBlend": ("Image Blend", "image/postprocessing", ["IMAGE"], ["IMAGE"]),
    "ImageBlur": ("Image Blur", "image/postprocessing", ["IMAGE"], ["IMAGE"]),
    "ImageSharpen": ("Image Sharpen", "image/postprocessing", ["IMAGE"], ["IMAGE"]),
    "ImageQuantize": ("Image Quantize", "image/postprocessing", ["IMAGE"], ["IMAGE"]),
    "ImageAddNoise": ("ImageAddNoise", "image", ["IMAGE"], ["IMAGE"]),
    "ImageCompositeMasked": ("ImageCompositeMasked", "image", ["IMAGE"], ["IMAGE"]),
    "PorterDuffImageComposite": (
        "Porter-Duff Image Composite",
        "mask/compositing",
        ["IMAGE", "MASK"],
        ["IMAGE", "MASK"],
    ),
    "SplitImageWithAlpha": ("Split Image with Alpha", "mask/compositing", ["IMAGE", "MASK"], ["IMAGE", "MASK"]),
    "JoinImageWithAlpha": ("Join Image with Alpha", "mask/compositing", ["IMAGE"], ["IMAGE"]),
}


def test_every_image_node_is_registered_with_comfyui_names_and_shapes() -> None:
    info = REGISTRY.object_info()
    for class_type, (display, category, outputs, names) in EXPECTED.items():
        entry = info[class_type]
        assert (entry["display_name"], entry["category"], entry["output"], entry["output_name"]) == (
            display,
            category,
            outputs,
            names,
        ), class_type
        json.dumps(entry)
    assert info["ImageBatch"]["deprecated"] is True


def test_image_inputs_are_declared_as_in_comfyui() -> None:
    info = REGISTRY.object_info()
    scale = info["ImageScale"]["input"]
    assert info["ImageScale"]["input_order"]["required"] == ["image", "upscale_method", "width", "height", "crop"]
    assert scale["required"]["upscale_method"] == [UPSCALE]  # V1 bare-list combo
    assert scale["required"]["width"] == ["INT", {"default": 512, "min": 0, "max": 16384, "step": 1}]
    assert scale["required"]["crop"] == [["disabled", "center"]]
    assert info["ImageScaleBy"]["input"]["required"]["scale_by"] == [
        "FLOAT",
        {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01},
    ]
    total = info["ImageScaleToTotalPixels"]["input"]["required"]
    assert total["upscale_method"] == ["COMBO", {"options": UPSCALE}]  # V3 combo
    assert total["resolution_steps"] == ["INT", {"default": 1, "min": 1, "max": 256}]
    pad = info["ImagePadForOutpaint"]["input"]
    assert info["ImagePadForOutpaint"]["input_order"]["required"] == [
        "image", "left", "top", "right", "bottom", "feathering",
    ]  # fmt: skip
    assert pad["required"]["left"] == ["INT", {"default": 0, "min": 0, "max": 16384, "step": 8}]
    assert pad["required"]["feathering"] == ["INT", {"default": 40, "min": 0, "max": 16384, "step": 1}]
    stitch = info["ImageStitch"]["input"]
    assert stitch["required"]["direction"] == [
        "COMBO",
        {"default": "right", "options": ["right", "down", "left", "up"]},
    ]
    assert stitch["required"]["spacing_width"] == ["INT", {"default": 0, "min": 0, "max": 1024, "step": 2}]
    assert stitch["optional"] == {"image2": ["IMAGE"]}
    assert info["EmptyImage"]["input"]["required"]["color"] == [
        "INT",
        {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"},
    ]
    noise = info["ImageAddNoise"]["input"]["required"]["seed"]
    assert noise[1]["max"] == 0xFFFFFFFFFFFFFFFF and noise[1]["control_after_generate"] is True
    assert info["ImageBlend"]["input"]["required"]["blend_mode"][1]["options"] == [
        "normal", "multiply", "screen", "overlay", "soft_light", "difference",
    ]  # fmt: skip
    assert info["ImageQuantize"]["input"]["required"]["dither"][1]["options"] == [
        "none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16",
    ]  # fmt: skip
    porter = info["PorterDuffImageComposite"]["input"]["required"]["mode"]
    assert porter[1]["default"] == "DST" and len(porter[1]["options"]) == 18
    assert info["ImageCompositeMasked"]["input"]["optional"] == {"mask": ["MASK"]}
    assert info["GetImageSize"]["input"]["hidden"] == {"unique_id": ["UNIQUE_ID"]}


def test_node_modules_do_not_import_torch() -> None:
    import subprocess
    import sys

    from tests.nodes.conftest import ROOT

    code = "import sys, nodes.image_ops, nodes.mask_ops; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- scaling --------------------------------------------------------------------------------------------


def test_image_scale_nearest_exact_and_bilinear_by_hand() -> None:
    image = torch.tensor([[0.0, 1.0], [0.5, 0.25]]).reshape(1, 2, 2, 1).expand(-1, -1, -1, 3)
    (up,) = run("ImageScale", image=image, upscale_method="nearest-exact", width=4, height=4, crop="disabled")
    expected = [[0, 0, 1, 1], [0, 0, 1, 1], [0.5, 0.5, 0.25, 0.25], [0.5, 0.5, 0.25, 0.25]]
    assert up.shape == (1, 4, 4, 3) and up[0, ..., 1].tolist() == expected

    row = torch.tensor([0.0, 1.0]).reshape(1, 1, 2, 1).expand(-1, -1, -1, 3)
    (wide,) = run("ImageScale", image=row, upscale_method="bilinear", width=4, height=1, crop="disabled")
    # half-pixel centres, clamped at the borders: 0, 0.25, 0.75, 1
    assert wide[0, 0, :, 0].tolist() == pytest.approx([0.0, 0.25, 0.75, 1.0])


def test_image_scale_area_averages_blocks_and_zero_keeps_aspect() -> None:
    image = ramp(4, 4)
    (down,) = run("ImageScale", image=image, upscale_method="area", width=2, height=2, crop="disabled")
    # 2x2 blocks of 0 1 4 5 / 2 3 6 7 / 8 9 12 13 / 10 11 14 15
    assert down[0, ..., 0].tolist() == [[2.5, 4.5], [10.5, 12.5]]

    (kept,) = run("ImageScale", image=ramp(2, 4), upscale_method="bilinear", width=0, height=4, crop="disabled")
    assert kept.shape == (1, 4, 8, 3)  # width = round(4 * 4 / 2)
    (same,) = run("ImageScale", image=ramp(2, 4), upscale_method="bilinear", width=0, height=0, crop="disabled")
    assert torch.equal(same, ramp(2, 4))


def test_image_scale_center_crop_cuts_the_middle_to_the_target_aspect() -> None:
    image = ramp(2, 4)
    (square,) = run("ImageScale", image=image, upscale_method="nearest-exact", width=2, height=2, crop="center")
    assert torch.equal(square, image[:, :, 1:3])


def test_lanczos_goes_through_pillow_in_8_bits() -> None:
    (flat,) = run("ImageScale", image=grey(0.5, 2, 2), upscale_method="lanczos", width=3, height=5, crop="disabled")
    assert flat.shape == (1, 5, 3, 3)
    assert torch.all(flat == 127 / 255)  # 0.5 * 255 = 127.5 is truncated, as ComfyUI does

    gen = torch.Generator().manual_seed(1)
    image = torch.rand((2, 5, 7, 3), generator=gen)
    (out,) = run("ImageScale", image=image, upscale_method="lanczos", width=4, height=9, crop="disabled")
    for index in range(2):
        pixels = np.clip(255.0 * image[index].numpy(), 0, 255).astype(np.uint8)
        expected = np.asarray(Image.fromarray(pixels).resize((4, 9), Image.Resampling.LANCZOS)) / np.float32(255)
        assert np.array_equal(out[index].numpy(), expected.astype(np.float32))

    masks = torch.rand((1, 1, 5, 7), generator=gen)  # one channel resizes as an "L" image
    assert common_upscale(masks, 3, 2, "lanczos").shape == (1, 1, 2, 3)


def test_scale_by_rounds_like_python_and_reports_an_empty_result() -> None:
    (half,) = run("ImageScaleBy", image=grey(1.0, 5, 5), upscale_method="area", scale_by=0.5)
    assert half.shape == (1, 2, 2, 3)  # round(2.5) == 2, as in ComfyUI
    (double,) = run("ImageScaleBy", image=grey(1.0, 3, 2), upscale_method="bicubic", scale_by=2.0)
    assert double.shape == (1, 6, 4, 3)
    with pytest.raises(ValueError, match="ImageScaleBy.*smaller than 1 pixel"):
        run("ImageScaleBy", image=grey(1.0, 5, 5), upscale_method="area", scale_by=0.01)


def test_scale_to_total_pixels_and_to_max_dimension() -> None:
    image = grey(0.3, 32, 64)
    (out,) = run("ImageScaleToTotalPixels", image=image, upscale_method="bilinear", megapixels=0.01, resolution_steps=1)
    # sqrt(0.01 * 1024 * 1024 / 2048) = 2.2627...: 64 -> 144.8 -> 145, 32 -> 72.4 -> 72
    assert out.shape == (1, 72, 145, 3)
    (stepped,) = run("ImageScaleToTotalPixels", image=image, upscale_method="area", megapixels=0.01, resolution_steps=8)
    assert stepped.shape == (1, 72, 144, 3)  # round(18.1) * 8, round(9.05) * 8

    (tall,) = run("ImageScaleToMaxDimension", image=grey(0.3, 20, 10), upscale_method="area", largest_size=8)
    assert tall.shape == (1, 8, 4, 3)
    (square,) = run("ImageScaleToMaxDimension", image=grey(0.3, 5, 5), upscale_method="lanczos", largest_size=3)
    assert square.shape == (1, 3, 3, 3)


def test_resize_and_pad_centres_the_fitted_image() -> None:
    (out,) = run(
        "ResizeAndPadImage",
        image=grey(0.6, 2, 4),
        target_width=8,
        target_height=8,
        padding_color="black",
        interpolation="nearest-exact",
    )
    assert out.shape == (1, 8, 8, 3)
    assert torch.all(out[:, 2:6] == 0.6) and torch.all(out[:, :2] == 0) and torch.all(out[:, 6:] == 0)
    (white,) = run(
        "ResizeAndPadImage", image=grey(0.6, 4, 2), target_width=4, target_height=4, padding_color="white",
        interpolation="area",
    )  # fmt: skip
    assert torch.equal(white[0, :, :, 0], torch.tensor([[1.0, 0.6, 0.6, 1.0]] * 4))


# --- simple image nodes ---------------------------------------------------------------------------------


def test_invert_empty_image_and_size() -> None:
    (inverted,) = run("ImageInvert", image=grey(0.25))
    assert torch.all(inverted == 0.75)
    (empty,) = run("EmptyImage", width=3, height=2, batch_size=2, color=0xFF8000)
    assert empty.shape == (2, 2, 3, 3) and empty.dtype == torch.float32
    assert empty[1, 1, 2].tolist() == pytest.approx([1.0, 128 / 255, 0.0])
    assert run("GetImageSize", image=grey(0, 5, 7, batch=3)) == (7, 5, 3)


def test_image_batch_resizes_image2_and_adds_missing_alpha() -> None:
    (batch,) = run("ImageBatch", image1=grey(0.2, 4, 4), image2=grey(0.7, 2, 2, channels=4))
    assert batch.shape == (2, 4, 4, 4)
    assert torch.all(batch[0, ..., :3] == 0.2) and torch.all(batch[0, ..., 3] == 1.0)
    assert torch.allclose(batch[1], torch.tensor(0.7))


def test_repeat_and_take_from_batch() -> None:
    images = torch.arange(3, dtype=torch.float32).reshape(3, 1, 1, 1).expand(-1, 2, 2, 3).clone()
    (repeated,) = run("RepeatImageBatch", image=images, amount=2)
    assert repeated[:, 0, 0, 0].tolist() == [0, 1, 2, 0, 1, 2]
    (last,) = run("ImageFromBatch", image=images, batch_index=-1, length=5)
    assert last[:, 0, 0, 0].tolist() == [2]
    (middle,) = run("ImageFromBatch", image=images, batch_index=1, length=2)
    assert middle[:, 0, 0, 0].tolist() == [1, 2]
    (clamped,) = run("ImageFromBatch", image=images, batch_index=9, length=1)
    assert clamped[:, 0, 0, 0].tolist() == [2]


# --- geometry -------------------------------------------------------------------------------------------


def test_crop_clips_to_the_image() -> None:
    image = ramp(4, 4)
    (crop,) = run("ImageCrop", image=image, width=2, height=3, x=1, y=2)
    assert crop[0, ..., 0].tolist() == [[9, 10], [13, 14]]
    (edge,) = run("ImageCrop", image=image, width=8, height=8, x=10, y=10)
    assert edge[0, ..., 0].tolist() == [[15]]  # origin moved to the last pixel


def test_rotate_clockwise_and_flip() -> None:
    image = ramp(2, 3)  # [[0 1 2] [3 4 5]]
    (quarter,) = run("ImageRotate", image=image, rotation="90 degrees")
    assert quarter[0, ..., 0].tolist() == [[3, 0], [4, 1], [5, 2]]
    (half,) = run("ImageRotate", image=image, rotation="180 degrees")
    assert half[0, ..., 0].tolist() == [[5, 4, 3], [2, 1, 0]]
    (three,) = run("ImageRotate", image=image, rotation="270 degrees")
    assert three[0, ..., 0].tolist() == [[2, 5], [1, 4], [0, 3]]
    (vertical,) = run("ImageFlip", image=image, flip_method="x-axis: vertically")
    assert vertical[0, ..., 0].tolist() == [[3, 4, 5], [0, 1, 2]]
    (horizontal,) = run("ImageFlip", image=image, flip_method="y-axis: horizontally")
    assert horizontal[0, ..., 0].tolist() == [[2, 1, 0], [5, 4, 3]]


def test_pad_for_outpaint_feathers_exactly_like_comfyui() -> None:
    image = grey(0.2, 6, 6)
    padded, mask = run("ImagePadForOutpaint", image=image, left=2, top=2, right=0, bottom=0, feathering=2)
    assert padded.shape == (1, 8, 8, 3) and mask.shape == (1, 8, 8)
    assert torch.all(padded[:, :2] == 0.5) and torch.all(padded[:, :, :2] == 0.5)
    assert torch.all(padded[:, 2:, 2:] == image)
    # inside the image d = min(row, column) from the padded sides; d=0 -> 1, d=1 -> ((2-1)/2)^2
    inner = [[1.0] * 6, [1.0] + [0.25] * 5] + [[1.0, 0.25, 0, 0, 0, 0]] * 4
    assert mask[0, 2:, 2:].tolist() == inner
    assert torch.all(mask[0, :2] == 1) and torch.all(mask[0, :, :2] == 1)

    _, wide = run("ImagePadForOutpaint", image=grey(0.2, 6, 6), left=0, top=0, right=3, bottom=0, feathering=2)
    # distance to the right side is 6 - column, never 0: ComfyUI's right/bottom ramps stop one short
    assert wide[0, 0].tolist() == [0, 0, 0, 0, 0, 0.25, 1, 1, 1]

    _, ramp3 = run("ImagePadForOutpaint", image=grey(0.2, 8, 8), left=8, top=0, right=0, bottom=0, feathering=3)
    assert ramp3[0, 0, 8:12].tolist() == pytest.approx([1.0, (2 / 3) ** 2, (1 / 3) ** 2, 0.0])

    _, off = run("ImagePadForOutpaint", image=grey(0.2, 6, 6), left=8, top=0, right=0, bottom=0, feathering=3)
    assert torch.all(off[0, :, 8:] == 0)  # 2 * feathering >= the size: no feathering at all


def test_stitch_pads_spaces_and_orders() -> None:
    left = grey(0.1, 4, 2)
    right = grey(0.9, 2, 3)
    (out,) = run(
        "ImageStitch", image1=left, direction="right", match_image_size=False, spacing_width=2,
        spacing_color="red", image2=right,
    )  # fmt: skip
    assert out.shape == (1, 4, 2 + 2 + 3, 3)
    assert out[0, 0, 2].tolist() == [1.0, 0.0, 0.0]  # the red spacer
    # image2 is 2 high: centred on image1's 4 rows with padding in the spacer colour's value (0 for red)
    assert torch.equal(out[0, :, 4:, 0], torch.tensor([[0.0] * 3, [0.9] * 3, [0.9] * 3, [0.0] * 3]))
    (flipped,) = run(
        "ImageStitch", image1=left, direction="left", match_image_size=False, spacing_width=0,
        spacing_color="white", image2=right,
    )  # fmt: skip
    assert flipped.shape == (1, 4, 5, 3) and torch.all(flipped[0, 1:3, :3] == right[0]) and flipped[0, 0, 4, 0] == 0.1

    opaque = grey(0.8, 2, 4, channels=4)
    opaque[..., 3] = 1.0  # Pillow premultiplies RGBA when resizing: keep the colour exact
    (up,) = run(
        "ImageStitch", image1=grey(0.1, 2, 2), direction="up", match_image_size=True, spacing_width=0,
        spacing_color="white", image2=opaque,
    )  # fmt: skip
    # image2 (aspect 2) is resized to image1's width: 2 x int(2 / 2); image1 gains an opaque alpha
    assert up.shape == (1, 1 + 2, 2, 4)
    assert torch.all(up[0, 0, :, :3] == 0.8) and torch.all(up[0, 1:, :, :3] == 0.1) and torch.all(up[..., 3] == 1)
    with pytest.raises(ValueError, match="ImageStitch: matching image2 .4x1. to image1 .2x2. gives 2x0"):
        run(
            "ImageStitch", image1=grey(0.1, 2, 2), direction="down", match_image_size=True, spacing_width=0,
            spacing_color="white", image2=grey(0.8, 1, 4),
        )  # fmt: skip


def test_stitch_without_image2_returns_image1() -> None:
    image = grey(0.4)
    (out,) = run(
        "ImageStitch", image1=image, direction="down", match_image_size=True, spacing_width=0, spacing_color="white"
    )
    assert out is image


# --- filters --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("normal", 0.75),
        ("multiply", 0.1875),
        ("screen", 0.8125),  # 1 - 0.75 * 0.25
        ("overlay", 0.375),  # image1 <= 0.5: 2 * a * b
        ("soft_light", 0.375),  # b > 0.5: a + (2b - 1)(D(a) - a), D(0.25) = 0.5
        ("difference", 0.0),  # a - b = -0.5, clamped
    ],
)
def test_blend_modes_on_constants(mode: str, expected: float) -> None:
    (out,) = run("ImageBlend", image1=grey(0.25), image2=grey(0.75), blend_factor=1.0, blend_mode=mode)
    assert torch.allclose(out, torch.tensor(expected))


def test_blend_factor_mixes_and_alpha_is_kept() -> None:
    image1 = grey(0.2, channels=4)
    image1[..., 3] = 0.3
    (out,) = run("ImageBlend", image1=image1, image2=grey(0.6, 2, 2), blend_factor=0.5, blend_mode="normal")
    assert out.shape == (1, 4, 4, 4)  # image2 resized, given an opaque alpha
    assert torch.allclose(out[..., :3], torch.tensor(0.4)) and torch.all(out[..., 3] == 0.3)
    with pytest.raises(ValueError, match="batch sizes must match"):
        run("ImageBlend", image1=grey(0.2, batch=2), image2=grey(0.6, batch=3), blend_factor=0.5, blend_mode="normal")


GAUSS_3 = (1.0, float(np.exp(-0.5)), float(np.exp(-1.0)))  # weights at distance 0, 1, sqrt(2) (sigma 1)
GAUSS_SUM = GAUSS_3[0] + 4 * GAUSS_3[1] + 4 * GAUSS_3[2]


def test_blur_impulse_response_and_reflect_border() -> None:
    image = grey(0.0, 5, 5)
    image[0, 2, 2] = 1.0
    (out,) = run("ImageBlur", image=image, blur_radius=1, sigma=1.0)
    assert out[0, 2, 2, 0].item() == pytest.approx(GAUSS_3[0] / GAUSS_SUM, rel=1e-6)
    assert out[0, 1, 2, 0].item() == pytest.approx(GAUSS_3[1] / GAUSS_SUM, rel=1e-6)
    assert out[0, 1, 1, 0].item() == pytest.approx(GAUSS_3[2] / GAUSS_SUM, rel=1e-6)
    assert out[0, 0, 0, 0].item() == 0.0
    (flat,) = run("ImageBlur", image=grey(0.4, 3, 3), blur_radius=2, sigma=3.0)
    assert torch.allclose(flat, torch.tensor(0.4))  # reflection keeps a constant image constant
    centre = grey(0.0, 3, 3)
    centre[0, 1, 1] = 1.0
    (reflected,) = run("ImageBlur", image=centre, blur_radius=1, sigma=1.0)
    # reflection mirrors around the edge pixel: the edge sees the centre directly and mirrored
    assert reflected[0, 0, 1, 0].item() == pytest.approx(2 * GAUSS_3[1] / GAUSS_SUM, rel=1e-6)
    assert reflected[0, 0, 0, 0].item() == pytest.approx(4 * GAUSS_3[2] / GAUSS_SUM, rel=1e-6)
    with pytest.raises(ValueError, match="blur_radius=4 is too large for a 4x4 image"):
        run("ImageBlur", image=grey(0.4), blur_radius=4, sigma=1.0)


def test_sharpen_keeps_constants_and_boosts_an_impulse() -> None:
    (flat,) = run("ImageSharpen", image=grey(0.3, 5, 5), sharpen_radius=1, sigma=1.0, alpha=2.0)
    assert torch.allclose(flat, torch.tensor(0.3), atol=1e-6)
    image = grey(0.5, 5, 5)
    image[0, 2, 2] = 0.6
    (out,) = run("ImageSharpen", image=image, sharpen_radius=1, sigma=1.0, alpha=0.01)
    centre = 1 + 0.1 * (1 - GAUSS_3[0] / GAUSS_SUM)  # kernel centre after renormalising
    assert out[0, 2, 2, 0].item() == pytest.approx(0.5 + 0.1 * centre, rel=1e-5)
    assert out[0, 1, 2, 0].item() == pytest.approx(0.5 - 0.1 * 0.1 * GAUSS_3[1] / GAUSS_SUM, rel=1e-5)


def two_colour(channels: int = 3) -> torch.Tensor:
    image = torch.zeros((1, 4, 6, channels))
    image[:, :, 3:, :3] = 1.0
    return image


@pytest.mark.parametrize("dither", ["none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16"])
def test_quantize_keeps_a_two_colour_image(dither: str) -> None:
    (out,) = run("ImageQuantize", image=two_colour(), colors=2, dither=dither)
    assert torch.equal(out, two_colour())


def test_quantize_reduces_colours_truncates_and_keeps_alpha() -> None:
    gradient = torch.linspace(0, 1, 16).reshape(1, 1, 16, 1).expand(1, 4, 16, 3).clone()
    (out,) = run("ImageQuantize", image=gradient, colors=2, dither="none")
    assert len(torch.unique(out[0, ..., 0])) == 2
    (dithered,) = run("ImageQuantize", image=gradient, colors=2, dither="bayer-4")
    assert len(torch.unique(dithered[0, ..., 0])) == 2
    assert not torch.equal(dithered, out)  # the ordered pattern moves some pixels across the threshold

    image = grey(0.999, 2, 2, channels=4)
    image[..., 3] = 0.5
    (kept,) = run("ImageQuantize", image=image, colors=256, dither="none")
    assert torch.all(kept[..., :3] == 254 / 255) and torch.all(kept[..., 3] == 0.5)


def test_add_noise_is_seeded_clipped_and_leaves_the_global_generator_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    image = grey(0.5, 3, 3)
    (first,) = run("ImageAddNoise", image=image, seed=7, strength=0.5)
    assert torch.equal(torch.rand(1), expected_next)
    (again,) = run("ImageAddNoise", image=image, seed=7, strength=0.5)
    assert torch.equal(first, again) and first.min() >= 0 and first.max() <= 1
    reference = torch.clip(image + 0.5 * torch.randn(image.shape, generator=torch.Generator().manual_seed(7)), 0, 1)
    assert torch.equal(first, reference)
    (other,) = run("ImageAddNoise", image=image, seed=8, strength=0.5)
    assert not torch.equal(first, other)


# --- compositing ----------------------------------------------------------------------------------------


def test_composite_masked_pastes_through_the_mask() -> None:
    destination = grey(0.0)
    source = grey(1.0, 2, 2)
    (plain,) = run("ImageCompositeMasked", destination=destination, source=source, x=1, y=2, resize_source=False)
    assert plain[0, ..., 0].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0]]
    assert torch.all(destination == 0)  # the input is not modified
    mask = torch.tensor([[1.0, 0.0], [0.0, 0.5]])  # an [H, W] mask is accepted
    (masked,) = run(
        "ImageCompositeMasked", destination=destination, source=source, x=0, y=0, resize_source=False, mask=mask
    )
    assert masked[0, :2, :2, 0].tolist() == [[1.0, 0.0], [0.0, 0.5]]
    (clipped,) = run("ImageCompositeMasked", destination=destination, source=source, x=3, y=3, resize_source=False)
    assert clipped[0, ..., 0].sum().item() == 1.0  # only the overlapping pixel
    (resized,) = run(
        "ImageCompositeMasked", destination=destination, source=grey(0.5, 1, 1, 4), x=0, y=0, resize_source=True
    )
    assert resized.shape == (1, 4, 4, 3) and torch.all(resized == 0.5)  # alpha dropped, source stretched


def test_porter_duff_operators_on_constants() -> None:
    source, destination = grey(1.0, 2, 2), grey(0.0, 2, 2)
    half, opaque = torch.full((1, 2, 2), 0.5), torch.zeros((1, 2, 2))  # MASKs: 1 - alpha

    def porter(mode: str, source_alpha: torch.Tensor = opaque) -> tuple[torch.Tensor, torch.Tensor]:
        return run(
            "PorterDuffImageComposite", source=source, source_alpha=source_alpha, destination=destination,
            destination_alpha=opaque, mode=mode,
        )  # fmt: skip

    image, mask = porter("SRC_OVER", half)
    assert torch.allclose(image, torch.tensor(0.5)) and torch.all(mask == 0)
    image, mask = porter("DST")
    assert torch.all(image == 0) and torch.all(mask == 0)
    image, mask = porter("SRC")
    assert torch.all(image == 1) and torch.all(mask == 0)
    image, mask = porter("CLEAR")
    assert torch.all(image == 0) and torch.all(mask == 1)
    image, mask = porter("XOR")  # both opaque: nothing remains
    assert torch.all(image == 0) and torch.all(mask == 1)
    image, mask = porter("SRC_IN", half)
    assert torch.allclose(image, torch.tensor(1.0)) and torch.allclose(mask, torch.tensor(0.5))
    with pytest.raises(ValueError, match="channels"):
        run(
            "PorterDuffImageComposite", source=grey(1.0, 2, 2, 4), source_alpha=opaque, destination=destination,
            destination_alpha=opaque, mode="SRC",
        )  # fmt: skip


def test_split_and_join_alpha_round_trip() -> None:
    image = grey(0.3, channels=4)
    image[..., 3] = 0.25
    rgb, mask = run("SplitImageWithAlpha", image=image)
    assert rgb.shape == (1, 4, 4, 3) and torch.all(mask == 0.75)
    (joined,) = run("JoinImageWithAlpha", image=rgb, alpha=mask)
    assert torch.equal(joined, image)
    _, empty = run("SplitImageWithAlpha", image=grey(0.3))
    assert torch.all(empty == 0)
    (stretched,) = run("JoinImageWithAlpha", image=grey(0.3, 4, 4, batch=2), alpha=torch.full((2, 2), 0.4))
    assert stretched.shape == (2, 4, 4, 4) and torch.allclose(stretched[..., 3], torch.tensor(0.6))


# --- helpers and a graph --------------------------------------------------------------------------------


def test_masks_and_images_are_checked_with_the_input_name() -> None:
    assert mask_batch(torch.zeros((3, 5))).shape == (1, 3, 5)
    with pytest.raises(ValueError, match="input 'alpha' must be a MASK"):
        mask_batch(torch.zeros(4), "alpha")
    with pytest.raises(ValueError, match="input 'image' must be an IMAGE"):
        run("ImageCrop", image=torch.zeros((4, 4)), width=1, height=1, x=0, y=0)
    with pytest.raises(ValueError, match="input 'image2' must be an IMAGE"):
        run("ImageBatch", image1=grey(0.1), image2=torch.zeros((4, 4)))


def test_image_nodes_run_through_the_validator_and_executor() -> None:
    graph = GraphBuilder(prefix="img")
    empty = graph.node("EmptyImage", width=8, height=6, batch_size=2, color=0x102030)
    scaled = graph.node("ImageScaleBy", image=empty.out(0), upscale_method="bilinear", scale_by=1.5)
    padded = graph.node("ImagePadForOutpaint", image=scaled.out(0), left=8, top=0, right=0, bottom=0, feathering=4)
    size = graph.node("GetImageSize", image=padded.out(0))
    graph.node("PreviewAny", source=size.out(0))
    checked = validate_prompt(graph.finalize(), REGISTRY)
    assert checked.ok, checked.node_errors
    result = Executor(REGISTRY, make_cache()).execute(checked.prompt, "p1", checked.outputs)
    assert result.success, result.error
    (shown,) = [ui for ui in result.outputs.values() if "text" in ui]
    assert shown["text"] == ["20"]  # 12 + 8 wide
