"""--compile: the diffusion model runs through torch.compile, built once, with the eager results."""

from __future__ import annotations

import dataclasses

import torch

from core.config import Config
from diffusion.memory import ModelManager, device_policy
from tests.utils.checkpoints import cached_checkpoint


def test_compile_flag_reaches_the_device_policy() -> None:
    assert device_policy(Config.from_args(["--cpu"])).compile_mode is None
    assert device_policy(Config.from_args(["--cpu", "--compile"])).compile_mode == "default"


def test_compiled_model_matches_eager_and_compiles_once(monkeypatch) -> None:
    calls = []
    real_compile = torch.compile

    def counting_compile(module, **kwargs):
        calls.append(kwargs)
        return real_compile(module, **kwargs)

    monkeypatch.setattr(torch, "compile", counting_compile)
    # The "eager" backend traces with dynamo but generates no code: fast enough for a unit test.
    policy = dataclasses.replace(device_policy(device="cpu"), compile_mode="default", compile_backend="eager")
    model = ModelManager(policy).load_checkpoint(cached_checkpoint("sd15", tiny=True))[0]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    context = torch.randn(1, 77, model.unet_config.context_dim, generator=gen)
    t = torch.full((1,), 500.0)
    with torch.no_grad():
        first = model.apply_model(x, t, c_crossattn=context)
        second = model.apply_model(x, t, c_crossattn=context)
        with model.loaded() as unet:
            eager = unet(x, t, context)
    assert len(calls) == 1 and calls[0]["mode"] == "default" and calls[0]["dynamic"] is False
    torch.testing.assert_close(first, eager, rtol=1e-5, atol=1e-5)
    assert torch.equal(first, second)
