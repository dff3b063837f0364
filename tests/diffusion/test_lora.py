"""LoRA / LyCORIS: formats against hand-computed weights, key maps for SD1 / SDXL naming, unmatched
keys reported, and reversible patching."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffusion.configs import UNetConfig
from diffusion.lora import (
    CLIP,
    UNET,
    Patcher,
    apply_patches,
    load_lora,
    model_lora_keys_clip,
    model_lora_keys_unet,
    module_shapes,
    patches_for,
    stack_patches,
    unet_diffusers_map,
)
from diffusion.lora_formats import LORA_NAMES

SD15 = UNetConfig()
SDXL = UNetConfig(
    channel_mult=(1, 2, 4),
    num_res_blocks=(2, 2, 2),
    transformer_depth=(0, 0, 2, 2, 10, 10),
    transformer_depth_middle=10,
    transformer_depth_output=(10, 10, 10, 2, 2, 2, 0, 0, 0),
    num_heads=-1,
    num_head_channels=64,
    context_dim=2048,
    use_linear_in_transformer=True,
    adm_in_channels=2816,
)

# Representative UNet weights of the real checkpoints (names and shapes from
# shared/tools/make_random_checkpoint.py --list), LDM layout with the prefix stripped.
SD15_UNET = {
    "time_embed.0.weight": (1280, 320),
    "input_blocks.0.0.weight": (320, 4, 3, 3),
    "input_blocks.1.1.proj_in.weight": (320, 320, 1, 1),
    "input_blocks.1.1.proj_in.bias": (320,),
    "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight": (320, 320),
    "input_blocks.1.1.transformer_blocks.0.attn1.to_out.0.weight": (320, 320),
    "input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight": (2560, 320),
    "input_blocks.3.0.op.weight": (320, 320, 3, 3),
    "input_blocks.4.0.skip_connection.weight": (640, 320, 1, 1),
    "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (640, 768),
    "middle_block.1.transformer_blocks.0.attn2.to_k.weight": (1280, 768),
    "middle_block.2.out_layers.3.weight": (1280, 1280, 3, 3),
    "output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
    "output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
    "output_blocks.8.0.skip_connection.weight": (640, 960, 1, 1),
    "output_blocks.11.1.proj_out.weight": (320, 320, 1, 1),
}
SDXL_UNET = [
    "label_emb.0.0.weight",
    "input_blocks.4.1.proj_in.weight",
    "input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight",
    "input_blocks.6.0.op.weight",
    "input_blocks.7.1.transformer_blocks.3.ff.net.2.weight",
    "middle_block.1.transformer_blocks.9.attn1.to_out.0.weight",
    "output_blocks.0.1.transformer_blocks.9.attn2.to_v.weight",
    "output_blocks.2.2.conv.weight",
    "output_blocks.5.2.conv.weight",
    "output_blocks.8.0.skip_connection.weight",
]
# Text encoder keys as clip.TextEncoders names them (ComfyUI's layout).
CLIP_L = [
    *(
        f"clip_l.transformer.text_model.encoder.layers.{i}.{n}.weight"
        for i in (0, 11)
        for n in ("self_attn.q_proj", "mlp.fc2")
    ),
    "clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.bias",
    "clip_l.transformer.text_model.final_layer_norm.weight",
]
CLIP_G = [
    *(
        f"clip_g.transformer.text_model.encoder.layers.{i}.{n}.weight"
        for i in (0, 31)
        for n in ("self_attn.out_proj", "mlp.fc1")
    ),
    "clip_g.transformer.text_projection.weight",
]


def _module(params: dict[str, torch.Tensor]) -> nn.Module:
    """An nn.Module whose named_parameters() are exactly `params` (dotted names become submodules)."""
    root = nn.Module()
    for name, value in params.items():
        *path, leaf = name.split(".")
        node = root
        for part in path:
            if part not in node._modules:
                node.add_module(part, nn.Module())
            node = node._modules[part]
        node.register_parameter(leaf, nn.Parameter(value, requires_grad=False))
    return root


def _t(rows: list) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def _load_one(sd: dict[str, torch.Tensor], stem: str, shape: tuple[int, ...]):
    """Patches for one layer named `stem` -> ("unet", "w.weight") of `shape`."""
    target = (UNET, "w.weight")
    patches, unmatched = load_lora(sd, {stem: target}, shapes={target: shape, (UNET, "w.bias"): (shape[0],)})
    assert unmatched == []
    return patches


# --- formats -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("up", "down", "_mid"), LORA_NAMES)
def test_lora_every_name_variant_gives_the_hand_computed_weight(up, down, _mid):
    stem = "lora_unet_layer"
    sd = {stem + up: _t([[1], [2]]), stem + down: _t([[1, 0, -1]]), f"{stem}.alpha": torch.tensor(0.5)}
    weight = _t([[1, 0, 0], [0, 1, 0]])
    adapters = _load_one(sd, stem, (2, 3))[(UNET, "w.weight")]
    # scale = alpha / rank = 0.5; strength 2 -> W + 1.0 * up @ down
    assert torch.equal(apply_patches(weight, adapters, 2.0), _t([[2, 0, -1], [2, 1, -2]]))


def test_lora_alpha_is_divided_by_rank_and_defaults_to_one():
    up, down = _t([[1, 0], [0, 1]]), _t([[1, 1], [0, 2]])  # rank 2, up @ down = [[1, 1], [0, 2]]
    with_alpha = _load_one(
        {"x.lora_up.weight": up, "x.lora_down.weight": down, "x.alpha": torch.tensor(4.0)}, "x", (2, 2)
    )
    without = _load_one({"x.lora_up.weight": up, "x.lora_down.weight": down}, "x", (2, 2))
    zero = torch.zeros(2, 2)
    assert torch.equal(apply_patches(zero, with_alpha[(UNET, "w.weight")], 1.0), _t([[2, 2], [0, 4]]))
    assert torch.equal(apply_patches(zero, without[(UNET, "w.weight")], 1.0), _t([[1, 1], [0, 2]]))
    assert torch.equal(apply_patches(zero, without[(UNET, "w.weight")], -0.5), _t([[-0.5, -0.5], [0, -1]]))


def test_conv3x3_lora_equals_the_down_then_up_convolutions():
    g = torch.Generator().manual_seed(0)
    down, up = torch.randn(2, 3, 3, 3, generator=g), torch.randn(5, 2, 1, 1, generator=g)
    weight = torch.randn(5, 3, 3, 3, generator=g)
    adapters = _load_one(
        {"c.lora_down.weight": down, "c.lora_up.weight": up, "c.alpha": torch.tensor(2.0)}, "c", (5, 3, 3, 3)
    )
    delta = apply_patches(weight, adapters[(UNET, "w.weight")], 1.0) - weight
    x = torch.randn(1, 3, 6, 6, generator=g)
    torch.testing.assert_close(
        F.conv2d(x, delta, padding=1), F.conv2d(F.conv2d(x, down, padding=1), up), atol=1e-4, rtol=1e-4
    )


def test_conv1x1_weight_takes_a_linear_shaped_lora_and_back():
    up, down = _t([[1], [0], [2], [1]]), _t([[1, -1, 3]])
    expected = (up @ down) * 0.5  # alpha 0.5 / rank 1
    sd = {"c.lora_up.weight": up, "c.lora_down.weight": down, "c.alpha": torch.tensor(0.5)}
    conv = apply_patches(torch.zeros(4, 3, 1, 1), _load_one(sd, "c", (4, 3, 1, 1))[(UNET, "w.weight")], 1.0)
    assert torch.equal(conv, expected[:, :, None, None])
    sd4 = {"c.lora_up.weight": up[:, :, None, None], "c.lora_down.weight": down[:, :, None, None]}
    linear = apply_patches(torch.zeros(4, 3), _load_one(sd4, "c", (4, 3))[(UNET, "w.weight")], 1.0)
    assert torch.equal(linear, up @ down)


def test_locon_mid_core_equals_three_stacked_convolutions():
    g = torch.Generator().manual_seed(1)
    down, mid, up = (
        torch.randn(2, 3, 1, 1, generator=g),
        torch.randn(2, 2, 3, 3, generator=g),
        torch.randn(4, 2, 1, 1, generator=g),
    )
    sd = {"c.lora_down.weight": down, "c.lora_mid.weight": mid, "c.lora_up.weight": up}
    delta = apply_patches(torch.zeros(4, 3, 3, 3), _load_one(sd, "c", (4, 3, 3, 3))[(UNET, "w.weight")], 1.0)
    x = torch.randn(2, 3, 5, 5, generator=g)
    chained = F.conv2d(F.conv2d(F.conv2d(x, down), mid, padding=1), up)
    torch.testing.assert_close(F.conv2d(x, delta, padding=1), chained, atol=1e-4, rtol=1e-4)


def test_loha_is_the_scaled_hadamard_product():
    sd = {
        "h.hada_w1_a": _t([[1], [2]]), "h.hada_w1_b": _t([[1, 1]]),  # m1 = [[1, 1], [2, 2]]
        "h.hada_w2_a": _t([[3], [1]]), "h.hada_w2_b": _t([[1, -1]]),  # m2 = [[3, -3], [1, -1]]
        "h.alpha": torch.tensor(2.0),  # rank 1 -> scale 2
    }  # fmt: skip
    out = apply_patches(torch.ones(2, 2), _load_one(sd, "h", (2, 2))[(UNET, "w.weight")], 1.0)
    assert torch.equal(out, _t([[7, -5], [5, -3]]))


def test_loha_tucker_rebuilds_each_factor_from_its_core():
    g = torch.Generator().manual_seed(2)
    r, out_ch, in_ch = 2, 3, 2
    t1, t2 = torch.randn(r, r, 3, 3, generator=g), torch.randn(r, r, 3, 3, generator=g)
    a1, b1 = torch.randn(r, out_ch, generator=g), torch.randn(r, in_ch, generator=g)
    a2, b2 = torch.randn(r, out_ch, generator=g), torch.randn(r, in_ch, generator=g)
    sd = {"h.hada_w1_a": a1, "h.hada_w1_b": b1, "h.hada_w2_a": a2, "h.hada_w2_b": b2, "h.hada_t1": t1, "h.hada_t2": t2}

    def rebuild(t, a, b):  # m[p, q, k, l] = sum_ij t[i, j, k, l] a[i, p] b[j, q], written out
        m = torch.zeros(out_ch, in_ch, 3, 3)
        for p in range(out_ch):
            for q in range(in_ch):
                for i in range(r):
                    for j in range(r):
                        m[p, q] += t[i, j] * a[i, p] * b[j, q]
        return m

    expected = rebuild(t1, a1, b1) * rebuild(t2, a2, b2)
    out = apply_patches(
        torch.zeros(out_ch, in_ch, 3, 3), _load_one(sd, "h", (out_ch, in_ch, 3, 3))[(UNET, "w.weight")], 1.0
    )
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_lokr_full_factors_ignore_alpha():
    sd = {"k.lokr_w1": _t([[1, 2]]), "k.lokr_w2": _t([[1], [3]]), "k.alpha": torch.tensor(8.0)}
    out = apply_patches(torch.zeros(2, 2), _load_one(sd, "k", (2, 2))[(UNET, "w.weight")], 1.0)
    assert torch.equal(out, _t([[1, 2], [3, 6]]))


def test_lokr_low_rank_factor_is_scaled_by_alpha_over_rank():
    sd = {
        "k.lokr_w1": _t([[1, 2]]),
        "k.lokr_w2_a": _t([[1], [3]]),
        "k.lokr_w2_b": _t([[2]]),
        "k.alpha": torch.tensor(0.5),
    }
    # w2 = [[2], [6]]; kron([[1, 2]], w2) = [[2, 4], [6, 12]]; scale 0.5 / rank 1
    out = apply_patches(torch.zeros(2, 2), _load_one(sd, "k", (2, 2))[(UNET, "w.weight")], 1.0)
    assert torch.equal(out, _t([[1, 2], [3, 6]]))
    sd_w1 = {
        "k.lokr_w1_a": _t([[1], [2]]),
        "k.lokr_w1_b": _t([[1, 1]]),
        "k.lokr_w2": _t([[1]]),
        "k.alpha": torch.tensor(3.0),
    }
    out = apply_patches(torch.zeros(2, 2), _load_one(sd_w1, "k", (2, 2))[(UNET, "w.weight")], 1.0)
    assert torch.equal(out, _t([[3, 3], [6, 6]]))


def test_lokr_conv_factor_expands_w1_over_the_kernel():
    g = torch.Generator().manual_seed(3)
    w1, w2 = torch.randn(2, 3, generator=g), torch.randn(2, 1, 3, 3, generator=g)
    out = apply_patches(
        torch.zeros(4, 3, 3, 3),
        _load_one({"k.lokr_w1": w1, "k.lokr_w2": w2}, "k", (4, 3, 3, 3))[(UNET, "w.weight")],
        1.0,
    )
    for o in range(4):
        for i in range(3):  # kron: block (o // 2, i // 1) of w1 times w2[o % 2, i % 1]
            torch.testing.assert_close(out[o, i], w1[o // 2, i] * w2[o % 2, 0])


def test_lokr_tucker_factor_is_rebuilt_then_expanded():
    g = torch.Generator().manual_seed(10)
    w1, core, a, b = (
        torch.randn(2, 2, generator=g),
        torch.randn(2, 2, 3, 3, generator=g),
        torch.randn(2, 3, generator=g),
        torch.randn(2, 2, generator=g),
    )
    sd = {"k.lokr_w1": w1, "k.lokr_t2": core, "k.lokr_w2_a": a, "k.lokr_w2_b": b, "k.alpha": torch.tensor(4.0)}
    out = apply_patches(torch.zeros(6, 4, 3, 3), _load_one(sd, "k", (6, 4, 3, 3))[(UNET, "w.weight")], 1.0)
    w2 = torch.zeros(3, 2, 3, 3)  # w2[p, q] = sum_ij core[i, j] a[i, p] b[j, q]
    for p in range(3):
        for q in range(2):
            for i in range(2):
                for j in range(2):
                    w2[p, q] += core[i, j] * a[i, p] * b[j, q]
    for o in range(6):
        for i in range(4):  # scale: alpha 4 / rank 2
            torch.testing.assert_close(out[o, i], 2.0 * w1[o // 3, i // 2] * w2[o % 3, i % 2], atol=1e-5, rtol=1e-5)


def test_full_diffs_patch_weight_and_bias_and_set_weight_replaces():
    sd = {"d.diff": _t([[1, 2], [3, 4]]), "d.diff_b": _t([1, -1])}
    patches = _load_one(sd, "d", (2, 2))
    assert torch.equal(apply_patches(torch.ones(2, 2), patches[(UNET, "w.weight")], 0.5), _t([[1.5, 2], [2.5, 3]]))
    assert torch.equal(apply_patches(torch.zeros(2), patches[(UNET, "w.bias")], 2.0), _t([2, -2]))
    norm = _load_one({"n.w_norm": _t([1, 2]), "n.b_norm": _t([3, 4])}, "n", (2,))
    assert torch.equal(apply_patches(torch.ones(2), norm[(UNET, "w.weight")], 1.0), _t([2, 3]))
    assert torch.equal(apply_patches(torch.ones(2), norm[(UNET, "w.bias")], 1.0), _t([4, 5]))
    replaced = _load_one({"s.set_weight": _t([[9, 8], [7, 6]])}, "s", (2, 2))[(UNET, "w.weight")]
    assert torch.equal(apply_patches(torch.ones(2, 2), replaced, 0.3), _t([[9, 8], [7, 6]]))


def test_dora_rescales_each_input_column_to_dora_scale():
    g = torch.Generator().manual_seed(4)
    weight, up, down = torch.randn(3, 4, generator=g), torch.randn(3, 2, generator=g), torch.randn(2, 4, generator=g)
    magnitude = _t([[1.0, 2.0, 0.5, 3.0]])
    sd = {"q.lora_up.weight": up, "q.lora_down.weight": down, "q.alpha": torch.tensor(1.0), "q.dora_scale": magnitude}
    adapters = _load_one(sd, "q", (3, 4))[(UNET, "w.weight")]
    full = apply_patches(weight, adapters, 1.0)
    direction = weight + 0.5 * (up @ down)  # alpha 1 / rank 2
    torch.testing.assert_close(full.norm(dim=0), magnitude[0])
    torch.testing.assert_close(full / full.norm(dim=0), direction / direction.norm(dim=0))
    half = apply_patches(weight, adapters, 0.5)
    torch.testing.assert_close(half, weight + 0.5 * (full - weight))


def test_patch_of_the_wrong_shape_is_logged_and_leaves_the_weight(caplog):
    patches, _ = load_lora(
        {"x.lora_up.weight": torch.ones(3, 1), "x.lora_down.weight": torch.ones(1, 3)}, {"x": (UNET, "a.weight")}
    )
    weight = torch.arange(4.0).reshape(2, 2)
    with caplog.at_level(logging.ERROR, logger="diffusion.lora_formats"):
        out = apply_patches(weight, patches[(UNET, "a.weight")], 1.0, key="a.weight")
    assert torch.equal(out, weight)
    assert "'a.weight'" in caplog.text and "(2, 2)" in caplog.text


# --- key maps ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "ldm", "diffusers"),
    [
        (SD15, "input_blocks.1.1.proj_in", "down_blocks.0.attentions.0.proj_in"),
        (SD15, "input_blocks.3.0.op", "down_blocks.0.downsamplers.0.conv"),
        (SD15, "input_blocks.4.0.skip_connection", "down_blocks.1.resnets.0.conv_shortcut"),
        (SD15, "middle_block.2.out_layers.3", "mid_block.resnets.1.conv2"),
        (SD15, "output_blocks.2.1.conv", "up_blocks.0.upsamplers.0.conv"),
        (SD15, "output_blocks.5.2.conv", "up_blocks.1.upsamplers.0.conv"),
        (SD15, "output_blocks.11.1.proj_out", "up_blocks.3.attentions.2.proj_out"),
        (
            SD15,
            "input_blocks.1.1.transformer_blocks.0.attn1.to_out.0",
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0",
        ),
        (SD15, "time_embed.0", "time_embedding.linear_1"),
        (SDXL, "label_emb.0.0", "add_embedding.linear_1"),
        (SDXL, "input_blocks.6.0.op", "down_blocks.1.downsamplers.0.conv"),
        (
            SDXL,
            "input_blocks.7.1.transformer_blocks.3.ff.net.2",
            "down_blocks.2.attentions.0.transformer_blocks.3.ff.net.2",
        ),
        (
            SDXL,
            "middle_block.1.transformer_blocks.9.attn1.to_out.0",
            "mid_block.attentions.0.transformer_blocks.9.attn1.to_out.0",
        ),
        (
            SDXL,
            "output_blocks.0.1.transformer_blocks.9.attn2.to_v",
            "up_blocks.0.attentions.0.transformer_blocks.9.attn2.to_v",
        ),
        (SDXL, "output_blocks.2.2.conv", "up_blocks.0.upsamplers.0.conv"),
        (SDXL, "output_blocks.8.0.skip_connection", "up_blocks.2.resnets.2.conv_shortcut"),
    ],
)
def test_unet_diffusers_map(config, ldm, diffusers):
    assert unet_diffusers_map(config)[diffusers] == ldm


def test_sd15_has_no_attention_in_its_lowest_level():
    names = unet_diffusers_map(SD15)
    assert not any(k.startswith(("down_blocks.3.attentions", "up_blocks.0.attentions")) for k in names)
    assert "up_blocks.3.upsamplers.0.conv" not in names and "down_blocks.3.downsamplers.0.conv" not in names
    assert not any(".transformer_blocks.1." in k for k in names)  # depth 1 everywhere


def test_unet_lora_names_all_reach_the_same_weight():
    key_map = model_lora_keys_unet(SD15_UNET, SD15)
    to_q = (UNET, "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight")
    for name in (
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q",
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
        "lycoris_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q",
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
        "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q",
    ):
        assert key_map[name] == to_q, name
    to_out = (UNET, "input_blocks.1.1.transformer_blocks.0.attn1.to_out.0.weight")
    assert key_map["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out"] == to_out
    assert key_map["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0"] == to_out
    assert key_map["lora_unet_down_blocks_1_resnets_0_conv_shortcut"] == (
        UNET,
        "input_blocks.4.0.skip_connection.weight",
    )
    assert key_map["diffusion_model.input_blocks.1.1.proj_in.bias"] == (UNET, "input_blocks.1.1.proj_in.bias")
    assert not any(k.startswith("lora_unet_add_embedding") for k in key_map)  # SD1 has no label_emb


def test_unet_keys_keep_the_callers_prefix():
    key_map = model_lora_keys_unet(["model.diffusion_model.input_blocks.1.1.proj_in.weight"], SD15)
    target = (UNET, "model.diffusion_model.input_blocks.1.1.proj_in.weight")
    assert key_map["lora_unet_input_blocks_1_1_proj_in"] == target
    assert key_map["lora_unet_down_blocks_0_attentions_0_proj_in"] == target


def test_sdxl_unet_names():
    key_map = model_lora_keys_unet(SDXL_UNET, SDXL)
    assert key_map["lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k"] == (
        UNET, "input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight")  # fmt: skip
    assert key_map["lora_unet_up_blocks_0_attentions_0_transformer_blocks_9_attn2_to_v"] == (
        UNET, "output_blocks.0.1.transformer_blocks.9.attn2.to_v.weight")  # fmt: skip
    assert key_map["lora_unet_add_embedding_linear_1"] == (UNET, "label_emb.0.0.weight")
    assert key_map["lora_unet_up_blocks_0_upsamplers_0_conv"] == (UNET, "output_blocks.2.2.conv.weight")


def test_sd1_clip_names():
    key_map = model_lora_keys_clip(CLIP_L)
    q0 = (CLIP, "clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight")
    for name in (
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj",
        "text_encoders.clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj",
    ):
        assert key_map[name] == q0, name
    assert key_map["lora_te_text_model_encoder_layers_11_mlp_fc2"] == (
        CLIP, "clip_l.transformer.text_model.encoder.layers.11.mlp.fc2.weight")  # fmt: skip
    assert "text_encoders.clip_l.transformer.text_model.final_layer_norm" in key_map  # every weight, generically
    assert not any(k.startswith("lora_te2_") for k in key_map)


def test_sdxl_clip_names_split_te1_and_te2():
    key_map = model_lora_keys_clip(CLIP_L + CLIP_G)
    assert key_map["lora_te1_text_model_encoder_layers_0_self_attn_q_proj"] == (
        CLIP, "clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight")  # fmt: skip
    assert key_map["lora_te_text_model_encoder_layers_0_self_attn_q_proj"][1].startswith("clip_l.")
    fc1 = (CLIP, "clip_g.transformer.text_model.encoder.layers.31.mlp.fc1.weight")
    assert key_map["lora_te2_text_model_encoder_layers_31_mlp_fc1"] == fc1
    assert key_map["text_encoder_2.text_model.encoder.layers.31.mlp.fc1"] == fc1
    assert key_map["lora_te2_text_projection"] == (CLIP, "clip_g.transformer.text_projection.weight")


def test_refiner_clip_g_alone_takes_the_te_names():
    key_map = model_lora_keys_clip(CLIP_G)
    assert key_map["lora_te_text_model_encoder_layers_0_self_attn_out_proj"] == (
        CLIP, "clip_g.transformer.text_model.encoder.layers.0.self_attn.out_proj.weight")  # fmt: skip
    assert not any(k.startswith("lora_te2_text_model") for k in key_map)


@pytest.mark.slow
@pytest.mark.parametrize("config", [SD15, SDXL], ids=["sd15", "sdxl"])
def test_diffusers_map_matches_the_real_unet_layout(config):
    unet = pytest.importorskip("diffusion.unet")
    with torch.device("meta"):
        model = unet.UNetModel(config)
    modules = {k.rpartition(".")[0] for k in model.state_dict()}
    mapped = unet_diffusers_map(config)
    # Only layers the model lacks may be missing (resnets without a channel change, SD1 label_emb).
    missing = {v for v in mapped.values() if v not in modules}
    assert all(m.endswith("skip_connection") or m.startswith("label_emb") for m in missing), sorted(missing)
    assert modules - set(mapped.values()) == set()


# --- loading: unmatched keys -------------------------------------------------------------------


def test_unknown_keys_are_returned_and_logged(caplog):
    key_map = model_lora_keys_unet(SD15_UNET, SD15)
    known = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q"
    sd = {
        f"{known}.lora_up.weight": torch.ones(320, 1),
        f"{known}.lora_down.weight": torch.ones(1, 320),
        f"{known}.alpha": torch.tensor(1.0),
        f"{known}.hada_w1_a": torch.ones(320, 1),  # an incomplete LoHa: reported, not half-loaded
        "lora_unet_no_such_layer.lora_up.weight": torch.ones(2, 1),
        "lora_unet_no_such_layer.lora_down.weight": torch.ones(1, 2),
        "lora_unet_no_such_layer.alpha": torch.tensor(1.0),
        "ss_training_comment": torch.zeros(1),
    }
    with caplog.at_level(logging.WARNING, logger="diffusion.lora"):
        patches, unmatched = load_lora(sd, key_map)
    assert list(patches) == [(UNET, "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight")]
    assert unmatched == sorted(
        [f"{known}.hada_w1_a", "lora_unet_no_such_layer.alpha", "lora_unet_no_such_layer.lora_down.weight",
         "lora_unet_no_such_layer.lora_up.weight", "ss_training_comment"]
    )  # fmt: skip
    assert "5 key(s) not loaded" in caplog.text and "lora_unet_no_such_layer.lora_up.weight" in caplog.text


def test_sdxl_lora_against_sd1_loads_nothing_and_reports_everything(caplog):
    unet_shapes = {(UNET, k): v for k, v in SD15_UNET.items()}
    clip_shapes = {(CLIP, k): (768, 768) for k in CLIP_L}
    key_map = {**model_lora_keys_unet(SD15_UNET, SD15), **model_lora_keys_clip(CLIP_L)}
    sd = {}
    for stem, out_ch, in_ch in (
        ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k", 640, 2048),  # SD1 has it, for 768
        ("lora_unet_middle_block_1_transformer_blocks_0_attn2_to_k", 1280, 2048),  # same
        ("lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k", 640, 2048),  # depth 2: SDXL only
        ("lora_unet_output_blocks_0_1_transformer_blocks_9_attn2_to_v", 1280, 2048),
        ("lora_unet_label_emb_0_0", 1280, 2816),
        ("lora_te2_text_model_encoder_layers_0_self_attn_q_proj", 1280, 1280),  # no clip_g
    ):  # (lora_te1_ keys would load: SDXL's first encoder is SD1's CLIP-L, also in ComfyUI)
        sd[f"{stem}.lora_up.weight"] = torch.zeros(out_ch, 1)
        sd[f"{stem}.lora_down.weight"] = torch.zeros(1, in_ch)
        sd[f"{stem}.alpha"] = torch.tensor(1.0)
    with caplog.at_level(logging.WARNING, logger="diffusion.lora"):
        patches, unmatched = load_lora(sd, key_map, shapes={**unet_shapes, **clip_shapes})
    assert patches == {}
    assert unmatched == sorted(sd)
    assert "2 layer(s) not loaded (the model's weight has another shape" in caplog.text
    assert "12 key(s) not loaded (no matching layer" in caplog.text


# --- patching ------------------------------------------------------------------------------------


def _tiny_unet_module() -> nn.Module:
    g = torch.Generator().manual_seed(5)
    return _module(
        {
            "input_blocks.1.1.proj_in.weight": torch.randn(4, 4, 1, 1, generator=g).half(),
            "input_blocks.1.1.proj_in.bias": torch.randn(4, generator=g).half(),
            "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight": torch.randn(4, 4, generator=g).half(),
        }
    )


def _kohya_lora(g: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.randn(4, 2, 1, 1, generator=g),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.randn(2, 4, 1, 1, generator=g),
        "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(1.0),
        "lora_unet_down_blocks_0_attentions_0_proj_in.diff_b": torch.randn(4, generator=g),
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.lora_up.weight": torch.randn(4, 1, generator=g),
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.randn(1, 4, generator=g),
    }


def test_patcher_applies_in_float32_casts_back_and_restores_bit_exact():
    module = _tiny_unet_module()
    originals = dict(module.named_parameters())
    snapshots = {k: v.detach().clone() for k, v in originals.items()}
    versions = {k: v._version for k, v in originals.items()}
    lora = _kohya_lora(torch.Generator().manual_seed(6))
    key_map = model_lora_keys_unet([k for k, _ in module.named_parameters()], SD15)
    patches, unmatched = load_lora(lora, key_map, shapes=module_shapes(UNET, module))
    assert unmatched == []

    patcher = Patcher(module)
    assert patcher.apply(patches_for(patches, UNET, 0.75)) == []
    assert set(patcher.patched) == set(originals)
    proj = module.get_parameter("input_blocks.1.1.proj_in.weight")
    up = lora["lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight"].flatten(1)
    down = lora["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"].flatten(1)
    expected = (
        snapshots["input_blocks.1.1.proj_in.weight"].float() + 0.75 * 0.5 * (up @ down)[:, :, None, None]
    ).half()
    assert proj.dtype == torch.float16 and torch.equal(proj, expected)
    bias = (
        snapshots["input_blocks.1.1.proj_in.bias"].float()
        + 0.75 * lora["lora_unet_down_blocks_0_attentions_0_proj_in.diff_b"]
    )
    assert torch.equal(module.get_parameter("input_blocks.1.1.proj_in.bias"), bias.half())

    patcher.restore()
    for name, original in originals.items():
        assert module.get_parameter(name) is original
        assert torch.equal(original, snapshots[name]) and original._version == versions[name]
    assert patcher.patched == ()


def test_reapplying_starts_from_the_originals():
    module = _tiny_unet_module()
    patches, _ = load_lora(
        _kohya_lora(torch.Generator().manual_seed(7)), model_lora_keys_unet(dict(module.named_parameters()), SD15)
    )
    once = Patcher(_tiny_unet_module())
    once.apply(patches_for(patches, UNET, 0.4))
    patcher = Patcher(module)
    patcher.apply(patches_for(patches, UNET, 1.0))
    patcher.apply(patches_for(patches, UNET, 0.4))
    for name, value in once.module.named_parameters():
        assert torch.equal(module.get_parameter(name), value)


def test_stacked_loras_with_their_own_strengths_round_once():
    weight = torch.randn(3, 3, generator=torch.Generator().manual_seed(8)).half()
    module = _module({"w.weight": weight.clone()})
    first, _ = load_lora({"a.diff": torch.full((3, 3), 0.001)}, {"a": (UNET, "w.weight")})
    second, _ = load_lora(
        {"b.lora_up.weight": torch.ones(3, 1), "b.lora_down.weight": torch.ones(1, 3)}, {"b": (UNET, "w.weight")}
    )
    Patcher(module).apply(stack_patches(patches_for(first, UNET, 0.5), patches_for(second, UNET, 0.25)))
    expected = (weight.float() + 0.5 * 0.001 + 0.25).half()  # one cast at the end
    assert torch.equal(module.get_parameter("w.weight"), expected)


def test_model_and_clip_strengths_are_separate():
    key_map = {**model_lora_keys_unet(["a.weight"], SD15), **model_lora_keys_clip(CLIP_L)}
    sd = {"diffusion_model.a.diff": torch.ones(2), "lora_te_text_model_encoder_layers_0_mlp_fc2.diff": torch.ones(2)}
    patches, unmatched = load_lora(sd, key_map)
    assert unmatched == []
    unet, clip = patches_for(patches, UNET, 0.8), patches_for(patches, CLIP, 0.2)
    fc2 = "clip_l.transformer.text_model.encoder.layers.0.mlp.fc2.weight"
    assert list(unet) == ["a.weight"] and [s for _, s in unet["a.weight"]] == [0.8]
    assert list(clip) == [fc2] and [s for _, s in clip[fc2]] == [0.2]


def test_missing_parameters_are_reported_and_the_rest_patched(caplog):
    module = _module({"w.weight": torch.zeros(2)})
    patches = {
        "w.weight": [
            (a, 1.0) for a in load_lora({"x.diff": torch.ones(2)}, {"x": (UNET, "w.weight")})[0][(UNET, "w.weight")]
        ]
    }
    patches["gone.weight"] = patches["w.weight"]
    with caplog.at_level(logging.WARNING, logger="diffusion.lora"):
        assert Patcher(module).apply(patches) == ["gone.weight"]
    assert "gone.weight" in caplog.text
    assert torch.equal(module.get_parameter("w.weight"), torch.ones(2))


def test_restore_follows_a_module_cast_while_patched():
    module = _module({"w.weight": torch.tensor([1.0, 2.0], dtype=torch.float16)})
    patcher = Patcher(module)
    patcher.apply(
        {
            "w.weight": [
                (a, 1.0) for a in load_lora({"x.diff": torch.ones(2)}, {"x": (UNET, "w.weight")})[0][(UNET, "w.weight")]
            ]
        }
    )
    module.double()  # the model manager changed the dtype under the patch
    patcher.restore()
    restored = module.get_parameter("w.weight")
    assert restored.dtype == torch.float64 and torch.equal(restored, torch.tensor([1.0, 2.0], dtype=torch.float64))


@pytest.mark.slow
def test_kohya_lora_patches_a_tiny_sdxl_and_restores_it():
    families = pytest.importorskip("diffusion.families.sdxl")
    unet_mod, clip_mod = pytest.importorskip("diffusion.unet"), pytest.importorskip("diffusion.clip")
    torch.manual_seed(0)
    unet = unet_mod.UNetModel(families.TINY_UNET)
    clip = clip_mod.TextEncoders.from_configs([families.TINY_CLIP_L, families.TINY_CLIP_G])
    key_map = {**model_lora_keys_unet(unet.state_dict(), families.TINY_UNET), **model_lora_keys_clip(clip.state_dict())}
    shapes = {**module_shapes(UNET, unet), **module_shapes(CLIP, clip)}
    g = torch.Generator().manual_seed(9)
    sd = {}
    for stem in (
        "lora_unet_up_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",  # diffusers-style name
        "lora_unet_input_blocks_0_0",  # LDM-style name, the 3x3 conv_in
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
        "lora_te2_text_model_encoder_layers_1_mlp_fc1",
    ):
        shape = shapes[key_map[stem]]
        sd[f"{stem}.lora_up.weight"] = torch.randn(shape[0], 2, *([1, 1] if len(shape) == 4 else []), generator=g)
        sd[f"{stem}.lora_down.weight"] = torch.randn(2, *shape[1:], generator=g)
        sd[f"{stem}.alpha"] = torch.tensor(1.0)
    patches, unmatched = load_lora(sd, key_map, shapes=shapes)
    assert unmatched == [] and len(patches) == 4

    x, t = torch.randn(1, 4, 8, 8, generator=g), torch.tensor([500.0])
    context, y = torch.randn(1, 3, families.TINY_UNET.context_dim, generator=g), torch.randn(1, 2816, generator=g)
    snapshot = {k: v.clone() for k, v in {**unet.state_dict(), **clip.state_dict()}.items()}
    with torch.no_grad():
        before = unet(x, t, context, y)
        unet_patcher, clip_patcher = Patcher(unet), Patcher(clip)
        assert unet_patcher.apply(patches_for(patches, UNET, 1.0)) == []
        assert clip_patcher.apply(patches_for(patches, CLIP, 0.5)) == []
        assert len(unet_patcher.patched) == 2 and len(clip_patcher.patched) == 2
        assert not torch.allclose(unet(x, t, context, y), before)
        unet_patcher.restore()
        clip_patcher.restore()
        assert torch.equal(unet(x, t, context, y), before)
    for key, value in {**unet.state_dict(), **clip.state_dict()}.items():
        assert torch.equal(value, snapshot[key]), key
