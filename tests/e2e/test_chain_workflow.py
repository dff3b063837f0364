"""One workflow file: txt2img -> outpaint -> inpaint -> upscale, run by `main.py run` on tiny models,
and the PNG it saves carries a workflow that runs again (issue 5's end-to-end check)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from diffusion.upscale.rrdbnet import RRDBConfig
from nodes.pngmeta import read_png_metadata
from tests.utils.checkpoints import cached_checkpoint

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = Path(__file__).parent / "workflows" / "txt2img_outpaint_inpaint_upscale.json"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chain")
    checkpoints = root / "models" / "checkpoints"
    upscalers = root / "models" / "upscale_models"
    checkpoints.mkdir(parents=True)
    upscalers.mkdir(parents=True)
    (root / "custom_nodes").mkdir()
    # copied, not linked: model paths must resolve inside the models folder
    shutil.copy(cached_checkpoint("sd15", tiny=True), checkpoints / "tiny_sd15.safetensors")
    torch.manual_seed(0)
    esrgan = RRDBConfig(nf=8, nb=1, gc=4, upsamples=1).build()
    save_file({k: v.contiguous() for k, v in esrgan.state_dict().items()}, upscalers / "tiny_esrgan_x2.safetensors")
    return root


def run_main(base: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(ROOT / "main.py"), "run", *args, "--base-directory", str(base), "-q"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=base)


def test_chain_runs_end_to_end_and_its_png_runs_again(base: Path) -> None:
    from PIL import Image

    done = run_main(base, str(WORKFLOW))
    assert done.returncode == 0, done.stderr
    outpaint = base / "output" / "chain" / "outpaint_00001_.png"
    final = base / "output" / "chain" / "final_00001_.png"
    assert str(final) in done.stdout and str(outpaint) in done.stdout
    assert Image.open(outpaint).size == (96, 64)  # 64 px + 16 px padding left and right
    assert Image.open(final).size == (192, 128)  # x2 upscale of the inpainted outpaint

    meta = read_png_metadata(final)
    assert meta["prompt"] == json.loads(WORKFLOW.read_text())  # the validated prompt, as ComfyUI writes it

    again = run_main(base, str(final))
    assert again.returncode == 0, again.stderr
    assert (base / "output" / "chain" / "final_00002_.png").is_file()
    # same seeds, same models: the re-run from the PNG reproduces the image bit for bit
    assert Image.open(final).tobytes() == Image.open(base / "output" / "chain" / "final_00002_.png").tobytes()
