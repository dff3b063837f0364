"""The engine nodes as /object_info shows them: ComfyUI's names, input order, options and outputs;
file combos from the model folders; the lazily created "models" service main.py provides."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.config import Config
from core.paths import ModelPaths
from core.runtime import install_services
from nodes import conditioning, custom_sampling, latent, loaders, model_patches, sampling, vae_nodes
from nodes.builtin import builtin_registry

ENGINE_MODULES = (loaders, conditioning, sampling, custom_sampling, latent, vae_nodes, model_patches)

# class_type -> (required inputs in ComfyUI's order, output types, category)
EXPECTED: dict[str, tuple[list[str], list[str], str]] = {
    "CheckpointLoaderSimple": (["ckpt_name"], ["MODEL", "CLIP", "VAE"], "loaders"),
    "VAELoader": (["vae_name"], ["VAE"], "loaders"),
    "UNETLoader": (["unet_name", "weight_dtype"], ["MODEL"], "advanced/loaders"),
    "CLIPLoader": (["clip_name", "type"], ["CLIP"], "advanced/loaders"),
    "DualCLIPLoader": (["clip_name1", "clip_name2", "type"], ["CLIP"], "advanced/loaders"),
    "DiffusersLoader": (["model_path"], ["MODEL", "CLIP", "VAE"], "advanced/loaders/deprecated"),
    "CLIPTextEncode": (["text", "clip"], ["CONDITIONING"], "conditioning"),
    "CLIPSetLastLayer": (["clip", "stop_at_clip_layer"], ["CLIP"], "conditioning"),
    "ConditioningCombine": (["conditioning_1", "conditioning_2"], ["CONDITIONING"], "conditioning"),
    "ConditioningAverage": (
        ["conditioning_to", "conditioning_from", "conditioning_to_strength"], ["CONDITIONING"], "conditioning"
    ),
    "ConditioningSetArea": (["conditioning", "width", "height", "x", "y", "strength"], ["CONDITIONING"], "conditioning"),
    "ConditioningSetMask": (["conditioning", "mask", "strength", "set_cond_area"], ["CONDITIONING"], "conditioning"),
    "ConditioningSetTimestepRange": (["conditioning", "start", "end"], ["CONDITIONING"], "advanced/conditioning"),
    "CLIPTextEncodeSDXL": (
        ["clip", "width", "height", "crop_w", "crop_h", "target_width", "target_height", "text_g", "text_l"],
        ["CONDITIONING"],
        "advanced/conditioning",
    ),
    "CLIPTextEncodeSDXLRefiner": (["ascore", "width", "height", "text", "clip"], ["CONDITIONING"], "advanced/conditioning"),
    "KSampler": (
        ["model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative", "latent_image", "denoise"],
        ["LATENT"],
        "sampling",
    ),
    "KSamplerAdvanced": (
        ["model", "add_noise", "noise_seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative",
         "latent_image", "start_at_step", "end_at_step", "return_with_leftover_noise"],
        ["LATENT"],
        "sampling",
    ),  # fmt: skip
    "SamplerCustom": (
        ["model", "add_noise", "noise_seed", "cfg", "positive", "negative", "sampler", "sigmas", "latent_image"],
        ["LATENT", "LATENT"],
        "sampling/custom_sampling",
    ),
    "SamplerCustomAdvanced": (
        ["noise", "guider", "sampler", "sigmas", "latent_image"], ["LATENT", "LATENT"], "sampling/custom_sampling"
    ),
    "KSamplerSelect": (["sampler_name"], ["SAMPLER"], "sampling/custom_sampling/samplers"),
    "BasicScheduler": (["model", "scheduler", "steps", "denoise"], ["SIGMAS"], "sampling/custom_sampling/schedulers"),
    "KarrasScheduler": (["steps", "sigma_max", "sigma_min", "rho"], ["SIGMAS"], "sampling/custom_sampling/schedulers"),
    "ExponentialScheduler": (["steps", "sigma_max", "sigma_min"], ["SIGMAS"], "sampling/custom_sampling/schedulers"),
    "SDTurboScheduler": (["model", "steps", "denoise"], ["SIGMAS"], "sampling/custom_sampling/schedulers"),
    "SplitSigmas": (["sigmas", "step"], ["SIGMAS", "SIGMAS"], "sampling/custom_sampling/sigmas"),
    "BasicGuider": (["model", "conditioning"], ["GUIDER"], "sampling/custom_sampling/guiders"),
    "CFGGuider": (["model", "positive", "negative", "cfg"], ["GUIDER"], "sampling/custom_sampling/guiders"),
    "RandomNoise": (["noise_seed"], ["NOISE"], "sampling/custom_sampling/noise"),
    "DisableNoise": ([], ["NOISE"], "sampling/custom_sampling/noise"),
    "EmptyLatentImage": (["width", "height", "batch_size"], ["LATENT"], "latent"),
    "LatentUpscale": (["samples", "upscale_method", "width", "height", "crop"], ["LATENT"], "latent"),
    "LatentUpscaleBy": (["samples", "upscale_method", "scale_by"], ["LATENT"], "latent"),
    "LatentComposite": (["samples_to", "samples_from", "x", "y", "feather"], ["LATENT"], "latent"),
    "LatentBlend": (["samples1", "samples2", "blend_factor"], ["LATENT"], "_for_testing"),
    "LatentFromBatch": (["samples", "batch_index", "length"], ["LATENT"], "latent/batch"),
    "RepeatLatentBatch": (["samples", "amount"], ["LATENT"], "latent/batch"),
    "LatentBatch": (["samples1", "samples2"], ["LATENT"], "latent/batch"),
    "LatentCrop": (["samples", "width", "height", "x", "y"], ["LATENT"], "latent/transform"),
    "LatentFlip": (["samples", "flip_method"], ["LATENT"], "latent/transform"),
    "LatentRotate": (["samples", "rotation"], ["LATENT"], "latent/transform"),
    "SetLatentNoiseMask": (["samples", "mask"], ["LATENT"], "latent/inpaint"),
    "VAEDecode": (["samples", "vae"], ["IMAGE"], "latent"),
    "VAEEncode": (["pixels", "vae"], ["LATENT"], "latent"),
    "VAEDecodeTiled": (["samples", "vae", "tile_size", "overlap", "temporal_size", "temporal_overlap"], ["IMAGE"], "_for_testing"),
    "VAEEncodeTiled": (["pixels", "vae", "tile_size", "overlap", "temporal_size", "temporal_overlap"], ["LATENT"], "_for_testing"),
    "VAEEncodeForInpaint": (["pixels", "vae", "mask", "grow_mask_by"], ["LATENT"], "latent/inpaint"),
    "InpaintModelConditioning": (
        ["positive", "negative", "vae", "pixels", "mask", "noise_mask"],
        ["CONDITIONING", "CONDITIONING", "LATENT"],
        "conditioning/inpaint",
    ),
    "ModelSamplingDiscrete": (["model", "sampling", "zsnr"], ["MODEL"], "advanced/model"),
    "LoraLoader": (["model", "clip", "lora_name", "strength_model", "strength_clip"], ["MODEL", "CLIP"], "loaders"),
    "LoraLoaderModelOnly": (["model", "lora_name", "strength_model"], ["MODEL"], "loaders"),
}  # fmt: skip

DISPLAY_NAMES = {
    "CheckpointLoaderSimple": "Load Checkpoint",
    "KSampler": "KSampler",
    "KSamplerAdvanced": "KSampler (Advanced)",
    "CLIPTextEncode": "CLIP Text Encode (Prompt)",
    "CLIPSetLastLayer": "CLIP Set Last Layer",
    "VAEDecode": "VAE Decode",
    "VAEEncodeForInpaint": "VAE Encode (for Inpainting)",
    "EmptyLatentImage": "Empty Latent Image",
    "LatentUpscale": "Upscale Latent",
    "LatentRotate": "Rotate Latent",
    "LoraLoader": "Load LoRA",
    "ConditioningAverage": "ConditioningAverage",  # ComfyUI's mapping key has a trailing space
    "VAEDecodeTiled": "VAE Decode (Tiled)",
    "SplitSigmas": "SplitSigmas",
}


@pytest.fixture(scope="module")
def registry() -> Any:
    return builtin_registry()


def info(registry: Any, class_type: str) -> dict[str, Any]:
    return registry[class_type].spec().object_info()


def test_every_engine_node_is_registered_once(registry: Any) -> None:
    declared = [cls.spec.id for module in ENGINE_MODULES for cls in module.NODES]
    assert len(declared) == len(set(declared))
    assert set(EXPECTED) <= set(declared)
    for class_type in declared:
        assert class_type in registry, class_type
        json.dumps(info(registry, class_type))  # /object_info must serialise


@pytest.mark.parametrize("class_type", sorted(EXPECTED))
def test_inputs_outputs_and_category_match_comfyui(registry: Any, class_type: str) -> None:
    required, outputs, category = EXPECTED[class_type]
    entry = info(registry, class_type)
    assert entry["input_order"]["required"] == required
    assert entry["output"] == outputs
    assert entry["category"] == category
    assert entry["python_module"] == "nodes" and entry["output_node"] is False


def test_display_names(registry: Any) -> None:
    assert {name: info(registry, name)["display_name"] for name in DISPLAY_NAMES} == DISPLAY_NAMES


def test_widget_options_are_comfyuis(registry: Any) -> None:
    ksampler = info(registry, "KSampler")["input"]["required"]
    assert ksampler["seed"][1] | {"tooltip": None} == {
        "default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True, "tooltip": None
    }  # fmt: skip
    assert {k: ksampler["cfg"][1][k] for k in ("default", "min", "max", "step", "round")} == {
        "default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01
    }  # fmt: skip
    # V1 nodes declare combos as bare lists; V3 nodes (custom sampling) as ["COMBO", {"options"}]
    assert ksampler["sampler_name"][0] == list(sampling.SAMPLER_NAMES)
    select = info(registry, "KSamplerSelect")["input"]["required"]["sampler_name"]
    assert select[0] == "COMBO" and select[1]["options"] == list(sampling.SAMPLER_NAMES)
    empty = info(registry, "EmptyLatentImage")["input"]["required"]
    assert (empty["width"][1]["min"], empty["width"][1]["max"], empty["width"][1]["step"]) == (16, 16384, 8)
    assert empty["batch_size"][1]["max"] == 4096
    lora = info(registry, "LoraLoader")["input"]["required"]
    assert (lora["strength_model"][1]["min"], lora["strength_model"][1]["max"]) == (-100.0, 100.0)
    clip_layer = info(registry, "CLIPSetLastLayer")["input"]["required"]["stop_at_clip_layer"][1]
    assert (clip_layer["default"], clip_layer["min"], clip_layer["max"]) == (-1, -24, -1)
    assert info(registry, "InpaintModelConditioning")["output_name"] == ["positive", "negative", "latent"]
    assert info(registry, "SplitSigmas")["output_name"] == ["high_sigmas", "low_sigmas"]
    assert info(registry, "SamplerCustom")["output_name"] == ["output", "denoised_output"]
    assert info(registry, "LatentBatch").get("deprecated") is True
    advanced = info(registry, "KSamplerAdvanced")["input"]["required"]
    assert advanced["add_noise"][0] == ["enable", "disable"]
    assert advanced["return_with_leftover_noise"][0] == ["disable", "enable"]
    assert advanced["end_at_step"][1]["default"] == 10000


def test_sampler_and_scheduler_names_are_the_engines() -> None:
    """The nodes list the names without importing torch; they must not drift from the registries."""
    from diffusion.sampling import SAMPLERS, SCHEDULERS

    assert list(sampling.SAMPLER_NAMES) == SAMPLERS.names
    assert list(sampling.SCHEDULER_NAMES) == SCHEDULERS.names


def test_file_combos_follow_the_installed_model_folders(registry: Any, tmp_path: Path) -> None:
    (tmp_path / "checkpoints" / "sub").mkdir(parents=True)
    (tmp_path / "checkpoints" / "b.safetensors").write_bytes(b"")
    (tmp_path / "checkpoints" / "sub" / "a.ckpt").write_bytes(b"")
    (tmp_path / "checkpoints" / "notes.txt").write_text("not a model")
    (tmp_path / "loras").mkdir()
    (tmp_path / "loras" / "style.safetensors").write_bytes(b"")
    pipeline = tmp_path / "diffusers" / "my-model"
    (pipeline / "unet").mkdir(parents=True)
    (pipeline / "model_index.json").write_text("{}")

    install_services(None)
    try:
        assert info(registry, "CheckpointLoaderSimple")["input"]["required"]["ckpt_name"][0] == []
        install_services({"paths": ModelPaths(tmp_path)})
        ckpt = info(registry, "CheckpointLoaderSimple")["input"]["required"]["ckpt_name"]
        assert ckpt == [["b.safetensors", "sub/a.ckpt"], {"tooltip": "The name of the checkpoint (model) to load."}]
        assert info(registry, "LoraLoader")["input"]["required"]["lora_name"][0] == ["style.safetensors"]
        assert info(registry, "LoraLoaderModelOnly")["input"]["required"]["lora_name"][0] == ["style.safetensors"]
        assert info(registry, "DiffusersLoader")["input"]["required"]["model_path"][0] == ["my-model"]
        (tmp_path / "checkpoints" / "c.safetensors").write_bytes(b"")  # lists are recomputed per request
        assert "c.safetensors" in info(registry, "CheckpointLoaderSimple")["input"]["required"]["ckpt_name"][0]
    finally:
        install_services(None)


# -- the "models" service --------------------------------------------------------------------------------


def test_main_provides_a_lazily_created_model_manager(tmp_path: Path) -> None:
    import main

    config = Config(base_dir=tmp_path, cpu=True)
    services = main.build_services(config)
    try:
        models = services["models"]
        assert isinstance(models, main.LazyModels) and not models.created
        models.unload_all()  # POST /free before any prompt: nothing to free, nothing created
        assert not models.created
        assert models.device.type == "cpu"  # first real use builds the manager from the config
        from diffusion.memory import ModelManager

        assert models.created and isinstance(models.get(), ModelManager)
        assert models.get() is models.get()
        models.unload_all()
    finally:
        install_services(None)


def test_server_hands_the_models_service_to_nodes_and_free(tmp_path: Path) -> None:
    import main
    from execution.queue import JobStore
    from server.app import SERVER_KEYS, SETTINGS, WORKER, create_app

    assert "models" not in SERVER_KEYS
    models = main.LazyModels(lambda: pytest.fail("the manager must not be built by the server"))
    store = JobStore(tmp_path / "loom.db")
    app = create_app({"store": store, "registry": {}, "models": models, "run_worker": False,
                      "config": Config(base_dir=tmp_path)})  # fmt: skip
    try:
        assert app[SETTINGS].node_services["models"] is models
        assert app[WORKER].unload_models == models.unload_all
        assert not models.created
    finally:
        store.close()
