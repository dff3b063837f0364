"""ModelManager: device/dtype policy, the model cache, LRU offloading, VRAM modes, free()."""

from __future__ import annotations

import gc
import os
import shutil
from pathlib import Path

import pytest
import torch

from core.config import Config
from core.errors import ModelError
from diffusion import loading, memory
from diffusion.memory import DevicePolicy, ModelManager, device_policy
from tests.utils.checkpoints import cached_checkpoint, write_safetensors

CPU = torch.device("cpu")


@pytest.fixture
def tiny_path(tmp_path: Path) -> Path:
    """A private copy, so tests may touch its mtime."""
    return Path(shutil.copy(cached_checkpoint("sd15", tiny=True), tmp_path / "tiny.safetensors"))


@pytest.fixture
def counted_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = loading.load_checkpoint

    def counting(path, **kw):
        calls.append(str(path))
        return real(path, **kw)

    monkeypatch.setattr(memory.loading, "load_checkpoint", counting)
    return calls


# -- policy ---------------------------------------------------------------------------------------


def test_cpu_policy_is_float32_everywhere_whatever_the_flags() -> None:
    policy = device_policy(Config(cpu=True, engine={"fp16_unet": True, "bf16_vae": True, "lowvram": True}))
    assert policy.device == CPU
    assert (policy.unet_dtype, policy.text_dtype, policy.vae_dtype) == (torch.float32,) * 3
    assert policy.vram_mode == "low"


def test_gpu_policy_dtypes_and_flags() -> None:
    # "mps" exercises the GPU rules without touching a real device.
    base = device_policy(Config(), device="mps")
    assert (base.unet_dtype, base.text_dtype, base.vae_dtype) == (torch.float16, torch.float16, torch.float32)
    flags = device_policy(Config(engine={"bf16_unet": True, "fp32_text_enc": True, "fp16_vae": True}), device="mps")
    assert (flags.unet_dtype, flags.text_dtype, flags.vae_dtype) == (torch.bfloat16, torch.float32, torch.float16)
    fp32 = device_policy(Config(engine={"force_fp32": True}), device="mps")
    assert (fp32.unet_dtype, fp32.text_dtype, fp32.vae_dtype) == (torch.float32,) * 3
    cpu_vae = device_policy(Config(engine={"cpu_vae": True}), device="mps")
    assert cpu_vae.vae_device == CPU and cpu_vae.vae_dtype == torch.float32
    assert device_policy(Config(engine={"novram": True, "reserve_vram": 1.5}), device="mps").reserve_bytes == int(
        1.5 * 2**30
    )
    assert device_policy(Config(engine={"highvram": True}), device="mps").vram_mode == "high"


def test_default_policy_without_a_gpu_is_the_cpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert ModelManager().device.type in ("cpu", "mps")


# -- cache ----------------------------------------------------------------------------------------


def test_second_load_of_the_same_file_reuses_the_weights(tiny_path: Path, counted_loads: list) -> None:
    manager = ModelManager(device_policy(device="cpu"))
    model1, clip1, vae1 = manager.load_checkpoint(tiny_path)
    model2, clip2, vae2 = manager.load_checkpoint(tiny_path)
    assert len(counted_loads) == 1
    assert model1 is not model2 and model1.record is model2.record
    assert clip1.record is clip2.record and vae1.record is vae2.record


def test_a_changed_file_is_loaded_again(tiny_path: Path, counted_loads: list) -> None:
    manager = ModelManager(device_policy(device="cpu"))
    model1, _, _ = manager.load_checkpoint(tiny_path)
    stat = tiny_path.stat()
    os.utime(tiny_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    model2, _, _ = manager.load_checkpoint(tiny_path)
    assert len(counted_loads) == 2 and model1.record is not model2.record


def test_free_drops_the_cache(tiny_path: Path, counted_loads: list) -> None:
    manager = ModelManager(device_policy(device="cpu"))
    manager.load_checkpoint(tiny_path)
    manager.free(unload_models=True)
    gc.collect()
    assert manager.cached_count() == 0
    manager.load_checkpoint(tiny_path)
    assert len(counted_loads) == 2


def test_old_entries_live_only_while_a_handle_holds_them(tmp_path: Path, counted_loads: list) -> None:
    a = Path(shutil.copy(cached_checkpoint("sd15", tiny=True), tmp_path / "a.safetensors"))
    b = Path(shutil.copy(cached_checkpoint("sd15", tiny=True), tmp_path / "b.safetensors"))
    manager = ModelManager(device_policy(device="cpu"), max_cached=1)
    held = manager.load_checkpoint(a)
    manager.load_checkpoint(b)  # pushes a out of the recent list
    again = manager.load_checkpoint(a)
    assert again[0].record is held[0].record and len(counted_loads) == 2
    gc.collect()
    manager.load_checkpoint(b)  # nobody held b's handles: it was dropped, so it loads again
    assert len(counted_loads) == 3
    del held, again
    gc.collect()
    manager.load_checkpoint(a)
    assert len(counted_loads) == 4


def test_options_are_part_of_the_cache_key(tiny_path: Path, counted_loads: list) -> None:
    manager = ModelManager(device_policy(device="cpu"))
    model, clip, vae = manager.load_checkpoint(tiny_path, want_vae=False, want_clip=False)
    assert clip is None and vae is None
    manager.load_checkpoint(tiny_path)
    assert len(counted_loads) == 2


def test_missing_file_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="not found"):
        ModelManager().load_checkpoint("/nonexistent/model.safetensors")


def test_component_loaders_cache_too(tmp_path: Path) -> None:
    manager = ModelManager(device_policy(device="cpu"))
    model, clip, vae = manager.load_checkpoint(cached_checkpoint("sd15", tiny=True))
    vae_file = write_safetensors(tmp_path / "vae.safetensors", vae.get_sd())
    unet_file = write_safetensors(tmp_path / "unet.safetensors", model.record.module.state_dict())
    clip_file = write_safetensors(tmp_path / "clip.safetensors", clip.record.module.part("l").transformer.state_dict())
    assert manager.load_vae(vae_file).record is manager.load_vae(vae_file).record
    assert manager.load_unet(unet_file).record is manager.load_unet(unet_file).record
    c1 = manager.load_text_encoders([clip_file], kinds=["clip_l"])
    assert c1.record is manager.load_text_encoders([clip_file], kinds=["clip_l"]).record
    assert c1.family.name == "sd15"


# -- placement (fake GPU: records that only pretend to move) ---------------------------------------


class FakeRecord:
    """Duck-types ManagedModel; `move` only changes where it says it is."""

    def __init__(self, name: str, size: int, device: str = "cpu") -> None:
        self.name, self.kind, self.size = name, "unet", size
        self.load_device, self.offload_device = torch.device("cuda", 0), CPU
        self._device = torch.device(device)
        self.last_used, self.in_use, self.moves = 0, 0, []
        self.module = torch.nn.Identity()
        self.patch_key = None

    @property
    def device(self) -> torch.device:
        return self._device

    def move(self, device: torch.device, channels_last: bool = False) -> None:
        if device != self._device:
            self.moves.append(str(device))
            self._device = device

    def set_patches(self, key, patches) -> None:
        self.patch_key = key


class FakeGPU:
    def __init__(self, manager: ModelManager, total: int, records: list[FakeRecord]) -> None:
        self.total, self.records = total, records
        manager.free_bytes = self.free  # type: ignore[method-assign]
        for r in records:
            manager._records.add(r)  # type: ignore[arg-type]

    def free(self, device=None) -> int:
        return self.total - sum(r.size for r in self.records if r.device.type == "cuda")


def _manager(mode: str = "normal") -> ModelManager:
    policy = DevicePolicy(
        torch.device("cuda", 0), CPU, torch.float16, torch.float16, torch.float32, torch.device("cuda", 0), mode
    )
    return ModelManager(policy)


def test_least_recently_used_idle_models_are_offloaded_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    manager = _manager()
    a, b, c, d = (FakeRecord(n, 40) for n in "abcd")
    gpu = FakeGPU(manager, 100, [a, b, c, d])
    for r in (a, b):
        with manager.use(r):
            pass
    assert a.device.type == b.device.type == "cuda"
    with manager.use(a):  # a is now the most recent
        pass
    with manager.use(c):  # needs 40 of 20 free: b (least recent) goes
        assert c.device.type == "cuda"
    assert b.device == CPU and a.device.type == "cuda"
    with manager.use(a), manager.use(d):  # a in use: c must go even though a is older
        assert a.device.type == "cuda" and d.device.type == "cuda" and c.device == CPU
    assert gpu.free() >= 0


def test_lowvram_keeps_one_model_and_novram_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    low = _manager("low")
    a, b = FakeRecord("a", 1), FakeRecord("b", 1)
    FakeGPU(low, 10**9, [a, b])
    with low.use(a):
        pass
    with low.use(b):
        assert a.device == CPU and b.device.type == "cuda"

    none = _manager("none")
    c = FakeRecord("c", 1)
    FakeGPU(none, 10**9, [c])
    with none.use(c):
        assert c.device.type == "cuda"
    assert c.device == CPU


def test_highvram_never_offloads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    high = _manager("high")
    a, b = FakeRecord("a", 80), FakeRecord("b", 80)
    FakeGPU(high, 100, [a, b])
    with high.use(a):
        pass
    with high.use(b):
        pass
    assert a.device.type == "cuda" and b.device.type == "cuda"


def test_free_memory_offloads_idle_models_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    manager = _manager()
    a, b = FakeRecord("a", 1), FakeRecord("b", 1)
    FakeGPU(manager, 100, [a, b])
    with manager.use(a):
        pass
    with manager.use(b):
        manager.free(unload_models=False, free_memory=True)
        assert a.device == CPU and b.device.type == "cuda"


def test_real_records_report_size_and_device() -> None:
    manager = ModelManager(device_policy(device="cpu"))
    record = manager.adopt("lin", "unet", torch.nn.Linear(4, 3))
    assert record.size == (12 + 3) * 4 and record.device == CPU
    with manager.use(record) as module:
        assert module is record.module and record.in_use == 1
    assert record.in_use == 0 and record in manager.loaded_models()


def test_devices_are_compared_with_their_index() -> None:
    # A parameter's device is "cuda:0", never "cuda"; an index-less policy device made every
    # sampling step move the model (a .to() over every parameter) and re-apply its patches.
    from diffusion.memory import ManagedModel, canonical_device

    assert canonical_device("cuda") == torch.device("cuda", 0)
    assert canonical_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
    assert canonical_device("cpu") == torch.device("cpu")
    record = ManagedModel("m", "unet", torch.nn.Linear(2, 2), torch.device("cuda"), torch.device("cpu"))
    assert record.load_device == torch.device("cuda", 0)
