"""ControlNet, Control-LoRA and T2I-Adapter: file layouts, detection, strict loading, the control
residuals, strength / window / chaining semantics, and their effect through the real sampler."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from core.errors import EngineError, ModelError
from diffusion import controlnet_loading as cl
from diffusion.controlnet import (
    ControlLora,
    ControlNet,
    ModuleRunner,
    T2IAdapter,
    broadcast_image_to,
    common_upscale,
    load_controlnet,
    load_controlnet_state_dict,
)
from diffusion.controlnet_model import ControlNetModel
from diffusion.memory import ModelManager, device_policy
from diffusion.ops import seeded_init_
from diffusion.sampling.guidance import calc_cond_batch, convert_cond, prepare_conds
from diffusion.sampling.ksampler import common_ksampler, ksampler_sigmas
from diffusion.sampling.model_sampling import ModelSamplingDiscrete
from diffusion.unet import UNetModel
from tests.utils.checkpoints import cached_checkpoint
from tests.utils.controlnets import (
    adapter_config,
    adapter_state_dict,
    adapter_unet_config,
    control_lora_state_dict,
    controlnet_state_dict,
    random_controlnet,
    tiny_controlnet_config,
    write_random_adapter,
    write_random_controlnet,
)

LATENT = 8  # latent side in these tests: hints are 64x64 pixels


class UNetOnly:
    """The MODEL interface of diffusion/sampling/ksampler.py over a bare UNetModel."""

    def __init__(self, unet: UNetModel) -> None:
        self.unet = unet
        self.model_sampling = ModelSamplingDiscrete()
        self.calls: list[dict[str, Any]] = []

    def apply_model(self, x, t, c_crossattn=None, y=None, control=None, **_: Any) -> torch.Tensor:
        self.calls.append({"batch": x.shape[0], "control": control})
        with torch.no_grad():
            return self.unet(x, t, c_crossattn, y=y, control=control).float()


def _unet(config, seed: int = 1) -> UNetModel:
    return seeded_init_(UNetModel(config), seed).requires_grad_(False).eval()


def _hint(batch: int = 1, size: int = LATENT * 8, seed: int = 3) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _control(family: str = "sd15", seed: int = 0, strength: float = 1.0, window=(0.0, 1.0), hint=None) -> ControlNet:
    control = ControlNet(ModuleRunner(random_controlnet(family, seed=seed)))
    control.set_cond_hint(_hint() if hint is None else hint, strength, window)
    return control


def _inputs(context_dim: int, batch: int = 1, seed: int = 5):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, LATENT, LATENT, generator=gen)
    cond = {"c_crossattn": torch.randn(batch, 7, context_dim, generator=gen)}
    return x, cond


def _skip_shapes(unet: UNetModel, x, t, context, y=None) -> tuple[list[tuple], tuple]:
    """Shapes of every input block's output (the skips) and of the middle block's output."""
    shapes: list[tuple] = []
    hooks = [b.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape))) for b in unet.input_blocks]
    mid: list[tuple] = []
    hooks.append(unet.middle_block.register_forward_hook(lambda m, i, o: mid.append(tuple(o.shape))))
    with torch.no_grad():
        unet(x, t, context, y=y)
    for h in hooks:
        h.remove()
    return shapes, mid[0]


# -- files, detection, strict loading ----------------------------------------------------------------


@pytest.mark.parametrize(("layout", "suffix"), [("pth", ".pth"), ("pth", ".safetensors"), ("bare", ".safetensors"),
                                                ("diffusers", ".safetensors")])  # fmt: skip
def test_every_layout_loads_the_same_network(tmp_path: Path, layout: str, suffix: str) -> None:
    path = write_random_controlnet(tmp_path / f"cn{suffix}", "sd15", layout=layout, seed=7)
    control = load_controlnet(path)
    assert isinstance(control, ControlNet)
    expected = random_controlnet("sd15", seed=7).state_dict()
    loaded = control.control_model.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_detect_kind_tells_the_formats_apart() -> None:
    assert cl.detect_kind(controlnet_state_dict(layout="pth")) == "controlnet"
    assert cl.detect_kind(controlnet_state_dict(layout="bare")) == "controlnet"
    assert cl.detect_kind(controlnet_state_dict(layout="diffusers")) == "diffusers"
    assert cl.detect_kind(adapter_state_dict(adapter_config())) == "t2i_adapter"
    assert cl.detect_kind(adapter_state_dict(adapter_config(light=True))) == "t2i_adapter"
    assert cl.detect_kind({"lora_controlnet": torch.tensor([]), "x": torch.zeros(1)}) == "control_lora"
    union = {**controlnet_state_dict(layout="diffusers"), "control_add_embedding.linear_1.bias": torch.zeros(2)}
    with pytest.raises(ModelError, match="ControlNet-Union"):
        cl.detect_kind(union)
    with pytest.raises(ModelError, match="not a ControlNet"):
        cl.detect_kind({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)})


def test_loading_is_strict_and_names_the_bad_keys(tmp_path: Path) -> None:
    sd = controlnet_state_dict(layout="bare")
    missing = {k: v for k, v in sd.items() if k != "zero_convs.2.0.weight"}
    with pytest.raises(ModelError, match=r"missing: zero_convs\.2\.0\.weight"):
        load_controlnet_state_dict(missing)
    wrong = dict(sd)
    wrong["middle_block_out.0.bias"] = torch.zeros(3)
    with pytest.raises(ModelError, match=r"wrong shape: middle_block_out\.0\.bias"):
        load_controlnet_state_dict(wrong)
    extra = {**sd, "zero_convs.99.0.weight": torch.zeros(1)}
    with pytest.raises(ModelError, match=r"unexpected: zero_convs\.99\.0\.weight"):
        load_controlnet_state_dict(extra)
    # Keys outside control_model. (the first .pth releases bundle a whole checkpoint) are ignored.
    bundled = {**controlnet_state_dict(layout="pth"), "model.diffusion_model.out.2.bias": torch.zeros(4)}
    assert isinstance(load_controlnet_state_dict(bundled), ControlNet)
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="broken.safetensors"):
        load_controlnet(path)


@pytest.mark.parametrize("layout", ["pth", "diffusers"])
def test_sdxl_variant_is_detected_from_shapes(layout: str) -> None:
    sd = controlnet_state_dict("sdxl", layout=layout)
    weights = cl.controlnet_weights(sd, cl.detect_kind(sd))
    config, hint_channels, family = cl.controlnet_config(weights)
    tiny = tiny_controlnet_config("sdxl")
    assert family.name == "sdxl" and hint_channels == 3
    assert config.adm_in_channels == 2816 and config.use_linear_in_transformer
    assert (config.num_heads, config.num_head_channels) == (-1, 64)
    assert (config.channel_mult, config.num_res_blocks, config.transformer_depth) == (
        tiny.channel_mult, tiny.num_res_blocks, tiny.transformer_depth,
    )  # fmt: skip
    sd15, _, fam15 = cl.controlnet_config(controlnet_state_dict("sd15", layout="bare"))
    assert fam15.name == "sd15" and sd15.adm_in_channels is None and sd15.num_heads == 8


def test_diffusers_names_round_trip() -> None:
    bare = controlnet_state_dict("sd15", layout="bare")
    diffusers = controlnet_state_dict("sd15", layout="diffusers")
    assert "controlnet_cond_embedding.blocks.5.weight" in diffusers and "controlnet_mid_block.bias" in diffusers
    assert "controlnet_down_blocks.3.weight" in diffusers and "down_blocks.1.resnets.0.conv1.weight" in diffusers
    names = cl.controlnet_diffusers_names(diffusers)
    assert sorted(names) == sorted(bare)
    assert names["input_hint_block.14.weight"] == "controlnet_cond_embedding.conv_out.weight"
    assert names["zero_convs.3.0.weight"] == "controlnet_down_blocks.3.weight"


def test_shuffle_controlnets_pool_globally(tmp_path: Path) -> None:
    control = load_controlnet(write_random_controlnet(tmp_path / "cn_shuffle_fp16.safetensors"))
    assert control.global_average_pooling
    assert not load_controlnet(write_random_controlnet(tmp_path / "cn.safetensors")).global_average_pooling


def test_manager_places_and_types_the_network(tmp_path: Path) -> None:
    manager = ModelManager(device_policy(device="cpu"))
    control = load_controlnet(write_random_controlnet(tmp_path / "cn.safetensors"), manager=manager)
    assert control.runner.record in manager.loaded_models() and control.runner.record.kind == "controlnet"
    half = load_controlnet(write_random_controlnet(tmp_path / "cn2.safetensors"), dtype=torch.bfloat16)
    assert half.runner.dtype == torch.bfloat16


# -- the residuals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_residuals_have_the_unet_block_shapes(family: str) -> None:
    config = tiny_controlnet_config(family)
    unet = _unet(config)
    x, cond = _inputs(config.context_dim, batch=2)
    t = torch.full((2,), 400.0)
    y = torch.randn(2, 2816) if config.adm_in_channels else None
    skips, middle = _skip_shapes(unet, x, t, cond["c_crossattn"], y)
    with torch.no_grad():
        out = random_controlnet(family)(x, _hint(2), t, cond["c_crossattn"], y=y)
    assert [tuple(r.shape) for r in out["output"]] == skips
    assert [tuple(r.shape) for r in out["middle"]] == [middle]


def test_get_control_runs_the_network_on_the_scaled_input() -> None:
    control = _control()
    ms = ModelSamplingDiscrete()
    control.pre_run(UNetOnly(_unet(tiny_controlnet_config())), ms.percent_to_sigma)
    x, cond = _inputs(64)
    sigma = torch.tensor([3.0])
    got = control.get_control(x, sigma, cond, 1)
    with torch.no_grad():
        want = control.control_model(ms.calculate_input(sigma, x), common_upscale(_hint(), 64, 64), ms.timestep(sigma).float(),
                                     cond["c_crossattn"])  # fmt: skip
    assert got["input"] == []
    assert all(torch.equal(a, b) for a, b in zip(got["output"], want["output"], strict=True))
    assert torch.equal(got["middle"][0], want["middle"][0])


def test_strength_scales_and_zero_strength_equals_no_control() -> None:
    unet = _unet(tiny_controlnet_config())
    model = UNetOnly(unet)
    x, cond = _inputs(64)
    sigma, t = torch.tensor([2.0]), torch.tensor([500.0])
    results = {}
    for strength in (0.0, 1.0, 2.5):
        control = _control(strength=strength)
        control.pre_run(model, model.model_sampling.percent_to_sigma)
        results[strength] = control.get_control(x, sigma, cond, 1)
    for a, b in zip(results[2.5]["output"], results[1.0]["output"], strict=True):
        torch.testing.assert_close(a, b * 2.5)
    with torch.no_grad():
        plain = unet(x, t, cond["c_crossattn"])
        zero = unet(x, t, cond["c_crossattn"], control=results[0.0])
        full = unet(x, t, cond["c_crossattn"], control=results[1.0])
    assert torch.equal(zero, plain)
    assert not torch.allclose(full, plain)


def test_control_is_only_active_inside_its_percent_window() -> None:
    model = UNetOnly(_unet(tiny_controlnet_config()))
    ms = model.model_sampling
    control = _control(window=(0.25, 0.6))
    control.pre_run(model, ms.percent_to_sigma)
    hi, lo = ms.percent_to_sigma(0.25), ms.percent_to_sigma(0.6)
    assert control.timestep_range == (hi, lo)
    x, cond = _inputs(64)
    for sigma, active in ((hi * 1.01, False), (hi, True), ((hi + lo) / 2, True), (lo, True), (lo * 0.99, False)):
        got = control.get_control(x, torch.tensor([sigma]), cond, 1)
        assert (got is not None) == active, sigma


def test_window_through_the_sampler_with_a_recording_hook() -> None:
    model = UNetOnly(_unet(tiny_controlnet_config()))
    control = _control(window=(0.0, 0.5))
    seen: list[float] = []
    control.control_model.register_forward_pre_hook(lambda m, args: seen.append(float(args[2][0])))  # timestep
    positive = [[torch.randn(1, 7, 64, generator=torch.Generator().manual_seed(1)), {"control": control}]]
    negative = [[torch.zeros(1, 7, 64), {"control": control}]]
    latent = {"samples": torch.zeros(1, 4, LATENT, LATENT)}
    with torch.no_grad():
        common_ksampler(model, 3, 6, 2.0, "euler", "normal", positive, negative, latent)
    ms = model.model_sampling
    sigmas = ksampler_sigmas(ms, "euler", "normal", 6)[:-1]  # euler: one evaluation per step
    cutoff = ms.percent_to_sigma(0.5)
    expected = [bool(s >= cutoff) for s in sigmas]
    assert [call["control"] is not None for call in model.calls] == expected
    assert any(expected) and not all(expected)
    assert seen == [float(ms.timestep(s)) for s, on in zip(sigmas, expected, strict=True) if on]
    assert all(call["batch"] == 2 for call in model.calls)  # cond and uncond share the control: one batch


def test_chained_controls_sum_their_residuals() -> None:
    model = UNetOnly(_unet(tiny_controlnet_config()))
    x, cond = _inputs(64)
    sigma = torch.tensor([4.0])
    first = _control(seed=0, strength=0.7)
    second = _control(seed=1, strength=1.3, hint=_hint(seed=9))
    alone = {}
    for name, control in (("first", first), ("second", second)):
        control.pre_run(model, model.model_sampling.percent_to_sigma)
        alone[name] = control.get_control(x, sigma, cond, 1)
    chained = second.copy().set_cond_hint(second.cond_hint_original, 1.3).set_previous_controlnet(first)
    chained.pre_run(model, model.model_sampling.percent_to_sigma)
    both = chained.get_control(x, sigma, cond, 1)
    for key in ("output", "middle"):
        for got, a, b in zip(both[key], alone["first"][key], alone["second"][key], strict=True):
            torch.testing.assert_close(got, a + b)
    # A previous control outside its window contributes nothing; the newest still applies.
    late = _control(seed=0, window=(0.9, 1.0))
    chained.set_previous_controlnet(late)
    chained.pre_run(model, model.model_sampling.percent_to_sigma)
    only_second = chained.get_control(x, sigma, cond, 1)
    assert all(torch.equal(a, b) for a, b in zip(only_second["output"], alone["second"]["output"], strict=True))


def test_long_chains_do_not_recurse() -> None:
    model = UNetOnly(_unet(tiny_controlnet_config()))
    base = _control(window=(0.99, 1.0))
    control = base
    for _ in range(3000):
        control = base.copy().set_cond_hint(base.cond_hint_original, 1.0, (0.99, 1.0)).set_previous_controlnet(control)
    control.pre_run(model, model.model_sampling.percent_to_sigma)
    x, cond = _inputs(64)
    assert control.get_control(x, torch.tensor([10.0]), cond, 1) is None


def test_context_of_another_family_is_refused() -> None:
    control = _control("sd15")
    control.pre_run(UNetOnly(_unet(tiny_controlnet_config())), ModelSamplingDiscrete().percent_to_sigma)
    x, cond = _inputs(128)
    with pytest.raises(EngineError, match="expects text conditioning of width 64"):
        control.get_control(x, torch.tensor([1.0]), cond, 1)


# -- hint handling --------------------------------------------------------------------------------------


def test_hint_is_centre_cropped_then_resized_nearest_exact() -> None:
    image = torch.arange(2 * 6 * 10, dtype=torch.float32).reshape(1, 2, 6, 10)
    out = common_upscale(image, 6, 6, "nearest-exact", "center")
    # 10 wide -> 6 wide crop: 2 columns off each side, then 6x6 -> 6x6 unchanged.
    assert torch.equal(out, image[:, :, :, 2:8])
    small = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert torch.equal(common_upscale(small, 4, 4), small.repeat_interleave(2, 2).repeat_interleave(2, 3))
    tall = torch.rand(1, 3, 100, 40)
    assert common_upscale(tall, 16, 16).shape == (1, 3, 16, 16)


def test_hint_batches_spread_over_cond_and_uncond() -> None:
    one = torch.rand(1, 3, 4, 4)
    assert broadcast_image_to(one, 6, 2) is one
    two = torch.stack([torch.zeros(3, 4, 4), torch.ones(3, 4, 4)])
    spread = broadcast_image_to(two, 4, 2)  # [cond a, cond b, uncond a, uncond b]
    assert torch.equal(spread, torch.cat([two, two]))
    three = broadcast_image_to(two, 6, 2)  # 3 per cond list from 2 images: a, b, a
    assert torch.equal(three[:3], torch.cat([two, two[:1]])) and torch.equal(three[3:], three[:3])


def test_hint_is_cached_per_latent_size() -> None:
    model = UNetOnly(_unet(tiny_controlnet_config()))
    control = _control(hint=torch.rand(1, 3, 100, 130))
    control.pre_run(model, model.model_sampling.percent_to_sigma)
    x, cond = _inputs(64)
    control.get_control(x, torch.tensor([1.0]), cond, 1)
    first = control.cond_hint
    assert first.shape == (1, 3, LATENT * 8, LATENT * 8)
    control.get_control(x, torch.tensor([0.5]), cond, 1)
    assert control.cond_hint is first
    bigger = torch.randn(1, 4, LATENT * 2, LATENT)
    control.get_control(bigger, torch.tensor([0.5]), cond, 1)
    assert control.cond_hint.shape == (1, 3, LATENT * 16, LATENT * 8)


# -- guidance integration ---------------------------------------------------------------------------


def test_apply_to_uncond_gives_the_negative_the_control() -> None:
    model = UNetOnly(_unet(tiny_controlnet_config()))
    control = _control()
    noise = torch.zeros(1, 4, LATENT, LATENT)
    for flag, shared in ((True, True), (False, False)):
        conds = {
            "positive": convert_cond([[torch.zeros(1, 7, 64), {"control": control, "control_apply_to_uncond": flag}]]),
            "negative": convert_cond([[torch.zeros(1, 7, 64), {}]]),
        }
        out = prepare_conds(model, conds, noise, torch.tensor(14.6))
        assert (out["negative"][0].get("control") is control) == shared
        assert control.timestep_range == (999999999.9, 0.0)  # pre_run happened
        model.calls.clear()
        calc_cond_batch(model, [out["positive"], out["negative"]], noise, torch.tensor([1.0]), {})
        assert [c["batch"] for c in model.calls] == ([2] if shared else [1, 1])


# -- T2I-Adapter ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("light", "xl", "diffusers"), [(False, False, False), (False, False, True), (True, False, False),
                                                         (False, True, False)])  # fmt: skip
def test_t2i_adapter_features_land_on_the_level_outputs(tmp_path: Path, light: bool, xl: bool, diffusers: bool) -> None:
    config = adapter_config(light=light, xl=xl)
    path = write_random_adapter(tmp_path / "adapter.safetensors", config, diffusers=diffusers)
    control = load_controlnet(path)
    assert isinstance(control, T2IAdapter) and control.t2i_model.config == config
    unet = _unet(adapter_unet_config(xl=xl))
    model = UNetOnly(unet)
    control.set_cond_hint(_hint(), 0.8)
    control.pre_run(model, model.model_sampling.percent_to_sigma)
    x, cond = _inputs(64)
    t = torch.tensor([500.0])
    got = control.get_control(x, torch.tensor([1.0]), cond, 1)
    skips, middle = _skip_shapes(unet, x, t, cond["c_crossattn"])
    # Entries are consumed from the end: entry -1 - n goes to input block n.
    placed = {n: tuple(r.shape) for n, r in enumerate(reversed(got["input"])) if r is not None and n < len(skips)}
    want_blocks = (3, 5, 8) if xl else (2, 5, 8, 11)
    assert sorted(placed) == list(want_blocks)
    assert all(placed[n] == skips[n] for n in want_blocks)
    assert (got["middle"] != []) == xl and (not xl or tuple(got["middle"][0].shape) == middle)
    with torch.no_grad():
        assert not torch.allclose(unet(x, t, cond["c_crossattn"], control=got), unet(x, t, cond["c_crossattn"]))


def test_t2i_features_are_computed_once_per_hint() -> None:
    config = adapter_config()
    control = load_controlnet_state_dict(adapter_state_dict(config))
    calls = []
    control.t2i_model.register_forward_hook(lambda m, i, o: calls.append(1))
    control.set_cond_hint(_hint(batch=2), 1.0)
    model = UNetOnly(_unet(adapter_unet_config()))
    control.pre_run(model, model.model_sampling.percent_to_sigma)
    x, cond = _inputs(64, batch=2)
    first = control.get_control(x, torch.tensor([2.0, 2.0]), cond, 1)
    second = control.get_control(x, torch.tensor([1.0, 1.0]), cond, 1)
    assert len(calls) == 1
    assert all(a is None or torch.equal(a, b) for a, b in zip(first["input"], second["input"], strict=True))
    # cond + uncond stacked: the two hints are spread over both halves and the features recomputed.
    stacked = control.get_control(torch.cat([x, x]), torch.ones(4), cond, 2)
    assert len(calls) == 2 and stacked["input"][-3].shape[0] == 4


def test_one_channel_adapters_average_the_hint() -> None:
    config = adapter_config(hint_channels=1)
    control = load_controlnet_state_dict(adapter_state_dict(config))
    assert control.channels_in == 1
    control.set_cond_hint(_hint(), 1.0)
    model = UNetOnly(_unet(adapter_unet_config()))
    control.pre_run(model, model.model_sampling.percent_to_sigma)
    control.get_control(*_inputs(64)[:1], torch.tensor([1.0]), {}, 1)
    assert torch.allclose(control.cond_hint, _hint().mean(1, keepdim=True))


# -- Control-LoRA and diff ControlNets (against a real tiny checkpoint) ----------------------------------


@pytest.fixture(scope="module")
def sd15():
    manager = ModelManager(device_policy(device="cpu"))
    return manager.load_checkpoint(cached_checkpoint("sd15", tiny=True))


def test_control_lora_is_the_unet_plus_low_rank_deltas(sd15) -> None:
    model = sd15[0]
    with model.loaded() as unet:
        unet_state = {k: v.clone() for k, v in unet.state_dict().items()}
    weights = control_lora_state_dict(unet_state, model.unet_config, rank=2)
    control = load_controlnet_state_dict(weights)
    assert isinstance(control, ControlLora) and control.control_model is None
    control.set_cond_hint(_hint(), 1.0)
    control.pre_run(model, model.model_sampling.percent_to_sigma)
    net = control.control_model.state_dict()
    key = "input_blocks.1.0.in_layers.2"
    delta = (weights[f"{key}.up"].flatten(1) @ weights[f"{key}.down"].flatten(1)).reshape(
        unet_state[f"{key}.weight"].shape
    )
    torch.testing.assert_close(net[f"{key}.weight"], unet_state[f"{key}.weight"] + delta)
    assert torch.equal(net["input_blocks.1.0.in_layers.0.weight"], unet_state["input_blocks.1.0.in_layers.0.weight"])
    assert torch.equal(net["input_blocks.0.0.bias"], weights["input_blocks.0.0.bias"])
    assert torch.equal(net["input_hint_block.14.weight"], weights["input_hint_block.14.weight"])
    x, cond = _inputs(model.unet_config.context_dim)
    assert control.get_control(x, torch.tensor([1.0]), cond, 1)["output"]
    control.cleanup()
    assert control.control_model is None
    with pytest.raises(EngineError, match="Loom MODEL"):
        load_controlnet_state_dict(weights).pre_run(UNetOnly(_unet(tiny_controlnet_config())), lambda p: 1.0)


def test_diff_controlnet_adds_the_base_unet(sd15, tmp_path: Path) -> None:
    model = sd15[0]
    with model.loaded() as unet:
        unet_state = dict(unet.state_dict())
    full = controlnet_state_dict(layout="bare", seed=4)
    diff = {cl.PTH_PREFIX + k: (v - unet_state[k] if k in unet_state else v) for k, v in full.items()}
    diff["difference"] = torch.tensor([])
    path = tmp_path / "diff.safetensors"
    from safetensors.torch import save_file

    save_file(diff, str(path))
    loaded = load_controlnet(path, model=model).control_model.state_dict()
    for key in ("input_blocks.1.0.in_layers.2.weight", "time_embed.0.weight", "zero_convs.0.0.weight"):
        torch.testing.assert_close(loaded[key], full[key])
    unadjusted = load_controlnet(path).control_model.state_dict()  # no model: loaded as stored
    assert torch.equal(unadjusted["time_embed.0.weight"], diff["control_model.time_embed.0.weight"])


def test_ksampler_with_a_controlnet_changes_the_result(sd15) -> None:
    model, clip, _vae = sd15
    positive = clip.encode_from_tokens_scheduled(clip.tokenize("a red cube"))
    negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    latent = {"samples": torch.zeros(1, 4, LATENT, LATENT)}
    control = load_controlnet_state_dict(controlnet_state_dict("sd15", layout="bare"))

    def run(strength: float, start: float = 0.0, end: float = 1.0) -> torch.Tensor:
        c_net = control.copy().set_cond_hint(_hint(), strength, (start, end))
        pos = [[c, {**o, "control": c_net}] for c, o in positive]
        neg = [[c, {**o, "control": c_net}] for c, o in negative]
        with torch.no_grad():
            return common_ksampler(model, 42, 3, 4.0, "euler", "normal", pos, neg, latent)["samples"]

    with torch.no_grad():
        plain = common_ksampler(model, 42, 3, 4.0, "euler", "normal", positive, negative, latent)["samples"]
    assert torch.equal(run(0.0), plain)
    controlled = run(1.0)
    assert torch.isfinite(controlled).all() and not torch.allclose(controlled, plain)
    assert not torch.allclose(run(1.0, 0.5, 1.0), controlled)  # a window changes only part of the run
    assert torch.equal(run(1.0), controlled)  # deterministic


def test_sdxl_controlnet_gets_the_vector_conditioning() -> None:
    config = tiny_controlnet_config("sdxl")
    model = UNetOnly(_unet(config))
    control = _control("sdxl")
    control.pre_run(model, model.model_sampling.percent_to_sigma)
    x, cond = _inputs(config.context_dim)
    with pytest.raises(ModelError, match="vector conditioning"):
        control.get_control(x, torch.tensor([1.0]), cond, 1)
    cond["y"] = torch.randn(1, 2816)
    out = control.get_control(x, torch.tensor([1.0]), cond, 1)
    assert len(out["output"]) == len(_unet(config).input_blocks)


def test_controlnet_model_rejects_an_invalid_config() -> None:
    bad = tiny_controlnet_config().__class__(num_heads=8, num_head_channels=64)
    with pytest.raises(ModelError, match="exactly one"):
        ControlNetModel(bad)
