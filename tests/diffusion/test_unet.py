"""UNetModel: exact checkpoint layout of the real families (built on `meta`), tiny-model behaviour,
layer factories, and (with the full random SD1.5 checkpoint present) ComfyUI's golden latents."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from core.errors import ModelError
from diffusion.configs import UNetConfig
from diffusion.ops import MANUAL_CAST, PLAIN, SKIP_INIT, seeded_init_
from diffusion.unet import UNetModel

# -- reference configs (written out here so the test does not depend on the families) -----------

SD15 = UNetConfig()
SD2 = UNetConfig(num_heads=-1, num_head_channels=64, context_dim=1024, use_linear_in_transformer=True)
SDXL = UNetConfig(
    channel_mult=(1, 2, 4),
    num_res_blocks=(2, 2, 2),
    transformer_depth=(0, 0, 2, 2, 10, 10),
    transformer_depth_middle=10,
    transformer_depth_output=(10, 10, 10, 2, 2, 2, 0, 0, 0),  # output-block order (configs.py)
    num_heads=-1,
    num_head_channels=64,
    context_dim=2048,
    use_linear_in_transformer=True,
    adm_in_channels=2816,
)
SDXL_REFINER = UNetConfig(
    model_channels=384,
    transformer_depth=(0, 0, 4, 4, 4, 4, 0, 0),
    transformer_depth_middle=4,
    transformer_depth_output=(0, 0, 0, 4, 4, 4, 4, 4, 4, 0, 0, 0),
    num_heads=-1,
    num_head_channels=64,
    context_dim=1280,
    use_linear_in_transformer=True,
    adm_in_channels=2560,
)

# Facts from `make_random_checkpoint.py --family X --list` (model.diffusion_model.* lines): key
# count, parameter count, and sha256 of the sorted lines "key [d0, d1, ...]" -- the full key set
# and every shape, compactly.
SD15_FACTS = (686, 859_520_964, "b0828585f6719ebf3393cd4f537c8b83e90dbddbb12e34b197798bc05c43a9ca")
SDXL_FACTS = (1680, 2_567_463_684, "b968733410df414ef289a735d89e235ee69ca18ba9a61e6885067e2e34545600")

SD15_SAMPLES = [
    ("time_embed.0.weight", (1280, 320)),
    ("input_blocks.0.0.weight", (320, 4, 3, 3)),
    ("input_blocks.1.0.in_layers.0.weight", (320,)),
    ("input_blocks.1.0.emb_layers.1.weight", (320, 1280)),
    ("input_blocks.1.1.proj_in.weight", (320, 320, 1, 1)),
    ("input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight", (320, 320)),
    ("input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", (320, 768)),
    ("input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight", (2560, 320)),
    ("input_blocks.1.1.transformer_blocks.0.ff.net.2.weight", (320, 1280)),
    ("input_blocks.3.0.op.weight", (320, 320, 3, 3)),
    ("input_blocks.4.0.skip_connection.weight", (640, 320, 1, 1)),
    ("input_blocks.7.1.transformer_blocks.0.attn1.to_out.0.bias", (1280,)),
    ("input_blocks.11.0.out_layers.3.weight", (1280, 1280, 3, 3)),
    ("middle_block.1.transformer_blocks.0.attn2.to_v.weight", (1280, 768)),
    ("middle_block.2.in_layers.2.weight", (1280, 1280, 3, 3)),
    ("output_blocks.0.0.in_layers.0.weight", (2560,)),
    ("output_blocks.2.1.conv.weight", (1280, 1280, 3, 3)),
    ("output_blocks.3.0.skip_connection.weight", (1280, 2560, 1, 1)),
    ("output_blocks.5.2.conv.weight", (1280, 1280, 3, 3)),
    ("output_blocks.11.1.proj_out.weight", (320, 320, 1, 1)),
    ("output_blocks.11.1.transformer_blocks.0.norm3.weight", (320,)),
    ("out.0.weight", (320,)),
    ("out.2.weight", (4, 320, 3, 3)),
]
SDXL_SAMPLES = [
    ("label_emb.0.0.weight", (1280, 2816)),
    ("label_emb.0.2.weight", (1280, 1280)),
    ("input_blocks.4.1.proj_in.weight", (640, 640)),
    ("input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight", (640, 2048)),
    ("input_blocks.6.0.op.weight", (640, 640, 3, 3)),
    ("input_blocks.7.1.transformer_blocks.9.ff.net.0.proj.weight", (10240, 1280)),
    ("middle_block.1.transformer_blocks.9.attn1.to_q.weight", (1280, 1280)),
    ("output_blocks.0.1.transformer_blocks.9.norm2.bias", (1280,)),
    ("output_blocks.2.2.conv.weight", (1280, 1280, 3, 3)),
    ("output_blocks.5.2.conv.weight", (640, 640, 3, 3)),
    ("output_blocks.8.0.skip_connection.weight", (320, 640, 1, 1)),
    ("out.2.weight", (4, 320, 3, 3)),
]


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _digest(shapes: dict[str, tuple[int, ...]]) -> str:
    text = "\n".join(f"{k} {list(v)}" for k, v in sorted(shapes.items()))
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    ("config", "facts", "samples"),
    [(SD15, SD15_FACTS, SD15_SAMPLES), (SDXL, SDXL_FACTS, SDXL_SAMPLES)],
    ids=["sd15", "sdxl"],
)
def test_full_size_layout_equals_checkpoint(config: UNetConfig, facts: tuple, samples: list) -> None:
    shapes = _shapes(UNetModel(config, device="meta"))
    count, params, digest = facts
    for key, shape in samples:
        assert shapes.get(key) == shape, key
    assert len(shapes) == count
    assert sum(torch.Size(s).numel() for s in shapes.values()) == params
    assert _digest(shapes) == digest


def test_sd2_layout_is_sd15_keys_with_linear_proj_and_1024_context() -> None:
    sd15, sd2 = _shapes(UNetModel(SD15, device="meta")), _shapes(UNetModel(SD2, device="meta"))
    assert sd2.keys() == sd15.keys()
    differing = sorted(k for k in sd2 if sd2[k] != sd15[k])
    assert differing and all(
        k.endswith(("proj_in.weight", "proj_out.weight", "attn2.to_k.weight", "attn2.to_v.weight")) for k in differing
    )
    assert sd2["input_blocks.1.1.proj_in.weight"] == (320, 320)
    assert sd2["output_blocks.11.1.proj_out.weight"] == (320, 320)
    assert sd2["input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] == (320, 1024)
    assert sd2["middle_block.1.transformer_blocks.0.attn2.to_v.weight"] == (1280, 1024)
    assert sum(torch.Size(s).numel() for s in sd2.values()) == 865_910_724  # the published SD2 UNet size


def test_sd2_uses_64_channel_heads() -> None:
    model = UNetModel(SD2, device="meta")
    assert model.input_blocks[1][1].transformer_blocks[0].attn1.heads == 5  # 320 / 64
    assert model.middle_block[1].transformer_blocks[0].attn1.heads == 20  # 1280 / 64
    sd15 = UNetModel(SD15, device="meta")
    assert sd15.middle_block[1].transformer_blocks[0].attn1.heads == 8  # fixed head count


def test_sdxl_refiner_layout() -> None:
    shapes = _shapes(UNetModel(SDXL_REFINER, device="meta"))
    assert shapes["input_blocks.0.0.weight"] == (384, 4, 3, 3)
    assert shapes["label_emb.0.0.weight"] == (1536, 2560)
    assert shapes["input_blocks.4.1.transformer_blocks.3.attn2.to_k.weight"] == (768, 1280)
    assert shapes["input_blocks.7.1.proj_in.weight"] == (1536, 1536)
    assert shapes["middle_block.1.transformer_blocks.3.ff.net.2.weight"] == (1536, 6144)
    assert shapes["output_blocks.2.1.conv.weight"] == (1536, 1536, 3, 3)  # level 3 has no transformer
    with_transformer = {".".join(k.split(".")[:2]) for k in shapes if ".transformer_blocks.3." in k}
    assert with_transformer == {
        *(f"input_blocks.{i}" for i in (4, 5, 7, 8)),
        "middle_block.1",
        *(f"output_blocks.{i}" for i in range(3, 9)),
    }
    assert not any(".transformer_blocks.4." in k for k in shapes)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_res_blocks": (2, 2, 2)}, "num_res_blocks has 3 entries for 4 levels"),
        ({"transformer_depth": (1, 1)}, "transformer_depth has 2 entries, needs 8"),
        ({"transformer_depth_output": (1,) * 11}, "transformer_depth_output has 11 entries, needs 12"),
        ({"num_head_channels": 64}, "exactly one of num_heads and num_head_channels"),
    ],
)
def test_inconsistent_config_is_reported(change: dict, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        UNetModel(replace(SD15, **change), device="meta")


# -- tiny models -----------------------------------------------------------------------------------

TINY = UNetConfig(
    model_channels=8,
    channel_mult=(1, 2),
    num_res_blocks=(1, 1),
    transformer_depth=(1, 1),
    transformer_depth_middle=1,
    transformer_depth_output=(1, 1, 1, 1),
    num_heads=2,
    context_dim=12,
    norm_groups=4,
)
TINY_XL = UNetConfig(
    model_channels=8,
    channel_mult=(1, 2, 2),
    num_res_blocks=(1, 1, 1),
    transformer_depth=(0, 1, 2),
    transformer_depth_middle=1,
    transformer_depth_output=(2, 2, 1, 1, 0, 0),
    num_heads=-1,
    num_head_channels=4,
    context_dim=12,
    use_linear_in_transformer=True,
    adm_in_channels=6,
    norm_groups=4,
)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))


def _tiny(config: UNetConfig = TINY, seed: int = 0) -> UNetModel:
    model = seeded_init_(UNetModel(config), seed).eval()
    with torch.no_grad():  # random biases too, so a lost bias would show
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(_randn(*p.shape, seed=len(name)) * 0.1)
    return model


def _run(model: UNetModel, x: torch.Tensor, t=None, ctx=None, **kw) -> torch.Tensor:
    t = torch.full((x.shape[0],), 500.0) if t is None else t
    ctx = _randn(x.shape[0], 5, 12, seed=99) if ctx is None else ctx
    with torch.no_grad():
        return model(x, t, ctx, **kw)


def test_tiny_forward_shape_finite_deterministic() -> None:
    x = _randn(2, 4, 16, 16, seed=1)
    out = _run(_tiny(), x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all() and out.abs().max() > 0
    assert torch.equal(out, _run(_tiny(), x)), "same seed, same model, same input -> same numbers"
    assert not torch.allclose(out, _run(_tiny(seed=1), x))


def test_batch_items_are_independent() -> None:
    model, x, ctx = _tiny(), _randn(3, 4, 8, 8, seed=2), _randn(3, 5, 12, seed=3)
    t = torch.tensor([1.0, 400.0, 999.0])
    full = _run(model, x, t, ctx)
    alone = _run(model, x[1:2], t[1:2], ctx[1:2])
    torch.testing.assert_close(full[1:2], alone, rtol=1e-5, atol=1e-5)


def test_timestep_and_context_change_the_output() -> None:
    model, x = _tiny(), _randn(1, 4, 8, 8, seed=4)
    base = _run(model, x, torch.tensor([500.0]))
    assert not torch.allclose(base, _run(model, x, torch.tensor([501.0])))
    assert not torch.allclose(base, _run(model, x, torch.tensor([500.0]), _randn(1, 5, 12, seed=5)))
    # A scalar timestep applies to every batch item.
    xb = x.expand(2, -1, -1, -1)
    torch.testing.assert_close(_run(model, xb, torch.tensor(500.0)), _run(model, xb, torch.tensor([500.0, 500.0])))


@pytest.mark.parametrize(("config", "size"), [(TINY, (9, 11)), (TINY_XL, (13, 7)), (TINY_XL, (5, 6))])
def test_odd_latent_sizes_round_trip(config: UNetConfig, size: tuple[int, int]) -> None:
    model = _tiny(config)
    kw = {"y": _randn(1, 6, seed=6)} if config.adm_in_channels else {}
    x = _randn(1, 4, *size, seed=7)
    out = _run(model, x, **kw)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_vector_conditioning_is_required_and_used() -> None:
    model, x = _tiny(TINY_XL), _randn(2, 4, 8, 8, seed=8)
    with pytest.raises(ModelError, match="needs y of width 6"):
        _run(model, x)
    a = _run(model, x, y=_randn(2, 6, seed=9))
    b = _run(model, x, y=_randn(2, 6, seed=10))
    assert not torch.allclose(a, b)
    with pytest.raises(ModelError, match="takes no y"):
        _run(_tiny(), x, y=_randn(2, 6, seed=9))


def test_conv_and_linear_projection_models_compute_the_same_function() -> None:
    conv = _tiny(TINY)
    linear = UNetModel(replace(TINY, use_linear_in_transformer=True)).eval()
    state = {
        k: (v[:, :, 0, 0] if k.endswith(("proj_in.weight", "proj_out.weight")) else v)
        for k, v in conv.state_dict().items()
    }
    linear.load_state_dict(state, strict=True)
    x = _randn(1, 4, 8, 8, seed=11)
    torch.testing.assert_close(_run(conv, x), _run(linear, x), rtol=1e-5, atol=1e-5)


def test_input_control_equals_a_hook_on_that_block() -> None:
    model, x = _tiny(), _randn(1, 4, 8, 8, seed=12)
    residual = _randn(1, 16, 4, 4, seed=13)
    blocks = len(model.input_blocks)
    # ComfyUI pops the list from its end: the last entry goes to input block 0.
    signals = [None] * blocks
    signals[blocks - 1 - 3] = residual  # input block 3 (level 1 resblock, 16 channels at 4x4)
    with_control = _run(model, x, control={"input": signals})
    handle = model.input_blocks[3].register_forward_hook(lambda _m, _i, out: out + residual)
    try:
        hooked = _run(model, x)
    finally:
        handle.remove()
    torch.testing.assert_close(with_control, hooked)
    assert not torch.allclose(with_control, _run(model, x))
    assert signals[blocks - 1 - 3] is residual, "the caller's list is not consumed"


def test_middle_and_output_control(caplog: pytest.LogCaptureFixture) -> None:
    model, x = _tiny(), _randn(1, 4, 8, 8, seed=14)
    base = _run(model, x)
    assert torch.equal(_run(model, x, control={"middle": [torch.zeros(1, 16, 4, 4)]}), base)
    assert not torch.allclose(_run(model, x, control={"middle": [_randn(1, 16, 4, 4, seed=15)]}), base)
    # "output" residuals are added to the skip connections, in input-block order.
    skips = [(8, 8, 8), (8, 8, 8), (8, 4, 4), (16, 4, 4)]
    signals = [torch.zeros(1, *s) for s in skips]
    signals[2] = _randn(1, 8, 4, 4, seed=16)
    assert not torch.allclose(_run(model, x, control={"output": signals}), base)
    with caplog.at_level(logging.WARNING, logger="diffusion.unet"):
        out = _run(model, x, control={"middle": [torch.ones(1, 3, 2, 2)]})
    assert torch.equal(out, base)
    assert "control residual for middle" in caplog.text


def test_low_precision_weights_return_the_input_dtype() -> None:
    model, x = _tiny(), _randn(1, 4, 8, 8, seed=17)
    ref = _run(model, x)
    model.to(torch.bfloat16)
    out = _run(model, x)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_channels_last_gives_the_same_result() -> None:
    model, x = _tiny(), _randn(2, 4, 8, 8, seed=18)
    ref = _run(model, x)
    model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(_run(model, x.to(memory_format=torch.channels_last)), ref, rtol=1e-4, atol=1e-5)


# -- layer factories -------------------------------------------------------------------------------


def test_skip_init_and_manual_cast_build_the_same_layout() -> None:
    plain = _tiny()
    for ops in (PLAIN, SKIP_INIT, MANUAL_CAST):
        other = UNetModel(TINY, operations=ops)
        assert _shapes(other) == _shapes(plain)
        other.load_state_dict(plain.state_dict())
        x = _randn(1, 4, 8, 8, seed=19)
        torch.testing.assert_close(_run(other.eval(), x), _run(plain, x))


def test_manual_cast_keeps_storage_dtype_and_computes_in_compute_dtype() -> None:
    plain = _tiny()
    stored = UNetModel(TINY, operations=MANUAL_CAST).eval()
    stored.load_state_dict(plain.state_dict())
    stored.to(torch.bfloat16)  # storage dtype
    stored.compute_dtype = torch.float32
    rounded = UNetModel(TINY).eval()  # the same bf16-rounded weights, upcast once
    rounded.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in plain.state_dict().items()})
    x = _randn(1, 4, 8, 8, seed=20)
    out = _run(stored, x)
    assert stored.time_embed[0].weight.dtype == torch.bfloat16, "weights stay in their storage dtype"
    torch.testing.assert_close(out, _run(rounded, x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, _run(plain, x), rtol=1e-5, atol=1e-5), "bf16 rounding must be visible"


def test_seeded_init_is_deterministic_and_follows_the_recipe() -> None:
    a, b = seeded_init_(UNetModel(TINY), 3), seeded_init_(UNetModel(TINY), 3)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), name
    norm = a.input_blocks[1][0].in_layers[0]
    assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)
    conv = a.input_blocks[0][0].weight
    assert 0.5 < float(conv.detach().std() * (4 * 9) ** 0.5) < 1.5  # randn / sqrt(fan_in)


# -- parity with ComfyUI (needs the full-size random SD1.5 checkpoint) ---------------------------

from tests.utils.shared import GOLDEN, sd15_random_checkpoint  # noqa: E402


def _load_prefixed(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return {k[len(prefix) :]: f.get_tensor(k).float() for k in f.keys() if k.startswith(prefix)}  # noqa: SIM118


def _encode_prompts(path: Path, prompts: list[str]) -> torch.Tensor:
    """CLIP-L last hidden state (final norm applied), prompts padded with the end token -- SD1.x's
    conditioning for unweighted prompts. Independent of diffusion.clip on purpose."""
    import importlib.util

    from transformers import CLIPTextConfig, CLIPTextModel

    origin = importlib.util.find_spec("clip").submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location("_clip_bpe", Path(origin) / "simple_tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    bpe = module.SimpleTokenizer()
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
    )
    clip = CLIPTextModel(config).eval()
    clip.load_state_dict(_load_prefixed(path, "cond_stage_model.transformer.text_model."), strict=False)
    rows = []
    for text in prompts:
        ids = [49406, *bpe.encode(text), 49407]
        rows.append(ids + [49407] * (77 - len(ids)))
    with torch.no_grad():
        return clip(torch.tensor(rows)).last_hidden_state


def _euler_txt2img(unet: UNetModel, cond: torch.Tensor, seed: int, steps: int, cfg: float) -> torch.Tensor:
    """Discrete-eps SD1 sampling, "normal" schedule, Euler, CFG with cond/uncond in one batch."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    log_sigmas = (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).float().log()

    def timestep(sigma: torch.Tensor) -> torch.Tensor:
        return (sigma.log() - log_sigmas[:, None]).abs().argmin(dim=0).view(sigma.shape)

    start, end = timestep(log_sigmas[-1:].exp()), timestep(log_sigmas[:1].exp())

    def sigma(t: torch.Tensor) -> torch.Tensor:  # log-linear interpolation between table entries
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp()

    ts = torch.linspace(float(start), float(end), steps)
    sigmas = torch.tensor([float(sigma(t)) for t in ts] + [0.0])
    x = torch.randn((1, 4, 16, 16), generator=torch.manual_seed(seed)) * torch.sqrt(1.0 + sigmas[0] ** 2)
    with torch.no_grad():
        for i in range(steps):
            s = sigmas[i]
            eps = unet(torch.cat([x, x]) / torch.sqrt(s**2 + 1), timestep(s.reshape(1)).float().expand(2), cond)
            denoised = torch.cat([x, x]) - eps * s
            guided = denoised[1:] + (denoised[:1] - denoised[1:]) * cfg
            x = x + (x - guided) / s * (sigmas[i + 1] - s)
    return x / 0.18215


@pytest.mark.weights
@pytest.mark.slow
def test_golden_txt2img_latent_matches_comfyui() -> None:
    path = sd15_random_checkpoint()
    reference = GOLDEN / "latents/txt2img_euler_normal_10_0.latent.safetensors"
    if path is None or not reference.is_file():
        pytest.skip("the golden latents (shared/golden) are not at hand")
    from safetensors.torch import load_file

    unet = UNetModel(SD15, operations=SKIP_INIT).eval()
    unet.load_state_dict(_load_prefixed(path, "model.diffusion_model."), strict=True)
    cond = _encode_prompts(path, ["a photograph of an astronaut riding a horse", "blurry, low quality"])
    ours = _euler_txt2img(unet, cond, seed=42, steps=4, cfg=7.0)
    ref = load_file(str(reference))["latent_tensor"]
    assert ours.shape == ref.shape
    assert float((ours - ref).abs().max() / ref.abs().max()) <= 1e-3
