"""Saving when the disk says no: a full disk (ENOSPC injected half-way through writing the PNG), an
output folder that may not be written (EACCES injected; and a real chmod 0555 folder, written to
by a process without CAP_DAC_OVERRIDE when the tests run as root, which ignores permissions), and an output "folder" that is a file.

SaveImage fails with an error naming the folder and the reason, leaves no half-written file behind
(PNGs are written under a hidden temporary name and renamed into place), and the next prompt saves
normally with the counter it would have had."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from nodes import image_io
from tests.faults.fault_engine import FaultEngine, error_of

ROOT = Path(__file__).resolve().parents[2]


def save_prompt(prefix: str = "disk") -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 2, "color": 0xFF0000}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


@pytest.fixture
def engine(tmp_path: Path) -> FaultEngine:
    for kind in ("input", "output", "temp", "models"):
        (tmp_path / kind).mkdir()
    return FaultEngine.create(tmp_path)


def assert_saves_normally(engine: FaultEngine, output: Path) -> None:
    result, _ = engine.run(save_prompt())
    assert result.status == "success", result.error
    names = [image["filename"] for image in result.outputs["2"]["images"]]
    assert names == ["disk_00001_.png", "disk_00002_.png"]  # no leftover bumped the counter
    for name in names:
        with Image.open(output / name) as image:
            assert image.size == (16, 16) and image.getpixel((0, 0)) == (255, 0, 0)


def test_full_disk_while_writing_leaves_nothing_and_the_next_prompt_saves(
    engine: FaultEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = engine.root / "output"
    real_save = Image.Image.save
    written: list[int] = []

    def save_until_full(self: Image.Image, fp: Any, *args: Any, **kwargs: Any) -> None:
        buffer = io.BytesIO()
        real_save(self, buffer, *args, **kwargs)
        half = buffer.getvalue()[: len(buffer.getvalue()) // 2]
        fp.write(half)  # part of the file reaches the disk, then it is full
        fp.flush()
        written.append(len(half))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(Image.Image, "save", save_until_full)
        result, _ = engine.run(save_prompt())
    assert written, "the injected write never ran"
    error = error_of(result)
    assert error["node_type"] == "SaveImage"
    message = error["exception_message"]
    assert str(output) in message and "No space left on device" in message
    assert sorted(os.listdir(output)) == []  # neither the PNG nor its temporary remains
    assert_saves_normally(engine, output)


def test_unwritable_output_folder_is_named_and_the_next_prompt_saves(
    engine: FaultEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = engine.root / "output"
    real_open = open

    def refuse(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).startswith(str(output)):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(image_io, "open", refuse, raising=False)  # the module's `open` shadows the builtin
        result, _ = engine.run(save_prompt())
    message = error_of(result)["exception_message"]
    assert str(output) in message and "Permission denied" in message and "writable" in message
    assert os.listdir(output) == []
    assert_saves_normally(engine, output)


READ_ONLY_CHILD = """
import json, os, sys
from pathlib import Path
import torch
from core.runtime import NodeRuntime
from nodes.image_io import save_png_batch
folder = Path(sys.argv[1])
try:
    save_png_batch(NodeRuntime("1", "SaveImage"), torch.rand(2, 8, 8, 3), folder, "ro", kind="output", compress_level=1, texts=None)
    error = None
except OSError as exc:
    error = str(exc)
print(json.dumps({"error": error, "left": sorted(os.listdir(folder))}))
"""


def test_read_only_output_folder_really_refuses(tmp_path: Path) -> None:
    """A real chmod 0555 folder. Root ignores permissions, so as root (CI) the save runs in a child
    process without the capabilities that let root write anywhere (setpriv's bounding set)."""
    output = tmp_path / "output"
    output.mkdir()
    output.chmod(0o555)
    command = [sys.executable, "-c", READ_ONLY_CHILD, str(output)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot drop CAP_DAC_OVERRIDE")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *command]
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        child = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert child.returncode == 0, child.stderr
        answer = json.loads(child.stdout.strip().splitlines()[-1])
        assert answer["error"] and str(output) in answer["error"] and "Permission denied" in answer["error"]
        assert answer["left"] == []
    finally:
        output.chmod(0o755)


def test_output_folder_that_is_a_file_is_named_and_the_next_prompt_saves(engine: FaultEngine) -> None:
    output = engine.root / "output"
    shutil.rmtree(output)
    output.write_bytes(b"not a folder")
    result, _ = engine.run(save_prompt())
    error = error_of(result)
    assert error["node_type"] == "SaveImage" and str(output) in error["exception_message"]
    assert output.read_bytes() == b"not a folder"
    output.unlink()
    output.mkdir()
    assert_saves_normally(engine, output)
