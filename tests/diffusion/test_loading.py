"""Reading model files, strict building, single-component loaders, diffusers folders, test checkpoints."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.errors import ModelError
from diffusion import diffusers_keys, families, loading
from diffusion.clip_convert import hf_to_open_clip
from diffusion.families.base import UNET_PREFIX, VAE_PREFIX, PrefixView
from tests.utils.checkpoints import (
    SD15_SHA256,
    build_order,
    cached_checkpoint,
    checkpoint_spec,
    make_tensor,
    parse_tool_listing,
    random_state_dict,
    sha256_file,
    spec_lines,
    tool_metadata,
    write_random_checkpoint,
    write_safetensors,
)
from tests.utils.shared import CHECKPOINT_TOOL as TOOL

# sha256 of the shared tool's `--list` key lines (its __metadata__ spec_sha256) and the counts it prints.
TOOL_SPEC_SHA256 = {
    "sd15": "f238eaac95654b0167106c34e5df1fab6f11be19ab8c7d5402417a19e14095aa",
    "sdxl": "4957ca9c3b2f36b33c2db650b4734fb6b8f1d19c206a4826ab3292263c23cbc4",
}
TOOL_COUNTS = {"sd15": (1130, 1_066_235_307), "sdxl": (2514, None)}


@pytest.fixture(scope="module")
def tiny_sd15() -> dict[str, torch.Tensor]:
    return random_state_dict("sd15", tiny=True, dtype=torch.float16)


def _sub(sd: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def _assert_module_equals(module: torch.nn.Module, weights: dict, dtype: torch.dtype = torch.float32) -> None:
    own = module.state_dict()
    assert set(own) == set(weights)
    for key, value in own.items():
        assert value.dtype == dtype, key
        assert torch.equal(value, weights[key].to(dtype)), key


# -- reading files --------------------------------------------------------------------------------


def test_lazy_state_dict_reads_shapes_without_data(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "a.safetensors", {"x": torch.ones(2, 3), "y": torch.zeros(4)}, {"k": "v"})
    with loading.open_state_dict(path) as sd:
        assert isinstance(sd, loading.LazyStateDict)
        assert sorted(sd) == ["x", "y"] and len(sd) == 2 and "x" in sd and "z" not in sd
        assert sd.shape("x") == (2, 3)
        assert sd.metadata == {"k": "v"}
        assert torch.equal(sd["x"], torch.ones(2, 3))
        with pytest.raises(KeyError):
            sd["z"]


def test_missing_and_corrupt_files_are_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        loading.open_state_dict(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\xff" * 64)
    with pytest.raises(ModelError, match="cannot read 'bad.safetensors'"):
        loading.open_state_dict(bad)


def test_ckpt_loads_with_weights_only_and_unwraps_state_dict(tmp_path: Path, tiny_sd15: dict) -> None:
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": tiny_sd15, "global_step": 7}, path)
    loaded = loading.load_checkpoint(path)
    assert loaded.family.name == "sd15"
    _assert_module_equals(loaded.unet, _sub(tiny_sd15, UNET_PREFIX))


class _Evil:
    """Unpickling this would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    payload = {"state_dict": {"w": torch.ones(1)}, "x": _Evil(marker)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path)
    with pytest.raises(ModelError, match="refused to load 'evil.ckpt'.*run code"):
        loading.open_state_dict(path)
    assert not marker.exists()


# -- checkpoints ----------------------------------------------------------------------------------


def test_tiny_checkpoint_loads_every_component_in_float32(tiny_sd15: dict, tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "tiny.safetensors", tiny_sd15, {"note": "x"})
    loaded = loading.load_checkpoint(path)
    assert (loaded.family.name, loaded.prediction, loaded.zsnr) == ("sd15", "eps", False)
    assert loaded.metadata == {"note": "x"}
    _assert_module_equals(loaded.unet, _sub(tiny_sd15, UNET_PREFIX))
    _assert_module_equals(loaded.vae, _sub(tiny_sd15, VAE_PREFIX))
    encoder = loaded.text.part("l").transformer
    _assert_module_equals(encoder, _sub(tiny_sd15, "cond_stage_model.transformer."))
    assert loaded.unet_config == families.get("sd15").tiny().unet
    assert not any(p.requires_grad for p in loaded.unet.parameters())


def test_load_can_skip_vae_and_text(tiny_sd15: dict, tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "tiny.safetensors", tiny_sd15)
    loaded = loading.load_checkpoint(path, want_vae=False, want_text=False)
    assert loaded.unet is not None and loaded.vae is None and loaded.text is None


def test_open_clip_text_encoder_is_converted_at_load() -> None:
    path = cached_checkpoint("sdxl", tiny=True)
    loaded = loading.load_checkpoint(path, want_vae=False)
    with loading.open_state_dict(path) as sd:
        g_file = PrefixView(sd, "conditioner.embedders.1.model.")
        g_model = loaded.text.part("g").transformer.state_dict()
        back = hf_to_open_clip(g_model)
        for key, value in back.items():
            assert torch.equal(value, g_file[key].float()), key
    assert [c.name for c in loaded.text_configs] == ["clip_l", "clip_g"]


def test_strict_loading_lists_missing_unexpected_and_misshapen_keys(tiny_sd15: dict, tmp_path: Path) -> None:
    missing = dict(tiny_sd15)
    del missing[UNET_PREFIX + "out.2.bias"]
    with pytest.raises(ModelError, match=r"UNet: the weights do not fit.*missing: out\.2\.bias"):
        loading.load_checkpoint_state_dict(missing, "m", dtypes=loading.LoadDtypes())

    extra = {**tiny_sd15, UNET_PREFIX + "input_blocks.1.0.surprise.weight": torch.zeros(1)}
    with pytest.raises(ModelError, match=r"unexpected: input_blocks\.1\.0\.surprise\.weight"):
        loading.load_checkpoint_state_dict(extra, "m", dtypes=loading.LoadDtypes())

    wrong = dict(tiny_sd15)
    key = VAE_PREFIX + "decoder.conv_out.bias"
    wrong[key] = torch.zeros(5)
    with pytest.raises(ModelError, match=r"VAE: .*wrong shape: decoder\.conv_out\.bias \[5\] \(model: \[3\]\)"):
        loading.load_checkpoint_state_dict(wrong, "m", dtypes=loading.LoadDtypes())


def test_missing_text_encoder_or_vae_is_reported(tiny_sd15: dict) -> None:
    no_text = {k: v for k, v in tiny_sd15.items() if not k.startswith("cond_stage_model.")}
    with pytest.raises(ModelError, match="no weights for text encoder.*clip_l.*cond_stage_model.transformer."):
        loading.load_checkpoint_state_dict(no_text, "x.safetensors", dtypes=loading.LoadDtypes())
    no_vae = {k: v for k, v in tiny_sd15.items() if not k.startswith(VAE_PREFIX)}
    with pytest.raises(ModelError, match="no VAE weights"):
        loading.load_checkpoint_state_dict(no_vae, "x.safetensors", dtypes=loading.LoadDtypes())


def test_text_width_must_fit_the_unet_context(tiny_sd15: dict) -> None:
    sd = dict(tiny_sd15)
    key = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
    sd[key] = torch.zeros(sd[key].shape[0], 32)
    with pytest.raises(ModelError, match="expects text features of width 64.*clip_l 32"):
        loading.load_checkpoint_state_dict(sd, "x", dtypes=loading.LoadDtypes())


def test_marker_keys_and_training_leftovers_are_not_weights(tiny_sd15: dict) -> None:
    sd = {**tiny_sd15, "v_pred": torch.empty(0), "model_ema.decay": torch.tensor(0.9999)}
    loaded = loading.load_checkpoint_state_dict(sd, "x", dtypes=loading.LoadDtypes(), want_vae=False, want_text=False)
    assert loaded.unet is not None


def test_old_sd1_text_layout_without_text_model_prefix(tiny_sd15: dict) -> None:
    prefix = "cond_stage_model.transformer."
    sd = {(prefix + k[len(prefix + "text_model.") :] if k.startswith(prefix) else k): v for k, v in tiny_sd15.items()}
    loaded = loading.load_checkpoint_state_dict(sd, "x", dtypes=loading.LoadDtypes(), want_vae=False)
    assert loaded.text.part("l").transformer.config.hidden_size == 64


# -- single components ----------------------------------------------------------------------------


def test_vae_file_in_three_layouts(tiny_sd15: dict, tmp_path: Path) -> None:
    vae = _sub(tiny_sd15, VAE_PREFIX)
    config = families.get("sd15").tiny().vae
    layouts = {
        "bare": vae,
        "prefixed": {VAE_PREFIX + k: v for k, v in vae.items()},
        "diffusers": diffusers_keys.vae_ldm_to_diffusers(vae, config),
    }
    for name, sd in layouts.items():
        module = loading.load_vae_file(write_safetensors(tmp_path / f"{name}.safetensors", sd))
        assert module.config == config, name
        _assert_module_equals(module, vae)
    assert "encoder.mid_block.attentions.0.to_q.weight" in layouts["diffusers"]
    assert layouts["diffusers"]["encoder.mid_block.attentions.0.to_q.weight"].ndim == 2


def test_unet_file_bare_prefixed_and_diffusers(tiny_sd15: dict, tmp_path: Path) -> None:
    unet = _sub(tiny_sd15, UNET_PREFIX)
    config = families.get("sd15").tiny().unet
    layouts = {
        "bare": unet,
        "prefixed": {UNET_PREFIX + k: v for k, v in unet.items()},
        "diffusers": diffusers_keys.unet_ldm_to_diffusers(unet, config),
    }
    for name, sd in layouts.items():
        loaded = loading.load_unet_file(write_safetensors(tmp_path / f"{name}.safetensors", sd))
        assert (loaded.family.name, loaded.vae, loaded.text) == ("sd15", None, None)
        _assert_module_equals(loaded.unet, unet)


def test_text_encoder_files_single_and_dual(tmp_path: Path) -> None:
    sdxl = random_state_dict("sdxl", tiny=True, dtype=torch.float16)
    l_hf = _sub(sdxl, "conditioner.embedders.0.transformer.")
    g_open_clip = _sub(sdxl, "conditioner.embedders.1.model.")
    l_path = write_safetensors(tmp_path / "clip_l.safetensors", l_hf)
    # ComfyUI saves encoders under a component prefix; that must be found and stripped.
    g_path = write_safetensors(tmp_path / "clip_g.safetensors", {"clip_g." + k: v for k, v in g_open_clip.items()})

    family, encoders = loading.load_text_encoder_files([l_path], kinds=["clip_l"])
    assert family.name == "sd15" and encoders.keys_in_order == ["l"]
    family, encoders = loading.load_text_encoder_files([g_path, l_path], kinds=["clip_g", "clip_l"])
    assert family.name == "sdxl" and encoders.keys_in_order == ["l", "g"]
    _assert_module_equals(encoders.part("l").transformer, l_hf)
    family, _ = loading.load_text_encoder_files([l_path])  # 2 layers: classified as CLIP-L
    assert family.name == "sd15"
    with pytest.raises(ModelError, match="no supported model uses the text encoders clip_h, clip_l"):
        loading.load_text_encoder_files([l_path, l_path], kinds=["clip_h", "clip_l"])


def test_text_encoder_kind_is_read_from_depth() -> None:
    spec = checkpoint_spec("sdxl")
    g = {k: torch.empty(s, device="meta") for k, (s, _) in spec.items() if k.startswith("conditioner.embedders.1.")}
    l_hf = {k: torch.empty(s, device="meta") for k, (s, _) in spec.items() if k.startswith("conditioner.embedders.0.")}
    assert loading.classify_text_encoder(loading.text_encoder_weights(g)) == "clip_g"
    assert loading.classify_text_encoder(loading.text_encoder_weights(l_hf)) == "clip_l"


# -- diffusers folders ----------------------------------------------------------------------------


def _write_diffusers(folder: Path, family_name: str, sd: dict) -> None:
    family = families.get(family_name)
    tiny = family.tiny()
    (folder / "unet").mkdir(parents=True)
    write_safetensors(
        folder / "unet" / "diffusion_pytorch_model.safetensors",
        diffusers_keys.unet_ldm_to_diffusers(_sub(sd, UNET_PREFIX), tiny.unet),
    )
    (folder / "vae").mkdir()
    write_safetensors(
        folder / "vae" / "diffusion_pytorch_model.safetensors",
        diffusers_keys.vae_ldm_to_diffusers(_sub(sd, VAE_PREFIX), tiny.vae),
    )
    parts = ["text_encoder", "text_encoder_2"][: len(family.text_encoders)]
    if family_name == "sdxl_refiner":
        parts = ["text_encoder_2"]
    for part, slot in zip(parts, family.text_encoders, strict=True):
        weights = _sub(sd, slot.prefixes[0])
        if slot.config.layout == "open_clip":
            from diffusion.clip_convert import open_clip_to_hf

            weights = open_clip_to_hf(weights)
        (folder / part).mkdir()
        write_safetensors(folder / part / "model.safetensors", weights)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))


@pytest.mark.parametrize("name", ["sd15", "sdxl", "sdxl_refiner"])
def test_diffusers_folder_loads_equal_to_the_single_file(name: str, tmp_path: Path) -> None:
    sd = random_state_dict(name, tiny=True, dtype=torch.float16)
    folder = tmp_path / "pipe"
    _write_diffusers(folder, name, sd)
    assert loading.is_diffusers_folder(folder)
    from_folder = loading.load_diffusers(folder)
    from_file = loading.load_checkpoint_state_dict(sd, "file", dtypes=loading.LoadDtypes())
    assert from_folder.family.name == name
    for attr in ("unet", "vae"):
        a, b = getattr(from_folder, attr).state_dict(), getattr(from_file, attr).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), attr
    a, b = from_folder.text.state_dict(), from_file.text.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_diffusers_scheduler_config_sets_prediction(tmp_path: Path) -> None:
    sd = random_state_dict("sd15", tiny=True)
    folder = tmp_path / "pipe"
    _write_diffusers(folder, "sd15", sd)
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": "v_prediction"}))
    assert loading.load_diffusers(folder, want_vae=False, want_text=False).prediction == "v_prediction"


def test_diffusers_key_names_match_the_diffusers_layout() -> None:
    config = families.get("sd15").reference.unet
    down, up, mid = diffusers_keys.unet_levels_from_config(config)
    table = diffusers_keys.unet_module_map(down, up, mid)
    assert table["down_blocks.0.attentions.1"] == "input_blocks.2.1"
    assert table["down_blocks.0.downsamplers.0.conv"] == "input_blocks.3.0.op"
    assert table["down_blocks.3.resnets.1.conv_shortcut"] == "input_blocks.11.0.skip_connection"
    assert table["mid_block.attentions.0"] == "middle_block.1"
    assert table["up_blocks.0.upsamplers.0.conv"] == "output_blocks.2.1.conv"
    assert table["up_blocks.1.upsamplers.0.conv"] == "output_blocks.5.2.conv"
    assert table["up_blocks.3.attentions.2"] == "output_blocks.11.1"
    assert table["time_embedding.linear_2"] == "time_embed.2"


# -- the test checkpoint generator ----------------------------------------------------------------


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_spec_order_and_counts_match_the_shared_tool(family: str) -> None:
    spec = checkpoint_spec(family)
    keys, params = TOOL_COUNTS[family]
    assert len(spec) == keys
    if params is not None:
        assert sum(torch.Size(s).numel() for s, _ in spec.values()) == params
    assert tool_metadata(family, 0, torch.float16, spec)["spec_sha256"] == TOOL_SPEC_SHA256[family]
    if TOOL.is_file():  # the full listing, where the shared tool is at hand
        listing = subprocess.run(
            [sys.executable, str(TOOL), "--list", "--family", family], capture_output=True, text=True
        )
        assert spec_lines(spec) == parse_tool_listing(listing.stdout)


def test_spec_kinds_follow_the_recipe() -> None:
    spec = checkpoint_spec("sdxl")
    kinds = {k: kind for k, (_, kind) in spec.items()}
    assert kinds["conditioner.embedders.1.model.logit_scale"] == "logit"
    assert kinds["conditioner.embedders.1.model.text_projection"] == "wT"
    assert kinds["conditioner.embedders.1.model.positional_embedding"] == "emb"
    assert kinds["conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"] == "emb"
    assert kinds[UNET_PREFIX + "out.0.weight"] == "ones" and kinds[UNET_PREFIX + "out.0.bias"] == "zeros"
    assert kinds[UNET_PREFIX + "label_emb.0.0.weight"] == "w"
    assert build_order("decoder.up.3.block.0.norm1.weight") < build_order("decoder.up.0.block.0.norm1.weight")


def test_tensor_values_depend_only_on_seed_key_and_shape() -> None:
    a = make_tensor("x.weight", (8, 4, 3, 3), "w", 0, torch.float32)
    assert torch.equal(a, make_tensor("x.weight", (8, 4, 3, 3), "w", 0, torch.float32))
    assert not torch.equal(a, make_tensor("y.weight", (8, 4, 3, 3), "w", 0, torch.float32))
    assert not torch.equal(a, make_tensor("x.weight", (8, 4, 3, 3), "w", 1, torch.float32))
    assert abs(a.std().item() - 1 / 6) < 0.03  # 1/sqrt(fan_in = 36)
    assert make_tensor("p", (), "logit", 0, torch.float32).item() == pytest.approx(2.6592600)


def test_writer_is_byte_stable_and_readable(tmp_path: Path) -> None:
    a = write_random_checkpoint(tmp_path / "a.safetensors", "sd15", seed=3, dtype=torch.float16, tiny=True)
    b = write_random_checkpoint(tmp_path / "b.safetensors", "sd15", seed=3, dtype=torch.float16, tiny=True)
    assert sha256_file(a) == sha256_file(b)
    header_len = int.from_bytes(a.read_bytes()[:8], "little")
    header = a.read_bytes()[8 : 8 + header_len]
    assert header_len % 8 == 0 and json.loads(header)["__metadata__"]["family"] == "sd15"
    with loading.open_state_dict(a) as sd:
        assert list(sd) == sorted(sd)  # data in sorted key order
        key = UNET_PREFIX + "input_blocks.0.0.weight"
        assert torch.equal(sd[key], make_tensor(key, sd.shape(key), "w", 3, torch.float16))


@pytest.mark.slow
def test_full_sd15_checkpoint_has_the_golden_sha256() -> None:
    """The golden recipe's file (2.1 GB, generated once into the test cache)."""
    path = cached_checkpoint("sd15", tiny=False, seed=0, dtype=torch.float16)
    assert path.stat().st_size == 2_132_625_350
    assert sha256_file(path) == SD15_SHA256
    with loading.open_state_dict(path) as sd:
        assert families.detect(sd).name == "sd15"
        assert families.get("sd15").unet_config(sd) == families.get("sd15").reference.unet
