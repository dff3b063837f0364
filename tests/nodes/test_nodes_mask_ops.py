"""Mask nodes (nodes/mask_ops.py): ComfyUI's shapes in /object_info and hand-computed numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import Interrupted
from core.runtime import NodeRuntime
from execution.cache import make_cache
from execution.executor import Executor
from execution.validate import validate_prompt
from nodes.api import GraphBuilder
from nodes.builtin import builtin_registry
from nodes.registry import NodeRegistry
from tests.nodes.conftest import call_node

REGISTRY: NodeRegistry = builtin_registry()


def run(class_type: str, **inputs: Any) -> Any:
    return call_node(REGISTRY[class_type], inputs)


def tensor(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


# --- /object_info ---------------------------------------------------------------------------------------

EXPECTED = {
    # class_type: (display name, category, outputs)
    "LatentCompositeMasked": ("LatentCompositeMasked", "latent", ["LATENT"]),
    "MaskToImage": ("Convert Mask to Image", "mask", ["IMAGE"]),
    "ImageToMask": ("Convert Image to Mask", "mask", ["MASK"]),
    "ImageColorToMask": ("ImageColorToMask", "mask", ["MASK"]),
    "SolidMask": ("SolidMask", "mask", ["MASK"]),
    "InvertMask": ("InvertMask", "mask", ["MASK"]),
    "CropMask": ("CropMask", "mask", ["MASK"]),
    "MaskComposite": ("MaskComposite", "mask", ["MASK"]),
    "FeatherMask": ("FeatherMask", "mask", ["MASK"]),
    "GrowMask": ("GrowMask", "mask", ["MASK"]),
    "ThresholdMask": ("ThresholdMask", "mask", ["MASK"]),
    "MaskPreview": ("Preview Mask", "mask", []),
}


def test_every_mask_node_is_registered_with_comfyui_names_and_shapes() -> None:
    info = REGISTRY.object_info()
    for class_type, (display, category, outputs) in EXPECTED.items():
        entry = info[class_type]
        assert (entry["display_name"], entry["category"], entry["output"]) == (display, category, outputs), class_type
        json.dumps(entry)
    assert info["MaskPreview"]["output_node"] is True
    assert info["MaskPreview"]["input"]["hidden"] == {"prompt": ["PROMPT"], "extra_pnginfo": ["EXTRA_PNGINFO"]}


def test_mask_inputs_are_declared_as_in_comfyui() -> None:
    info = REGISTRY.object_info()
    grow = info["GrowMask"]["input"]["required"]
    assert grow["expand"] == ["INT", {"default": 0, "min": -16384, "max": 16384, "step": 1}]
    assert grow["tapered_corners"] == ["BOOLEAN", {"default": True}]
    composite = info["MaskComposite"]
    assert composite["input_order"]["required"] == ["destination", "source", "x", "y", "operation"]
    assert composite["input"]["required"]["operation"] == [
        "COMBO",
        {"options": ["multiply", "add", "subtract", "and", "or", "xor"]},
    ]
    latent = info["LatentCompositeMasked"]["input"]
    assert latent["required"]["x"] == ["INT", {"default": 0, "min": 0, "max": 16384, "step": 8}]
    assert latent["required"]["resize_source"] == ["BOOLEAN", {"default": False}]
    assert latent["optional"] == {"mask": ["MASK"]}
    assert info["ImageToMask"]["input"]["required"]["channel"] == [
        "COMBO",
        {"options": ["red", "green", "blue", "alpha"]},
    ]
    assert info["ImageColorToMask"]["input"]["required"]["color"][1]["display"] == "number"
    assert info["SolidMask"]["input"]["required"]["value"] == [
        "FLOAT",
        {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01},
    ]
    assert info["FeatherMask"]["input_order"]["required"] == ["mask", "left", "top", "right", "bottom"]
    assert info["CropMask"]["input_order"]["required"] == ["mask", "x", "y", "width", "height"]


# --- simple masks ---------------------------------------------------------------------------------------


def test_solid_invert_threshold_crop() -> None:
    (solid,) = run("SolidMask", value=0.25, width=3, height=2)
    assert solid.shape == (1, 2, 3) and torch.all(solid == 0.25) and solid.dtype == torch.float32
    single = tensor([[0.0, 0.5], [0.75, 1.0]])  # [H, W] masks are accepted everywhere
    (inverted,) = run("InvertMask", mask=single)
    assert inverted.tolist() == [[1.0, 0.5], [0.25, 0.0]]
    (threshold,) = run("ThresholdMask", mask=single, value=0.5)
    assert threshold.tolist() == [[0.0, 0.0], [1.0, 1.0]]  # strictly above
    grid = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    (crop,) = run("CropMask", mask=grid, x=1, y=2, width=2, height=5)
    assert crop.tolist() == [[[9, 10], [13, 14]]]


def test_conversions_between_images_and_masks() -> None:
    (image,) = run("MaskToImage", mask=tensor([[0.25, 1.0]]))
    assert image.shape == (1, 1, 2, 3) and image[0, 0, 0].tolist() == [0.25] * 3
    rgba = torch.tensor([0.1, 0.2, 0.3, 0.4]).reshape(1, 1, 1, 4)
    for index, channel in enumerate(("red", "green", "blue", "alpha")):
        (mask,) = run("ImageToMask", image=rgba, channel=channel)
        assert mask.shape == (1, 1, 1) and mask.item() == rgba[0, 0, 0, index].item()
    with pytest.raises(ValueError, match="channel 'alpha' does not exist in an image with 3 channels"):
        run("ImageToMask", image=rgba[..., :3], channel="alpha")


def test_image_color_to_mask_compares_8_bit_colours() -> None:
    image = torch.tensor([[[1.0, 128 / 255, 0.0], [0.0, 0.5, 0.0], [1.0, 0.5, 0.0]]]).reshape(1, 1, 3, 3)
    (orange,) = run("ImageColorToMask", image=image, color=0xFF8000)
    # 0.5 * 255 = 127.5 rounds half to even: 128, so the 0.5 pixels are 0x80 too
    assert orange.tolist() == [[[1.0, 0.0, 1.0]]]
    (green,) = run("ImageColorToMask", image=image, color=0x008000)
    assert green.tolist() == [[[0.0, 1.0, 0.0]]]


# --- MaskComposite --------------------------------------------------------------------------------------

SOURCE = [[1.0, 0.25], [0.6, 0.0]]


@pytest.mark.parametrize(
    ("operation", "region"),
    [
        ("multiply", [[0.5, 0.125], [0.3, 0.0]]),
        ("add", [[1.0, 0.75], [1.0, 0.5]]),  # 1.5 and 1.1 are clamped
        ("subtract", [[0.0, 0.25], [0.0, 0.5]]),  # -0.5 and -0.1 are clamped
    ],
)
def test_mask_composite_arithmetic(operation: str, region: list[list[float]]) -> None:
    destination = torch.full((3, 3), 0.5)
    (out,) = run("MaskComposite", destination=destination, source=tensor(SOURCE), x=1, y=1, operation=operation)
    expected = torch.full((1, 3, 3), 0.5)
    expected[0, 1:, 1:] = tensor(region)
    assert torch.allclose(out, expected)
    assert torch.all(destination == 0.5)  # not modified in place


@pytest.mark.parametrize(
    ("operation", "region"),
    [("and", [[1.0, 0.0], [0.0, 0.0]]), ("or", [[1.0, 1.0], [1.0, 0.0]]), ("xor", [[0.0, 1.0], [1.0, 0.0]])],
)
def test_mask_composite_logic_rounds_first(operation: str, region: list[list[float]]) -> None:
    destination = tensor([[0, 0, 0], [0, 0.9, 0.7], [0, 0.2, 0.5]])  # rounds to 1 1 / 0 0 (0.5 -> 0, half to even)
    source = tensor([[1.0, 0.4], [0.6, 0.5]])  # rounds to 1 0 / 1 0
    (out,) = run("MaskComposite", destination=destination, source=source, x=1, y=1, operation=operation)
    assert out[0, 1:, 1:].tolist() == region
    assert torch.all(out[0, 0] == 0) and torch.all(out[0, :, 0] == 0)


def test_mask_composite_offsets_clip_and_batches_broadcast() -> None:
    destination = torch.zeros((3, 3))
    (corner,) = run("MaskComposite", destination=destination, source=torch.ones((2, 2)), x=2, y=2, operation="add")
    assert corner[0].tolist() == [[0, 0, 0], [0, 0, 0], [0, 0, 1]]
    (outside,) = run("MaskComposite", destination=destination, source=torch.ones((2, 2)), x=5, y=0, operation="add")
    assert torch.all(outside == 0) and outside.shape == (1, 3, 3)
    sources = torch.stack([torch.ones((3, 3)), torch.full((3, 3), 0.5)])
    (batched,) = run("MaskComposite", destination=destination, source=sources, x=0, y=0, operation="add")
    assert batched.shape == (2, 3, 3) and batched[:, 0, 0].tolist() == [1.0, 0.5]
    with pytest.raises(ValueError, match="destination has 2 masks and source has 3"):
        run("MaskComposite", destination=torch.zeros((2, 3, 3)), source=torch.zeros((3, 3, 3)), x=0, y=0,
            operation="add")  # fmt: skip


# --- GrowMask -------------------------------------------------------------------------------------------


def dot(height: int = 4, width: int = 4, y: int = 1, x: int = 1) -> torch.Tensor:
    mask = torch.zeros((height, width))
    mask[y, x] = 1.0
    return mask


def test_grow_with_tapered_corners_grows_a_cross() -> None:
    (out,) = run("GrowMask", mask=dot(), expand=1, tapered_corners=True)
    assert out.tolist() == [[[0, 1, 0, 0], [1, 1, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]]]
    (two,) = run("GrowMask", mask=dot(), expand=2, tapered_corners=True)
    assert two.tolist() == [[[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 0], [0, 1, 0, 0]]]


def test_grow_without_tapered_corners_grows_a_square() -> None:
    (out,) = run("GrowMask", mask=dot(), expand=1, tapered_corners=False)
    assert out.tolist() == [[[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]]]


def test_negative_expand_shrinks_and_the_border_does_not_erode() -> None:
    block = torch.zeros((4, 4))
    block[:3, :3] = 1.0
    (shrunk,) = run("GrowMask", mask=block, expand=-1, tapered_corners=True)
    # pixels on the image border keep their value: outside pixels do not count (scipy's reflect)
    assert shrunk.tolist() == [[[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]]
    (full,) = run("GrowMask", mask=torch.ones((3, 3)), expand=-2, tapered_corners=False)
    assert torch.all(full == 1)


def test_grow_takes_the_grey_maximum_and_stops_early_when_stable() -> None:
    mask = torch.zeros((1, 4, 4))
    mask[0, 0, 0], mask[0, 3, 3] = 0.3, 0.7
    (out,) = run("GrowMask", mask=mask, expand=1, tapered_corners=True)
    assert out[0, 0, 1].item() == pytest.approx(0.3) and out[0, 2, 3].item() == pytest.approx(0.7)
    assert out[0, 1, 1].item() == 0.0
    (huge,) = run("GrowMask", mask=mask, expand=16384, tapered_corners=True)
    assert torch.all(huge == mask.max())
    (none,) = run("GrowMask", mask=mask, expand=0, tapered_corners=True)
    assert torch.equal(none, mask) and none is not mask


def test_grow_matches_scipy_grey_morphology() -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    masks = torch.rand((2, 7, 9), generator=torch.Generator().manual_seed(3))
    for tapered in (True, False):
        corner = 0 if tapered else 1
        footprint = np.array([[corner, 1, corner], [1, 1, 1], [corner, 1, corner]])
        for expand in (3, -2):
            (out,) = run("GrowMask", mask=masks, expand=expand, tapered_corners=tapered)
            for index, mask in enumerate(masks.numpy()):
                expected = mask
                for _ in range(abs(expand)):
                    morph = ndimage.grey_dilation if expand > 0 else ndimage.grey_erosion
                    expected = morph(expected, footprint=footprint)
                assert np.array_equal(out[index].numpy(), expected), (tapered, expand)


def test_grow_checks_for_interrupts() -> None:
    calls: list[int] = []

    def interrupt() -> None:
        calls.append(1)
        if len(calls) > 1:
            raise Interrupted("stop")

    runtime = NodeRuntime(node_id="9", class_type="GrowMask", interrupt_check=interrupt)
    with pytest.raises(Interrupted):
        call_node(REGISTRY["GrowMask"], {"mask": torch.zeros((200, 200)), "expand": 300, "tapered_corners": True},
                  runtime)  # fmt: skip
    assert len(calls) == 2  # checked at the first step and again 64 steps later


# --- FeatherMask ----------------------------------------------------------------------------------------


def test_feather_ramps_each_side_like_comfyui() -> None:
    (out,) = run("FeatherMask", mask=torch.ones((4, 6)), left=3, top=2, right=2, bottom=0)
    columns = torch.tensor([1 / 3, 2 / 3, 1.0, 1.0, 1.0, 0.5])  # right: last column 1/2, next 2/2
    rows = torch.tensor([0.5, 1.0, 1.0, 1.0])
    assert out.shape == (1, 4, 6)
    assert torch.equal(out[0], rows[:, None] * columns[None, :])
    (overlap,) = run("FeatherMask", mask=torch.ones((1, 2)), left=2, top=0, right=2, bottom=0)
    assert overlap.tolist() == [[[0.5, 0.5]]]  # column 0: 1/2 * 2/2, column 1: 2/2 * 1/2
    (clipped,) = run("FeatherMask", mask=torch.ones((1, 4)), left=10, top=0, right=0, bottom=0)
    assert clipped.tolist() == [[[0.25, 0.5, 0.75, 1.0]]]


# --- LatentCompositeMasked ------------------------------------------------------------------------------


def latent(value: float, height: int, width: int, batch: int = 1, **extra: Any) -> dict[str, Any]:
    return {"samples": torch.full((batch, 4, height, width), value), **extra}


def test_latent_composite_pastes_at_pixel_offsets_divided_by_8() -> None:
    destination = latent(0.0, 4, 4, batch_index=[3])
    (out,) = run(
        "LatentCompositeMasked", destination=destination, source=latent(1.0, 2, 2), x=12, y=16, resize_source=False
    )
    assert out["batch_index"] == [3]  # the destination's other keys carry over
    expected = torch.zeros((4, 4))
    expected[2:4, 1:3] = 1.0  # x 12 -> column 1, y 16 -> row 2
    assert all(torch.equal(out["samples"][0, c], expected) for c in range(4))
    assert torch.all(destination["samples"] == 0)


def test_latent_composite_uses_the_mask_and_can_stretch_the_source() -> None:
    mask = tensor([[1.0, 0.0], [0.0, 0.25]])  # [H, W], resized (bilinear) to the source: same size here
    (out,) = run(
        "LatentCompositeMasked", destination=latent(0.0, 3, 3), source=latent(1.0, 2, 2), x=0, y=0,
        resize_source=False, mask=mask,
    )  # fmt: skip
    assert out["samples"][0, 2].tolist() == [[1.0, 0.0, 0.0], [0.0, 0.25, 0.0], [0.0, 0.0, 0.0]]
    (stretched,) = run(
        "LatentCompositeMasked", destination=latent(0.0, 3, 3, batch=2), source=latent(0.5, 1, 1), x=0, y=0,
        resize_source=True,
    )  # fmt: skip
    assert stretched["samples"].shape == (2, 4, 3, 3) and torch.all(stretched["samples"] == 0.5)
    with pytest.raises(ValueError, match="input 'source' must be a LATENT"):
        run("LatentCompositeMasked", destination=latent(0.0, 3, 3), source={}, x=0, y=0, resize_source=False)


# --- MaskPreview ----------------------------------------------------------------------------------------


def test_mask_preview_writes_a_grey_png_to_temp(tmp_path: Path) -> None:
    runtime = NodeRuntime(node_id="3", class_type="MaskPreview", services={"temp_dir": tmp_path})
    mask = tensor([[0.0, 0.5], [1.0, 0.25]])
    result = call_node(REGISTRY["MaskPreview"], {"mask": mask, "prompt": {"1": {}}}, runtime)
    (entry,) = result["ui"]["images"]
    assert entry["type"] == "temp" and entry["subfolder"] == "" and entry["filename"].startswith("ComfyUI_temp_")
    assert result["ui"]["animated"] == [False]
    with Image.open(tmp_path / entry["filename"]) as img:
        assert img.mode == "RGB" and img.size == (2, 2)
        assert np.asarray(img)[..., 0].tolist() == [[0, 127], [255, 63]]  # truncated like saved images
        assert "prompt" in img.info


def test_mask_nodes_run_through_the_validator_and_executor(tmp_path: Path) -> None:
    graph = GraphBuilder(prefix="mask")
    solid = graph.node("SolidMask", value=0.0, width=6, height=4)
    crop = graph.node("CropMask", mask=solid.out(0), x=0, y=0, width=3, height=3)
    inverted = graph.node("InvertMask", mask=crop.out(0))
    combined = graph.node("MaskComposite", destination=solid.out(0), source=inverted.out(0), x=2, y=1, operation="add")
    grown = graph.node("GrowMask", mask=combined.out(0), expand=1, tapered_corners=False)
    graph.node("MaskPreview", mask=grown.out(0))
    checked = validate_prompt(graph.finalize(), REGISTRY)
    assert checked.ok, checked.node_errors
    result = Executor(REGISTRY, make_cache(), services={"temp_dir": tmp_path}).execute(
        checked.prompt, "p1", checked.outputs
    )
    assert result.success, result.error
    (preview,) = [ui for ui in result.outputs.values() if "images" in ui]
    with Image.open(tmp_path / preview["images"][0]["filename"]) as img:
        pixels = np.asarray(img)[..., 0]
    # a 3x3 block at (2, 1) grown by one square step covers columns 1-5 and every row
    assert pixels.tolist() == [[0, 255, 255, 255, 255, 255]] * 4
