"""A LoRA made for another model family (SDXL keys: a second text encoder, two transformer blocks
per level) applied to the tiny SD1.5 checkpoint: not one of its keys fits. ComfyUI logs a warning
and samples without the LoRA; Loom fails the LoraLoader node with an error naming the file, and the
next prompt runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.faults.fault_engine import FaultEngine, error_of, txt2img

pytestmark = pytest.mark.slow

SDXL_ONLY_STEMS = (
    ("lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k", 8, 16),  # depth 2: SDXL only
    ("lora_unet_label_emb_0_0", 8, 16),  # SDXL's size conditioning
    ("lora_te2_text_model_encoder_layers_0_self_attn_q_proj", 8, 8),  # clip_g: SDXL only
)


def write_sdxl_lora(folder: Path, name: str = "sdxl_style.safetensors") -> str:
    tensors = {}
    for stem, rows, cols in SDXL_ONLY_STEMS:
        tensors[f"{stem}.lora_up.weight"] = torch.ones(rows, 2)
        tensors[f"{stem}.lora_down.weight"] = torch.ones(2, cols)
        tensors[f"{stem}.alpha"] = torch.tensor(2.0)
    save_file(tensors, str(folder / name))
    return name


def test_lora_for_another_family_fails_with_an_error_naming_it(engine_root: Path) -> None:
    engine = FaultEngine.create(engine_root)
    lora = write_sdxl_lora(engine_root / "models" / "loras")
    result, _ = engine.run(txt2img(lora=lora, save=False))
    error = error_of(result)
    assert error["node_type"] == "LoraLoader" and lora in error["exception_message"]
    good, _ = engine.run(txt2img(save=False, seed=2))
    assert good.status == "success"
