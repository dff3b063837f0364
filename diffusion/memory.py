"""ModelManager: the only code that places weights on devices, and the cache of loaded models.

- Device: `--cpu` -> CPU; else CUDA when available (`--cuda-device N` picks one), else MPS, else
  CPU. Dtypes: on the CPU everything runs in float32 (weights converted once at load); on a GPU
  the UNet and text encoders use float16 (bf16 with --bf16-unet / --bf16-text-enc), the VAE bf16
  where the GPU supports it, else float32; --force-fp32, --fp32-unet, --fp32-vae, --fp16-vae,
  --fp32-text-enc ... override; --cpu-vae keeps the VAE on the CPU in float32.
- Cache: a load is keyed by (real path, mtime, size, kind, options); a second load of an unchanged
  file returns new handles over the same weights (no disk read). The `max_cached` most recent
  entries are held; older ones are kept only while some handle still uses them (weak refs).
- Placement: weights load to the CPU; `use(record)` moves a model to the compute device before it
  runs. On CUDA, when free memory (torch.cuda.mem_get_info, minus --reserve-vram) is short, the
  least recently used idle models are moved back to the CPU first.
- VRAM modes (ComfyUI's flags): normal (the above), --highvram / --gpu-only (never offload),
  --lowvram (only the model being used stays on the GPU: every other one is offloaded before it
  moves there), --novram (lowvram, and the model also goes back to the CPU after each use). On the
  CPU or MPS the modes change nothing (there is no separate memory to manage).
- `free(unload_models=True)` drops every cached model (and offloads the ones still referenced);
  `free(free_memory=True)` only moves everything idle to the CPU and empties the CUDA cache.
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import EngineError, ModelError
from diffusion import loading
from diffusion.handles import ClipHandle, ModelHandle, VAEHandle

log = logging.getLogger(__name__)

VRAM_MODES = ("normal", "high", "low", "none")
CHANNELS_LAST_KINDS = frozenset({"unet", "vae"})


@dataclass(frozen=True)
class DevicePolicy:
    """Where models run and in which dtypes (built once from the Config)."""

    device: torch.device
    offload_device: torch.device
    unet_dtype: torch.dtype
    text_dtype: torch.dtype
    vae_dtype: torch.dtype
    vae_device: torch.device
    vram_mode: str = "normal"
    reserve_bytes: int = 0
    compile_mode: str | None = None
    """torch.compile mode for the diffusion model (--compile); None runs it eagerly."""
    compile_backend: str = "inductor"
    channels_last: bool = False
    """Keep convolution models in NHWC on the device: cuDNN's fast kernels want it, and NCHW makes
    it convert every activation before and after each convolution (a quarter of an SD1.5 step's
    GPU time on an H100/H200)."""

    @property
    def load_dtypes(self) -> loading.LoadDtypes:
        return loading.LoadDtypes(unet=self.unet_dtype, vae=self.vae_dtype, text=self.text_dtype)

    def describe(self) -> str:
        return (
            f"device {self.device} ({self.vram_mode} vram), unet {_name(self.unet_dtype)}, "
            f"text {_name(self.text_dtype)}, vae {_name(self.vae_dtype)} on {self.vae_device}"
        )


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _pick_device(cpu: bool, engine: Mapping[str, Any]) -> torch.device:
    if cpu:
        return torch.device("cpu")
    if torch.cuda.is_available():
        index = engine.get("cuda_device")
        return torch.device("cuda", int(index)) if index not in (None, "") else torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _flag_dtype(engine: Mapping[str, Any], prefix: str, default: torch.dtype) -> torch.dtype:
    """--fp32-<x> / --fp16-<x> / --bf16-<x> for one component (first one set wins)."""
    for flag, dtype in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
        if engine.get(f"{flag}_{prefix}"):
            return dtype
    return default


def device_policy(config: Any = None, *, device: torch.device | str | None = None) -> DevicePolicy:
    """The policy for a core.config.Config (None: defaults). `device` overrides the choice."""
    engine: Mapping[str, Any] = getattr(config, "engine", None) or {}
    chosen = torch.device(device) if device is not None else _pick_device(bool(getattr(config, "cpu", False)), engine)
    cpu = chosen.type == "cpu"
    half = torch.float32 if cpu else torch.float16
    if chosen.type == "cuda":
        vae_default = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    else:
        vae_default = torch.float32
    if engine.get("force_fp32") or cpu:
        half, vae_default = torch.float32, torch.float32
    unet = _flag_dtype(engine, "unet", half)
    text = _flag_dtype(engine, "text_enc", half)
    vae = _flag_dtype(engine, "vae", vae_default)
    vae_device = chosen
    if engine.get("cpu_vae"):
        vae_device, vae = torch.device("cpu"), torch.float32
    if cpu:  # half precision on the CPU is slow and less exact: ignore the dtype flags there
        unet = text = vae = torch.float32
    mode = "normal"
    if engine.get("gpu_only") or engine.get("highvram"):
        mode = "high"
    if engine.get("lowvram"):
        mode = "low"
    if engine.get("novram"):
        mode = "none"
    reserve = float(engine.get("reserve_vram") or 0.0)
    # CUDA graphs remove the per-kernel launch cost that dominates small steps on a fast GPU; they
    # need static shapes, which a sampler run has (one latent size, one batch).
    compile_mode = ("reduce-overhead" if chosen.type == "cuda" else "default") if engine.get("compile") else None
    return DevicePolicy(
        chosen, torch.device("cpu"), unet, text, vae, vae_device, mode, int(reserve * 1024**3), compile_mode
    )


def canonical_device(device: torch.device | str) -> torch.device:
    """`device` with its index: a parameter's device is always "cuda:0", never "cuda", and
    torch.device("cuda") != torch.device("cuda", 0) -- comparing the two made every sampling step
    move (a no-op `.to()` over every parameter) and un-patch/re-patch the model."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return device


def compiled_forward(module: nn.Module, mode: str, backend: str = "inductor") -> Callable[..., Any]:
    """torch.compile of `module` for fixed shapes. Under CUDA graphs ("reduce-overhead") a replay
    overwrites the previous output, so each call marks a new step and returns a copy."""
    compiled = torch.compile(module, mode=mode, backend=backend, dynamic=False)
    graphs = mode == "reduce-overhead"

    def run(*args: Any, **kwargs: Any) -> Any:
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        out = compiled(*args, **kwargs)
        return out.clone() if graphs else out

    return run


# -- managed models -------------------------------------------------------------------------------


class ManagedModel:
    """One module the manager owns: its devices, size, recency and which patches are applied.

    Handles never move it themselves; they ask the manager (`ModelManager.use`).
    """

    def __init__(
        self, name: str, kind: str, module: nn.Module, load_device: torch.device, offload_device: torch.device
    ) -> None:
        self.name = name
        self.kind = kind
        self.module = module
        self.load_device = canonical_device(load_device)
        self.offload_device = canonical_device(offload_device)
        self.size = sum(t.numel() * t.element_size() for t in module.state_dict().values())
        self.last_used = 0
        self.in_use = 0
        self.patch_key: object = None
        self._patcher: Any = None
        self.compiled: Callable[..., Any] | None = None
        """The module's compiled forward (--compile), built on first use on its load device."""
        self.lock = threading.Lock()
        """Serialises work that changes module state for a while (CLIP layer options)."""

    def __repr__(self) -> str:
        return f"ManagedModel({self.name!r}, {self.kind}, on {self.device}, {self.size / 2**20:.0f} MiB)"

    @property
    def device(self) -> torch.device:
        for t in self.module.parameters():
            return t.device
        return self.offload_device

    def move(self, device: torch.device, channels_last: bool = False) -> None:
        device = canonical_device(device)
        if self.device != device:
            self.compiled = None  # CUDA graphs hold the old weight addresses
            self.restore()  # patched copies would otherwise pin the originals on the old device
            self.module.to(device)
            if channels_last and device.type == "cuda":
                self.module.to(memory_format=torch.channels_last)

    def set_patches(self, key: object, patches: Mapping[str, Sequence[tuple[Any, float]]]) -> None:
        """Make `patches` ({param: [(adapter, strength)]}) the applied ones (reversibly)."""
        if key == self.patch_key:
            return
        self.restore()
        if patches:
            from diffusion import lora

            if self._patcher is None:
                self._patcher = lora.Patcher(self.module)
            self._patcher.apply(patches)
        self.patch_key = key

    def restore(self) -> None:
        if self._patcher is not None:
            self._patcher.restore()
        self.patch_key = None


class _Entry:
    """What one cached load produced: its records by role. Handles hold their entry, so an entry
    stays findable in the cache (weakly) as long as any handle made from it is alive."""

    def __init__(self, loaded: loading.Loaded | None, records: dict[str, ManagedModel], family: Any = None) -> None:
        self.loaded = loaded
        self.records = records
        self.family = family if family is not None else getattr(loaded, "family", None)


# -- the manager ----------------------------------------------------------------------------------


class ModelManager:
    """Loads, caches and places models; hands out MODEL / CLIP / VAE handles (see module doc)."""

    def __init__(
        self,
        policy: DevicePolicy | None = None,
        *,
        max_cached: int = 3,
        embedding_folders: Callable[[], Iterable[Path | str]] | Iterable[Path | str] | None = None,
    ) -> None:
        self.policy = policy or device_policy()
        self.max_cached = max_cached
        self._embedding_folders = embedding_folders
        self._lock = threading.RLock()
        self._clock = itertools.count(1)
        self._records: weakref.WeakSet[ManagedModel] = weakref.WeakSet()
        self._recent: OrderedDict[tuple, _Entry] = OrderedDict()
        self._weak: weakref.WeakValueDictionary[tuple, _Entry] = weakref.WeakValueDictionary()
        log.debug("model manager: %s", self.policy.describe())

    @classmethod
    def from_config(cls, config: Any, paths: Any = None) -> ModelManager:
        """Built once by the composition root; `paths` (core.paths.ModelPaths) gives embedding folders."""
        folders = (lambda: paths.folders("embeddings")) if paths is not None else None
        return cls(device_policy(config), embedding_folders=folders)

    @property
    def device(self) -> torch.device:
        return self.policy.device

    def embedding_folders(self) -> list[Path | str] | None:
        source = self._embedding_folders
        if source is None:
            return None
        return list(source() if callable(source) else source)

    # -- cache ------------------------------------------------------------------------------------

    @staticmethod
    def file_key(path: str | Path, kind: str, *options: object) -> tuple:
        """(real path, mtime, size, kind, options): an edited or replaced file loads afresh."""
        real = os.path.realpath(path)
        try:
            stat = os.stat(real)
        except OSError as exc:
            raise ModelError(f"model file not found: {path}") from exc
        return (real, stat.st_mtime_ns, stat.st_size, kind, *options)

    def _cached(self, key: tuple, load: Callable[[], _Entry]) -> _Entry:
        with self._lock:
            entry = self._recent.get(key) or self._weak.get(key)
            if entry is not None:
                log.debug("model cache hit: %s", key[0])
            else:
                entry = load()
                self._weak[key] = entry
            self._recent[key] = entry
            self._recent.move_to_end(key)
            while len(self._recent) > self.max_cached:
                self._recent.popitem(last=False)  # still reachable while a handle holds it
            return entry

    def _record(self, name: str, kind: str, module: nn.Module) -> ManagedModel:
        device = self.policy.vae_device if kind == "vae" else self.policy.device
        record = ManagedModel(name, kind, module, device, self.policy.offload_device)
        self._records.add(record)
        return record

    def _entry(self, loaded: loading.Loaded) -> _Entry:
        name = Path(loaded.source).name
        records = {}
        for role, module in (("unet", loaded.unet), ("vae", loaded.vae), ("text", loaded.text)):
            if module is not None:
                records[role] = self._record(f"{name}:{role}", role, module)
        return _Entry(loaded, records)

    # -- loading ----------------------------------------------------------------------------------

    def load_checkpoint(
        self, path: str | Path, *, want_vae: bool = True, want_clip: bool = True
    ) -> tuple[ModelHandle, ClipHandle | None, VAEHandle | None]:
        """CheckpointLoaderSimple: (MODEL, CLIP, VAE); CLIP / VAE None when not asked for."""
        key = self.file_key(path, "checkpoint", want_vae, want_clip)
        dtypes = self.policy.load_dtypes
        entry = self._cached(
            key,
            lambda: self._entry(loading.load_checkpoint(path, dtypes=dtypes, want_vae=want_vae, want_text=want_clip)),
        )
        return self._handles(entry)

    def load_diffusers(
        self, folder: str | Path, *, want_vae: bool = True, want_clip: bool = True
    ) -> tuple[ModelHandle, ClipHandle | None, VAEHandle | None]:
        unet = loading._diffusers_file(Path(folder), "unet")
        if unet is None:
            raise ModelError(f"{folder}: not a diffusers model folder (no unet/ weights)")
        key = (*self.file_key(unet, "diffusers", want_vae, want_clip), os.path.realpath(folder))
        dtypes = self.policy.load_dtypes
        entry = self._cached(
            key,
            lambda: self._entry(loading.load_diffusers(folder, dtypes=dtypes, want_vae=want_vae, want_text=want_clip)),
        )
        return self._handles(entry)

    def load_unet(self, path: str | Path) -> ModelHandle:
        """UNETLoader: a diffusion model file alone."""
        key = self.file_key(path, "unet")
        dtype = self.policy.unet_dtype
        entry = self._cached(key, lambda: self._entry(loading.load_unet_file(path, dtype=dtype)))
        return self._handles(entry)[0]

    def load_vae(self, path: str | Path) -> VAEHandle:
        """VAELoader."""
        key = self.file_key(path, "vae")
        dtype = self.policy.vae_dtype

        def load() -> _Entry:
            vae = loading.load_vae_file(path, dtype=dtype)
            return _Entry(None, {"vae": self._record(Path(path).name, "vae", vae)})

        entry = self._cached(key, load)
        return VAEHandle(self, entry.records["vae"], owner=entry)

    def load_text_encoders(self, paths: Sequence[str | Path], *, kinds: Sequence[str] | None = None) -> ClipHandle:
        """CLIPLoader (one file) / DualCLIPLoader (two): the family follows from the encoders."""
        key = tuple(self.file_key(p, "text") for p in paths) + (tuple(kinds or ()),)
        dtype = self.policy.text_dtype

        def load() -> _Entry:
            family, encoders = loading.load_text_encoder_files(paths, dtype=dtype, kinds=kinds)
            name = "+".join(Path(p).name for p in paths)
            return _Entry(None, {"text": self._record(name, "text", encoders)}, family)

        entry = self._cached(key, load)
        return ClipHandle(self, entry.records["text"], entry.family, self.embedding_folders(), owner=entry)

    def _handles(self, entry: _Entry) -> tuple[ModelHandle, ClipHandle | None, VAEHandle | None]:
        loaded = entry.loaded
        assert loaded is not None
        records = entry.records
        model = ModelHandle(self, records["unet"], loaded.family, loaded.prediction, zsnr=loaded.zsnr, owner=entry)
        clip = None
        if "text" in records:
            clip = ClipHandle(self, records["text"], loaded.family, self.embedding_folders(), owner=entry)
        vae = VAEHandle(self, records["vae"], owner=entry) if "vae" in records else None
        return model, clip, vae

    def adopt(self, name: str, kind: str, module: nn.Module) -> ManagedModel:
        """Manage a module built elsewhere (tests, custom nodes): it is placed like a loaded one."""
        with self._lock:
            return self._record(name, kind, module)

    # -- placement --------------------------------------------------------------------------------

    def free_bytes(self, device: torch.device | None = None) -> int:
        """Free memory on a CUDA device (minus the reserve); a large number elsewhere."""
        device = device or self.policy.device
        if device.type != "cuda":
            return 1 << 62
        free, _total = torch.cuda.mem_get_info(device)
        return max(0, free - self.policy.reserve_bytes)

    def _idle_on(self, device: torch.device, keep: ManagedModel) -> list[ManagedModel]:
        found = [r for r in self._records if r is not keep and r.in_use == 0 and r.device == device]
        return sorted(found, key=lambda r: r.last_used)

    def _make_room(self, record: ManagedModel, extra: int = 0) -> None:
        """Offload idle models (least recently used first) until `record` fits on its device."""
        device = record.load_device
        if device.type == "cpu":
            return
        mode = self.policy.vram_mode
        if mode in ("low", "none"):
            for other in self._idle_on(device, record):
                self._offload(other)
            return
        if mode == "high" or device.type != "cuda":
            return
        need = extra + (0 if record.device == device else record.size)
        if need == 0:
            return
        for other in self._idle_on(device, record):
            if self.free_bytes(device) >= need:
                break
            self._offload(other)
        if self.free_bytes(device) < need:
            torch.cuda.empty_cache()

    def _offload(self, record: ManagedModel) -> None:
        log.debug("offloading %s to %s", record.name, record.offload_device)
        record.move(record.offload_device)

    @contextmanager
    def use(
        self,
        record: ManagedModel,
        *,
        patch_key: object = None,
        patches: Mapping[str, Sequence[tuple[Any, float]]] | None = None,
        extra_memory: int = 0,
    ) -> Iterator[nn.Module]:
        """The record's module on its compute device with exactly `patches` applied, for a block
        of work. While inside, the manager will not offload it."""
        key = patch_key if patches else None
        with self._lock:
            if record.in_use and key != record.patch_key:
                # Swapping weights under a running user would change its results mid-run.
                raise EngineError(
                    f"{record.name} is in use with other patches (LoRA); run the two models one after the other"
                )
            self._make_room(record, extra_memory)
            record.move(record.load_device, self.policy.channels_last and record.kind in CHANNELS_LAST_KINDS)
            record.set_patches(key, patches or {})
            record.last_used = next(self._clock)
            record.in_use += 1
        try:
            yield record.module
        finally:
            with self._lock:
                record.in_use -= 1
                if self.policy.vram_mode == "none" and record.in_use == 0 and record.load_device.type != "cpu":
                    self._offload(record)

    def runner(self, record: ManagedModel, module: nn.Module) -> Callable[..., Any]:
        """What to call for the record's forward: the module itself, or with --compile its compiled
        form (built once per placement; the first call pays the compile)."""
        mode = self.policy.compile_mode
        if mode is None:
            return module
        if record.compiled is None:
            log.info("compiling %s (torch.compile mode=%s); the first step waits for it", record.name, mode)
            record.compiled = compiled_forward(module, mode, self.policy.compile_backend)
        return record.compiled

    def loaded_models(self) -> list[ManagedModel]:
        """Every live managed model (for /system_stats-like reports and tests)."""
        with self._lock:
            return sorted(self._records, key=lambda r: r.last_used)

    def free(self, unload_models: bool = True, free_memory: bool = False) -> None:
        """ComfyUI's /free: drop cached models (unload_models) and/or offload idle ones (free_memory)."""
        with self._lock:
            if unload_models:
                self._recent.clear()
                self._weak.clear()
            if unload_models or free_memory:
                for record in list(self._records):
                    if record.in_use == 0 and record.device != record.offload_device:
                        self._offload(record)
            if unload_models:
                # A model still held by some reference cycle (a node's state, a failed prompt's
                # traceback) would otherwise wait for the cyclic GC, keeping its RAM and VRAM.
                gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        log.info("freed models (unload_models=%s, free_memory=%s)", unload_models, free_memory)

    def cached_count(self) -> int:
        """How many loads are still cached (held recently or alive through a handle)."""
        with self._lock:
            return len(set(map(id, self._recent.values())) | {id(e) for e in self._weak.values()})
