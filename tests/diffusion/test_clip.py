"""CLIP text encoders: forward math, layer selection, weighting, embeddings, open_clip conversion."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from core.errors import ModelError
from diffusion.clip import ClipTextEncoder, SDClipModel, TextEncoders, empty_tokens
from diffusion.clip_convert import hf_to_open_clip, is_open_clip, open_clip_to_hf
from diffusion.configs import TextEncoderConfig
from diffusion.families.base import CLIP_G, CLIP_L
from diffusion.tokenizer import END_TOKEN, START_TOKEN, PromptTokenizer

# Tiny encoders (STYLE §2.7): the real vocabulary (ids come from the real tokenizer), few layers.
TINY_L = TextEncoderConfig(name="clip_l", hidden_size=16, intermediate_size=32, num_layers=3, num_heads=2)
TINY_G = TextEncoderConfig(
    name="clip_g",
    hidden_size=24,
    intermediate_size=48,
    num_layers=4,
    num_heads=3,
    hidden_act="gelu",
    projection_dim=20,
    layout="open_clip",
    penultimate=True,
    pad_with_end=False,
    hidden_final_norm=False,
)


def random_open_clip(config: TextEncoderConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """A seeded open_clip-layout text tower; every parameter random (norms too) so that a
    misplaced layer norm or a swapped q/k/v shows in the outputs."""
    gen = torch.Generator("cpu").manual_seed(seed)
    width, inner = config.hidden_size, config.intermediate_size

    def w(*shape):
        return torch.randn(*shape, generator=gen) / math.sqrt(shape[-1])

    def near_one(n):
        return 1.0 + 0.2 * torch.randn(n, generator=gen)

    def small(n):
        return 0.2 * torch.randn(n, generator=gen)

    sd = {
        "token_embedding.weight": 0.5 * torch.randn(config.vocab_size, width, generator=gen),
        "positional_embedding": 0.5 * torch.randn(config.max_positions, width, generator=gen),
        "ln_final.weight": near_one(width),
        "ln_final.bias": small(width),
        "logit_scale": torch.tensor(math.log(1 / 0.07)),
    }
    for i in range(config.num_layers):
        p = f"transformer.resblocks.{i}."
        sd |= {
            p + "ln_1.weight": near_one(width),
            p + "ln_1.bias": small(width),
            p + "attn.in_proj_weight": w(3 * width, width),
            p + "attn.in_proj_bias": small(3 * width),
            p + "attn.out_proj.weight": w(width, width),
            p + "attn.out_proj.bias": small(width),
            p + "ln_2.weight": near_one(width),
            p + "ln_2.bias": small(width),
            p + "mlp.c_fc.weight": w(inner, width),
            p + "mlp.c_fc.bias": small(inner),
            p + "mlp.c_proj.weight": w(width, inner),
            p + "mlp.c_proj.bias": small(width),
        }
    if config.projection_dim:
        sd["text_projection"] = w(config.projection_dim, width).T.contiguous()  # open_clip: x @ P
    return sd


def reference_forward(sd: dict, config: TextEncoderConfig, ids: torch.Tensor):
    """CLIP's text tower written from the paper's description on open_clip weights, with torch's
    own nn.MultiheadAttention (packed q/k/v): (per-layer outputs, final-normed output, pooled,
    projected)."""
    width = config.hidden_size

    def act(x):
        return x * torch.sigmoid(1.702 * x) if config.hidden_act == "quick_gelu" else F.gelu(x)

    def ln(x, name):
        return F.layer_norm(x, (width,), sd[name + ".weight"], sd[name + ".bias"], config.layer_norm_eps)

    n = ids.shape[1]
    causal = torch.full((n, n), float("-inf")).triu(1)
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"][:n]
    layers = []
    for i in range(config.num_layers):
        p = f"transformer.resblocks.{i}."
        mha = nn.MultiheadAttention(width, config.num_heads, batch_first=True)
        mha.load_state_dict({k[len(p + "attn.") :]: v for k, v in sd.items() if k.startswith(p + "attn.")})
        h = ln(x, p + "ln_1")
        x = x + mha(h, h, h, attn_mask=causal, need_weights=False)[0]
        h = ln(x, p + "ln_2")
        x = x + F.linear(act(F.linear(h, sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"])), *_fc2(sd, p))
        layers.append(x)
    final = ln(x, "ln_final")
    eos = (ids == END_TOKEN).int().argmax(dim=-1)
    pooled = final[torch.arange(ids.shape[0]), eos]
    projected = pooled @ sd["text_projection"] if "text_projection" in sd else pooled
    return layers, final, pooled, projected


def _fc2(sd, p):
    return sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"]


def make_encoder(config: TextEncoderConfig, seed: int = 0) -> tuple[ClipTextEncoder, dict]:
    sd = random_open_clip(config, seed)
    return ClipTextEncoder.from_state_dict(config, sd), sd


def ids_of(*rows: list[int], length: int = 77, pad: int = END_TOKEN) -> torch.Tensor:
    return torch.tensor([[START_TOKEN, *row, END_TOKEN] + [pad] * (length - len(row) - 2) for row in rows])


def final_norm(sd, config, x):
    return F.layer_norm(x, (config.hidden_size,), sd["ln_final.weight"], sd["ln_final.bias"], config.layer_norm_eps)


CLOSE = {"atol": 1e-5, "rtol": 1e-4}


# --- the transformer ---------------------------------------------------------------------------


@pytest.mark.parametrize("config", [TINY_L, TINY_G], ids=["quick_gelu", "gelu+projection"])
def test_forward_matches_reference_math(config):
    encoder, sd = make_encoder(config)
    ids = ids_of([320, 8853, 539], [4558], pad=END_TOKEN if config.pad_with_end else 0)
    with torch.no_grad():
        out = encoder(ids, layer_idx=-2, norm_hidden=False)
        layers, final, pooled, projected = reference_forward(sd, config, ids)
    torch.testing.assert_close(out.last, final, **CLOSE)
    torch.testing.assert_close(out.hidden, layers[-2], **CLOSE)
    torch.testing.assert_close(out.pooled, pooled, **CLOSE)
    torch.testing.assert_close(out.projected, projected, **CLOSE)
    # pooled is the first end token's row (position 5 and 2 here), not the padding's
    torch.testing.assert_close(out.pooled[0], final[0, 4], **CLOSE)
    torch.testing.assert_close(out.pooled[1], final[1, 2], **CLOSE)


def test_forward_is_deterministic_and_rows_are_independent():
    encoder, _ = make_encoder(TINY_L)
    twin, _ = make_encoder(TINY_L)
    ids = ids_of([320, 8853], [4558, 4558, 4558])
    with torch.no_grad():
        a, b = encoder(ids), twin(ids)
        single = encoder(ids[1:])
    assert torch.equal(a.last, b.last)
    torch.testing.assert_close(a.last[1:], single.last, **CLOSE)
    other, _ = make_encoder(TINY_L, seed=1)
    with torch.no_grad():
        assert not torch.allclose(other(ids).last, a.last)


def test_fp16_weights_compute_in_fp32():
    sd = {k: v.half() for k, v in random_open_clip(TINY_L).items()}
    half = ClipTextEncoder.from_state_dict(TINY_L, sd, dtype=torch.float16)
    rounded = ClipTextEncoder.from_state_dict(TINY_L, {k: v.float() for k, v in sd.items()})
    assert half.text_model.final_layer_norm.weight.dtype == torch.float16
    ids = ids_of([320, 8853])
    with torch.no_grad():
        a, b = half(ids, layer_idx=-2), rounded(ids, layer_idx=-2)
    assert a.last.dtype == torch.float32
    assert torch.equal(a.last, b.last) and torch.equal(a.hidden, b.hidden)


def test_layer_index_out_of_range_is_refused():
    encoder, _ = make_encoder(TINY_L)
    with pytest.raises(ValueError, match="out of range"):
        encoder(ids_of([320]), layer_idx=3)


# --- layer selection (CLIPSetLastLayer) --------------------------------------------------------


def test_layer_selection_and_final_norm_rules():
    encoder, sd = make_encoder(TINY_L)
    rows = ids_of([320, 8853, 539]).tolist()
    with torch.no_grad():
        layers, final, _, _ = reference_forward(sd, TINY_L, torch.tensor(rows))
    model = SDClipModel(encoder, layer="last", layer_norm_hidden_state=True)
    torch.testing.assert_close(model.encode(rows)[0], final, **CLOSE)

    model.set_clip_options({"layer": -2})  # clip skip 2 on SD1: penultimate WITH the final norm
    torch.testing.assert_close(model.encode(rows)[0], final_norm(sd, TINY_L, layers[-2]), **CLOSE)
    model.set_clip_options({"layer": -1})  # -1 with the norm is the normal output
    torch.testing.assert_close(model.encode(rows)[0], final, **CLOSE)
    model.set_clip_options({"layer": -24})  # past the model: back to "last"
    assert model.layer == "last"
    model.set_clip_options({"layer": 0})
    torch.testing.assert_close(model.encode(rows)[0], final_norm(sd, TINY_L, layers[0]), **CLOSE)
    model.reset_clip_options()
    assert model.layer == "last"

    sdxl_style = SDClipModel(encoder, layer="penultimate", layer_norm_hidden_state=False)
    torch.testing.assert_close(sdxl_style.encode(rows)[0], layers[-2], **CLOSE)
    sdxl_style.set_clip_options({"layer": -1})  # without the norm, -1 differs from "last"
    torch.testing.assert_close(sdxl_style.encode(rows)[0], layers[-1], **CLOSE)
    with pytest.raises(ValueError, match="unknown CLIP layer"):
        sdxl_style.set_clip_options({"layer": "middle"})


def test_from_config_reads_family_defaults():
    g = SDClipModel.from_config(make_encoder(TINY_G)[0])
    assert (g.layer, g.layer_norm_hidden_state, g.pad_token) == (-2, False, 0)
    l1 = SDClipModel.from_config(make_encoder(TINY_L)[0])
    assert (l1.layer, l1.layer_norm_hidden_state, l1.pad_token) == ("last", True, END_TOKEN)


# --- weighting and chunks ----------------------------------------------------------------------


def test_weighting_formula():
    encoder, _ = make_encoder(TINY_L)
    model = SDClipModel(encoder)
    row = ids_of([320, 8853, 539])[0].tolist()
    weights = [1.0] * 77
    weights[2], weights[3] = 1.5, 0.5
    cond, _ = model.encode_token_weights([list(zip(row, weights, strict=True))])
    z, _ = model.encode([row])
    z_empty, _ = model.encode([empty_tokens(77, END_TOKEN)])
    w = torch.tensor(weights).view(1, 77, 1)
    expected = (z - z_empty) * w + z_empty
    torch.testing.assert_close(cond, expected, **CLOSE)
    torch.testing.assert_close(cond[:, [0, 1, 4]], z[:, [0, 1, 4]], **CLOSE)  # weight 1: untouched
    assert not torch.allclose(cond[:, 2], z[:, 2])


def test_unweighted_prompt_skips_the_empty_encoding():
    encoder, _ = make_encoder(TINY_L)
    model = SDClipModel(encoder)
    calls = []
    encoder.register_forward_hook(lambda _m, args, _out: calls.append(args[0].shape[0]))
    row = ids_of([320, 8853])[0].tolist()
    model.encode_token_weights([[(t, 1.0) for t in row]])
    model.encode_token_weights([[(t, 1.0 if i != 1 else 1.2) for i, t in enumerate(row)]])
    assert calls == [1, 2]  # batch of 1, then prompt + empty prompt


def test_chunks_join_along_tokens_and_pool_from_the_first():
    encoder, _ = make_encoder(TINY_L)
    model = SDClipModel(encoder)
    tokens = PromptTokenizer.for_encoders([TINY_L]).tokenize_with_weights(" ".join(["a"] * 80) + " horse")
    assert len(tokens["l"]) == 2
    cond, pooled = model.encode_token_weights(tokens["l"])
    rows = [[t for t, _ in chunk] for chunk in tokens["l"]]
    z, pooled_rows = model.encode(rows)
    assert cond.shape == (1, 154, 16) and pooled.shape == (1, 16)
    torch.testing.assert_close(cond, torch.cat([z[0:1], z[1:2]], dim=1), **CLOSE)
    torch.testing.assert_close(pooled, pooled_rows[0:1], **CLOSE)


# --- textual inversion -------------------------------------------------------------------------


def test_injected_vector_acts_like_the_token_it_copies():
    encoder, _ = make_encoder(TINY_L)
    model = SDClipModel(encoder)
    horse = encoder.text_model.embeddings.token_embedding.weight[4558].clone()
    plain = ids_of([320, 4558])[0].tolist()
    injected = list(plain)
    injected[2] = horse
    (z_plain, p_plain), (z_inj, p_inj) = model.encode([plain]), model.encode([injected])
    torch.testing.assert_close(z_inj, z_plain, **CLOSE)
    torch.testing.assert_close(p_inj, p_plain, **CLOSE)
    # the hook is gone afterwards: token 0 encodes as itself again
    other = list(plain)
    other[2] = 0
    assert not torch.allclose(model.encode([other])[0], z_plain)


def test_wrong_width_vector_is_dropped_and_the_row_padded():
    encoder, _ = make_encoder(TINY_L)
    model = SDClipModel(encoder)
    row = ids_of([320, 4558])[0].tolist()
    with_bad = row[:2] + [torch.zeros(24)] + row[2:-1]
    torch.testing.assert_close(model.encode([with_bad])[0], model.encode([row])[0], **CLOSE)


# --- families: SDXL concatenation --------------------------------------------------------------


def test_sdxl_concatenates_l_and_g_and_pools_from_g():
    l_config = TextEncoderConfig(**{**TINY_L.__dict__, "penultimate": True, "hidden_final_norm": False})
    encoders = TextEncoders.from_configs(
        [l_config, TINY_G], {"clip_l": random_open_clip(l_config, 3), "clip_g": random_open_clip(TINY_G, 4)}
    )
    tokens = PromptTokenizer.for_encoders([l_config, TINY_G]).tokenize_with_weights("a (horse:1.2)")
    cond, pooled = encoders.encode_token_weights(tokens)
    assert cond.shape == (1, 77, 16 + 24) and pooled.shape == (1, 20)
    l_cond, _ = encoders.part("l").encode_token_weights(tokens["l"])
    g_cond, g_pooled = encoders.part("g").encode_token_weights(tokens["g"])
    torch.testing.assert_close(cond, torch.cat([l_cond, g_cond], dim=-1))
    torch.testing.assert_close(pooled, g_pooled)
    keys = encoders.state_dict().keys()
    assert "clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.weight" in keys
    assert "clip_g.transformer.text_projection.weight" in keys
    encoders.set_clip_options({"layer": -1})
    assert encoders.part("l").layer == -1 and encoders.part("g").layer == -1
    encoders.reset_clip_options()
    assert encoders.part("g").layer == -2


def test_from_configs_needs_every_encoders_weights():
    with pytest.raises(ModelError, match="clip_g"):
        TextEncoders.from_configs([TINY_L, TINY_G], {"clip_l": random_open_clip(TINY_L)})


# --- weights layout ----------------------------------------------------------------------------


def test_open_clip_round_trip():
    sd = random_open_clip(TINY_G)
    assert is_open_clip(sd)
    hf = open_clip_to_hf(sd)
    assert not is_open_clip(hf)
    assert hf["text_projection.weight"].shape == (20, 24)
    q = hf["text_model.encoder.layers.1.self_attn.q_proj.weight"]
    v = hf["text_model.encoder.layers.1.self_attn.v_proj.bias"]
    assert torch.equal(q, sd["transformer.resblocks.1.attn.in_proj_weight"][:24])
    assert torch.equal(v, sd["transformer.resblocks.1.attn.in_proj_bias"][48:])
    back = hf_to_open_clip(hf)
    expected = {k: t for k, t in sd.items() if k != "logit_scale"}
    assert back.keys() == expected.keys()
    assert all(torch.equal(back[k], expected[k]) for k in expected)


def test_conversion_refuses_unknown_keys():
    sd = random_open_clip(TINY_L)
    sd["transformer.resblocks.0.attn.weird"] = torch.zeros(1)
    with pytest.raises(ModelError, match="weird"):
        open_clip_to_hf(sd)


def test_hf_layout_loads_with_bare_keys_and_position_ids():
    encoder, _ = make_encoder(TINY_L)
    hf = {k[len("text_model.") :]: v for k, v in encoder.state_dict().items()}
    hf["embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
    clone = ClipTextEncoder.from_state_dict(TINY_L, hf)
    ids = ids_of([320])
    with torch.no_grad():
        assert torch.equal(clone(ids).last, encoder(ids).last)


def test_strict_loading_names_the_problem():
    sd = open_clip_to_hf(random_open_clip(TINY_L))
    del sd["text_model.encoder.layers.2.mlp.fc2.bias"]
    sd["text_model.encoder.layers.0.mlp.fc1.weight"] = torch.zeros(5, 5)
    with pytest.raises(ModelError) as err:
        ClipTextEncoder.from_state_dict(TINY_L, sd)
    assert "layers.2.mlp.fc2.bias" in str(err.value) and "wrong shape" in str(err.value)


# --- real key layouts (the shared checkpoint tool's --list is the ground truth) ----------------

# The families' own configs, so this also checks what the loader builds.
SD15_CLIP_L = CLIP_L
SDXL_CLIP_G = CLIP_G


def _checkpoint_listing(family: str) -> dict[str, tuple[int, ...]]:
    tool = next(
        (p for p in (Path(__file__).resolve().parents[3] / "shared/tools/make_random_checkpoint.py",) if p.is_file()),
        None,
    )
    if tool is None:
        pytest.skip("shared/tools/make_random_checkpoint.py not available")
    listing = subprocess.run(
        [sys.executable, str(tool), "--list", "--family", family], capture_output=True, text=True, check=True
    ).stdout
    shapes = {}
    for line in listing.splitlines():
        if match := re.fullmatch(r"(\S+) \[([\d, ]*)\] \w+", line):
            shapes[match[1]] = tuple(int(s) for s in match[2].split(",") if s.strip())
    assert shapes, f"could not read the tool's listing: {listing[:200]!r}"
    return shapes


@pytest.mark.parametrize(
    ("family", "prefix", "config"),
    [
        ("sd15", "cond_stage_model.transformer.", SD15_CLIP_L),
        ("sdxl", "conditioner.embedders.0.transformer.", SD15_CLIP_L),
        ("sdxl", "conditioner.embedders.1.model.", SDXL_CLIP_G),
    ],
)
def test_full_size_checkpoint_keys_fit(family, prefix, config):
    listing = _checkpoint_listing(family)
    sd = {k[len(prefix) :]: torch.empty(s, device="meta") for k, s in listing.items() if k.startswith(prefix)}
    encoder = ClipTextEncoder(config, device="meta", empty=True)
    prepared = encoder.prepare_state_dict(sd)
    own = encoder.state_dict()
    assert prepared.keys() == own.keys()
    assert all(prepared[k].shape == own[k].shape for k in own)
