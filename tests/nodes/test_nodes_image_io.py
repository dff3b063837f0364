"""Image file nodes (nodes/image_io.py) and PNG metadata (nodes/pngmeta.py)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from core.config import Config
from core.runtime import NodeRuntime
from execution.cache import make_cache
from execution.executor import Executor
from execution.validate import validate_prompt
from nodes import image_io
from nodes.api import DeclarativeNode, GraphBuilder
from nodes.builtin import builtin_registry
from nodes.pngmeta import add_png_text, metadata_texts, read_png_metadata, read_png_text, text_chunk
from tests.nodes.conftest import ROOT, call_node

LOAD = DeclarativeNode(image_io.LoadImage)
LOAD_MASK = DeclarativeNode(image_io.LoadImageMask)
SAVE = DeclarativeNode(image_io.SaveImage)
PREVIEW = DeclarativeNode(image_io.PreviewImage)


@pytest.fixture
def folders(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Input/output/temp folders, bound for the hooks that run without a runtime."""
    services: dict[str, Any] = {"config": Config(base_dir=tmp_path)}
    for kind in image_io.FOLDER_KINDS:
        folder = tmp_path / kind
        folder.mkdir()
        services[f"{kind}_dir"] = folder
    image_io.bind_folders(services)
    yield services
    image_io.bind_folders(None)


def runtime(services: dict[str, Any], **changes: Any) -> NodeRuntime:
    return NodeRuntime(node_id="7", class_type="test", services={**services, **changes})


def gradient(batch: int = 1, height: int = 6, width: int = 5) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.rand((batch, height, width, 3), generator=gen)


def save(services: dict[str, Any], images: torch.Tensor, **inputs: Any) -> dict[str, Any]:
    return call_node(SAVE, {"images": images, **inputs}, runtime(services))


# --- SaveImage ----------------------------------------------------------------------------------------


def test_save_writes_png_with_metadata_and_reports_it(folders: dict[str, Any]) -> None:
    prompt = {"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI"}}}
    workflow = {"nodes": [{"id": 1, "type": "SaveImage"}], "version": 0.4}
    result = save(folders, gradient(), prompt=prompt, extra_pnginfo={"workflow": workflow, "note": "hi"})

    assert result == {"ui": {"images": [{"filename": "ComfyUI_00001_.png", "subfolder": "", "type": "output"}]}}
    path = folders["output_dir"] / "ComfyUI_00001_.png"
    assert read_png_metadata(path) == {"prompt": prompt, "workflow": workflow}
    texts = read_png_text(path)
    assert texts["prompt"] == json.dumps(prompt) and texts["note"] == '"hi"'
    with Image.open(path) as img:
        assert img.format == "PNG" and img.mode == "RGB" and img.size == (5, 6)


def test_quantisation_truncates_like_comfyui(folders: dict[str, Any]) -> None:
    values = torch.tensor([0.5, 1.0, 0.0, 0.999, -0.2, 1.7, 0.25, 0.1])
    image = values.view(1, 1, 8, 1).expand(1, 1, 8, 3).contiguous()
    save(folders, image)
    with Image.open(folders["output_dir"] / "ComfyUI_00001_.png") as img:
        saved = np.asarray(img)[0, :, 0].tolist()
    # 255 * x truncated toward zero after clipping to 0..255: 127.5 -> 127, 254.745 -> 254, 63.75 -> 63, 25.5 -> 25
    assert saved == [127, 255, 0, 254, 0, 255, 63, 25]


def test_saved_image_loads_back_as_the_quantised_pixels(folders: dict[str, Any]) -> None:
    images = gradient(batch=2)
    save(folders, images, filename_prefix="round")
    for index in range(2):
        name = f"round_{index + 1:05}_.png"
        (folders["input_dir"] / name).write_bytes((folders["output_dir"] / name).read_bytes())
        pixels, mask = call_node(LOAD, {"image": name}, runtime(folders))
        expected = torch.floor(images[index] * 255).clamp(0, 255) / 255
        assert pixels.shape == (1, 6, 5, 3) and pixels.dtype == torch.float32
        torch.testing.assert_close(pixels[0], expected, rtol=0, atol=1e-6)
        assert mask.shape == (1, 64, 64) and not mask.any()


def test_counter_continues_after_the_highest_existing_number(folders: dict[str, Any]) -> None:
    out = folders["output_dir"]
    for name in ("ComfyUI_00007_.png", "ComfyUI_00002_.png", "ComfyUIx_00099_.png", "ComfyUI_temp_abcde_00050_.png"):
        (out / name).write_bytes(b"")
    result = save(folders, gradient(batch=2))
    assert [entry["filename"] for entry in result["ui"]["images"]] == ["ComfyUI_00008_.png", "ComfyUI_00009_.png"]
    result = save(folders, gradient())
    assert result["ui"]["images"][0]["filename"] == "ComfyUI_00010_.png"


def test_prefix_subfolders_variables_and_batch_number(folders: dict[str, Any]) -> None:
    result = save(
        folders, gradient(batch=2, height=6, width=5), filename_prefix="runs/%width%x%height%/img_%batch_num%"
    )
    entries = result["ui"]["images"]
    assert [(e["subfolder"], e["filename"]) for e in entries] == [
        ("runs/5x6", "img_0_00001_.png"),
        ("runs/5x6", "img_1_00002_.png"),
    ]
    assert (folders["output_dir"] / "runs" / "5x6" / "img_1_00002_.png").is_file()


@pytest.mark.parametrize("prefix", ["../escape", "a/../../escape", "/tmp/escape", "linked/escape"])
def test_prefix_can_never_leave_the_output_folder(folders: dict[str, Any], tmp_path: Path, prefix: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (folders["output_dir"] / "linked").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="outside the output folder"):
        save(folders, gradient(), filename_prefix=prefix)
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "escape_00001_.png").exists()


def test_empty_prefix_is_refused_with_a_hint(folders: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="no file name part"):
        save(folders, gradient(), filename_prefix="")


def test_disable_metadata_writes_no_text_chunks(folders: dict[str, Any], tmp_path: Path) -> None:
    services = {**folders, "config": Config(base_dir=tmp_path, disable_metadata=True)}
    save(services, gradient(), prompt={"1": {}}, extra_pnginfo={"workflow": {"nodes": []}})
    path = folders["output_dir"] / "ComfyUI_00001_.png"
    assert read_png_text(path) == {}
    assert read_png_metadata(path) == {"prompt": None, "workflow": None}


def test_save_handles_grey_and_rgba_images_and_rejects_other_shapes(folders: dict[str, Any]) -> None:
    save(folders, torch.full((1, 2, 2, 1), 0.5), filename_prefix="grey")
    save(folders, torch.full((1, 2, 2, 4), 1.0), filename_prefix="rgba")
    with Image.open(folders["output_dir"] / "grey_00001_.png") as img:
        assert img.mode == "L" and np.asarray(img).tolist() == [[127, 127], [127, 127]]
    with Image.open(folders["output_dir"] / "rgba_00001_.png") as img:
        assert img.mode == "RGBA"
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        save(folders, torch.zeros((2, 2, 3)))


def test_preview_goes_to_temp_with_a_random_suffix(folders: dict[str, Any]) -> None:
    result = call_node(PREVIEW, {"images": gradient(), "prompt": {"1": {}}}, runtime(folders))
    (entry,) = result["ui"]["images"]
    assert entry["type"] == "temp" and entry["subfolder"] == ""
    assert re.fullmatch(r"ComfyUI_temp_[a-z]{5}_00001_\.png", entry["filename"])
    path = folders["temp_dir"] / entry["filename"]
    assert read_png_metadata(path)["prompt"] == {"1": {}}
    assert list(folders["output_dir"].iterdir()) == []


def test_save_needs_the_output_folder_service(folders: dict[str, Any]) -> None:
    services = {key: value for key, value in folders.items() if key != "output_dir"}
    with pytest.raises(Exception, match="output_dir"):
        save(services, gradient())


# --- LoadImage ----------------------------------------------------------------------------------------


def test_exif_orientation_is_applied(folders: dict[str, Any]) -> None:
    stored = np.zeros((2, 4, 3), dtype=np.uint8)  # 4 wide, 2 high; one red pixel top-left
    stored[0, 0] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(stored).save(folders["input_dir"] / "rotated.png", exif=exif)

    pixels, _ = call_node(LOAD, {"image": "rotated.png"}, runtime(folders))
    expected = np.rot90(stored, k=-1).astype(np.float32) / 255  # clockwise: now 2 wide, 4 high
    assert pixels.shape == (1, 4, 2, 3)
    assert np.array_equal(pixels[0].numpy(), expected)
    assert pixels[0, 0, 1].tolist() == [1.0, 0.0, 0.0]  # the red pixel moved to the top-right


def test_alpha_becomes_inverted_mask(folders: dict[str, Any]) -> None:
    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[0, :, 3] = (0, 255, 51)
    Image.fromarray(rgba, mode="RGBA").save(folders["input_dir"] / "alpha.png")
    pixels, mask = call_node(LOAD, {"image": "alpha.png"}, runtime(folders))
    assert pixels.shape == (1, 1, 3, 3)
    assert mask.shape == (1, 1, 3) and mask.dtype == torch.float32
    torch.testing.assert_close(mask[0, 0], torch.tensor([1.0, 0.0, 0.8]))


def test_palette_transparency_becomes_mask(folders: dict[str, Any]) -> None:
    palette_image = Image.new("P", (2, 1))
    palette_image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette_image.putpixel((0, 0), 0)
    palette_image.putpixel((1, 0), 1)
    palette_image.save(folders["input_dir"] / "palette.png", transparency=1)
    pixels, mask = call_node(LOAD, {"image": "palette.png"}, runtime(folders))
    assert pixels[0, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert mask[0, 0].tolist() == [0.0, 1.0]


def test_gif_frames_become_a_batch(folders: dict[str, Any]) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (3, 2), colour) for colour in colours]
    frames[0].save(folders["input_dir"] / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    pixels, mask = call_node(LOAD, {"image": "anim.gif"}, runtime(folders))
    assert pixels.shape == (3, 2, 3, 3) and mask.shape == (3, 64, 64)
    for index, colour in enumerate(colours):
        assert pixels[index, 1, 2].tolist() == [c / 255 for c in colour]


def test_tiff_frames_of_another_size_are_skipped(folders: dict[str, Any]) -> None:
    frames = [Image.new("RGB", (4, 4), (10, 20, 30)), Image.new("RGB", (2, 2), (1, 1, 1)), Image.new("RGB", (4, 4))]
    frames[0].save(folders["input_dir"] / "pages.tiff", save_all=True, append_images=frames[1:])
    pixels, _ = call_node(LOAD, {"image": "pages.tiff"}, runtime(folders))
    assert pixels.shape == (2, 4, 4, 3)
    assert pixels[0, 0, 0].tolist() == pytest.approx([10 / 255, 20 / 255, 30 / 255]) and not pixels[1].any()


def test_fingerprint_is_the_file_hash_and_follows_content(folders: dict[str, Any]) -> None:
    path = folders["input_dir"] / "a.png"
    Image.new("RGB", (2, 2), (1, 2, 3)).save(path)
    first = LOAD.fingerprint({"image": "a.png"})
    assert first == hashlib.sha256(path.read_bytes()).hexdigest()
    assert LOAD.fingerprint({"image": "a.png"}) == first
    Image.new("RGB", (2, 2), (3, 2, 1)).save(path)
    assert LOAD.fingerprint({"image": "a.png"}) != first
    assert LOAD_MASK.fingerprint({"image": "a.png", "channel": "red"}) == LOAD.fingerprint({"image": "a.png"})


def test_validation_checks_existence_and_containment(folders: dict[str, Any], tmp_path: Path) -> None:
    Image.new("RGB", (1, 1)).save(folders["input_dir"] / "here.png")
    Image.new("RGB", (1, 1)).save(folders["output_dir"] / "made.png")
    (tmp_path / "secret.png").write_bytes(b"x")
    (folders["input_dir"] / "leak.png").symlink_to(tmp_path / "secret.png")

    assert LOAD.validate({"image": "here.png"}, None) is True
    assert LOAD.validate({"image": "made.png [output]"}, None) is True
    assert LOAD.validate({"image": None}, None) is True  # linked: checked when it runs
    assert LOAD.validate({"image": "nope.png"}, None) == "Invalid image file: nope.png"
    for escaping in ("../secret.png", "leak.png", str(tmp_path / "secret.png")):
        message = LOAD.validate({"image": escaping}, None)
        assert isinstance(message, str) and message.startswith(f"Invalid image file: {escaping}")
    with pytest.raises(ValueError, match="outside the input folder"):
        call_node(LOAD, {"image": "leak.png"}, runtime(folders))


def test_unreadable_file_fails_with_its_name(folders: dict[str, Any]) -> None:
    (folders["input_dir"] / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read image 'broken.png'"):
        call_node(LOAD, {"image": "broken.png"}, runtime(folders))


def test_combo_lists_images_recursively_and_sees_new_files(folders: dict[str, Any]) -> None:
    root = folders["input_dir"]
    (root / "sub").mkdir()
    (root / ".hidden").mkdir()
    for name in ("b.png", "a.JPG", "sub/c.webp", "notes.txt", ".x.png", ".hidden/d.png", "z.latent"):
        (root / name).write_bytes(b"")
    (root / "loop").symlink_to(root, target_is_directory=True)  # must not recurse forever

    def choices() -> list[Any]:
        (image_input,) = LOAD.spec().inputs
        return list(image_input.choices or ())

    assert choices() == ["a.JPG", "b.png", "sub/c.webp"]
    (root / "new.gif").write_bytes(b"")
    assert choices() == ["a.JPG", "b.png", "new.gif", "sub/c.webp"]
    assert LOAD.spec().object_info()["input"]["required"]["image"] == [choices(), {"image_upload": True}]


def test_load_image_mask_channels(folders: dict[str, Any]) -> None:
    rgba = np.array([[[10, 20, 30, 255], [40, 50, 60, 0]]], dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(folders["input_dir"] / "m.png")
    Image.fromarray(rgba[..., :3], mode="RGB").save(folders["input_dir"] / "rgb.png")

    def mask(name: str, channel: str) -> list[float]:
        (out,) = call_node(LOAD_MASK, {"image": name, "channel": channel}, runtime(folders))
        assert out.shape == (1, 1, 2) and out.dtype == torch.float32
        return out[0, 0].tolist()

    assert mask("m.png", "red") == pytest.approx([10 / 255, 40 / 255])
    assert mask("m.png", "blue") == pytest.approx([30 / 255, 60 / 255])
    assert mask("m.png", "alpha") == [0.0, 1.0]
    assert mask("rgb.png", "alpha") == [0.0, 0.0]  # opaque everywhere
    assert mask("rgb.png", "green") == pytest.approx([20 / 255, 50 / 255])


# --- through the validator and executor ------------------------------------------------------------------


def test_load_then_save_through_the_executor(folders: dict[str, Any]) -> None:
    Image.new("RGB", (3, 2), (255, 0, 0)).save(folders["input_dir"] / "red.png")
    registry = builtin_registry()
    graph = GraphBuilder(prefix="io")
    load = graph.node("LoadImage", image="red.png")
    graph.node("SaveImage", images=load.out(0), filename_prefix="out/red")
    checked = validate_prompt(graph.finalize(), registry)
    assert checked.ok, checked.node_errors
    executor = Executor(registry, make_cache(), services=folders)
    workflow = {"nodes": [], "version": 0.4}
    result = executor.execute(
        checked.prompt, "p1", checked.outputs, extra_data={"extra_pnginfo": {"workflow": workflow}}
    )
    assert result.success, result.error
    (saved,) = [ui for ui in result.outputs.values() if "images" in ui]
    assert saved["images"] == [{"filename": "red_00001_.png", "subfolder": "out", "type": "output"}]
    metadata = read_png_metadata(folders["output_dir"] / "out" / "red_00001_.png")
    assert metadata["workflow"] == workflow
    assert {node["class_type"] for node in metadata["prompt"].values()} == {"LoadImage", "SaveImage"}

    missing = GraphBuilder(prefix="bad")
    gone = missing.node("LoadImage", image="gone.png")
    missing.node("SaveImage", images=gone.out(0))
    failed = validate_prompt(missing.finalize(), registry)
    assert not failed.ok
    messages = [e["details"] for entry in failed.node_errors.values() for e in entry["errors"]]
    assert any("Invalid image file: gone.png" in m for m in messages), messages


def test_registering_the_nodes_imports_no_torch() -> None:
    code = (
        "import sys; import nodes.builtin as b; registry = b.builtin_registry(); "
        "assert 'LoadImage' in registry and 'SaveLatent' in registry; "
        "print(sorted(m for m in ('torch', 'numpy', 'PIL', 'safetensors') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# --- pngmeta ----------------------------------------------------------------------------------------------


def _png_bytes(info: PngInfo | None = None) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (1, 1)).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def test_metadata_texts_match_comfyui_encoding() -> None:
    texts = metadata_texts({"1": {"inputs": {"text": "café"}}}, {"workflow": {"a": 1}, "other": [1, 2]})
    assert list(texts) == ["prompt", "workflow", "other"]
    assert texts["prompt"] == '{"1": {"inputs": {"text": "caf\\u00e9"}}}'  # ASCII-escaped JSON
    assert texts["other"] == "[1, 2]"
    assert metadata_texts(None, None) == {}


def test_reader_accepts_text_ztxt_and_itxt_chunks() -> None:
    info = PngInfo()
    info.add_text("prompt", json.dumps({"1": {"class_type": "A"}}), zip=True)  # zTXt
    info.add_itxt("workflow", json.dumps({"nodes": ["é"]}, ensure_ascii=False), zip=True)
    info.add_text("parameters", "steps: 20")
    data = _png_bytes(info)
    assert read_png_metadata(data) == {"prompt": {"1": {"class_type": "A"}}, "workflow": {"nodes": ["é"]}}
    assert read_png_text(data)["parameters"] == "steps: 20"


def test_writer_chunks_are_read_by_pillow_and_by_us() -> None:
    texts = {"prompt": json.dumps({"5": {}}), "title": "naïve ☃"}
    data = add_png_text(_png_bytes(), texts)
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        assert img.text == texts
    assert read_png_text(data) == texts
    assert text_chunk("k", "v")[4:8] == b"tEXt" and text_chunk("k", "☃")[4:8] == b"iTXt"
    with pytest.raises(ValueError, match="1 to 79"):
        text_chunk("", "v")


def test_reader_rejects_non_png_and_tolerates_bad_json_and_truncation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a PNG"):
        read_png_metadata(b"GIF89a....")
    info = PngInfo()
    info.add_text("prompt", "{not json")
    info.add_text("workflow", "[1, 2]")  # JSON, but not an object
    assert read_png_metadata(_png_bytes(info)) == {"prompt": None, "workflow": None}

    whole = add_png_text(_png_bytes(), {"prompt": '{"1": {}}'})
    path = tmp_path / "cut.png"
    path.write_bytes(whole[: len(whole) - 30])  # IDAT/IEND cut off, the text chunk survives
    assert read_png_metadata(path)["prompt"] == {"1": {}}
    bad_zip = add_png_text(_png_bytes(), {})[:33] + _raw_chunk(b"zTXt", b"prompt\x00\x00garbage")
    assert read_png_text(bad_zip) == {}


def _raw_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return len(body).to_bytes(4, "big") + kind + body + crc.to_bytes(4, "big")
