"""Model files -> built modules: read weights, detect the family, build, load strictly.

Reading: `.safetensors` / `.sft` lazily through a memory map (`LazyStateDict`: header checked by
safetensors, shapes known without reading data, each tensor read when asked for -- converted
straight from the mapped pages to its load dtype, which are then dropped from the resident set, so
a load peaks near the converted weights alone, not weights + file); `.ckpt` / `.pt` / `.pth` / `.bin`
with `torch.load(weights_only=True)` only (a pickle that needs code to run is refused with a
ModelError, never executed), a top-level `state_dict` unwrapped. Diffusers folders (unet/, vae/,
text_encoder/, text_encoder_2/) are renamed to the LDM layout (diffusers_keys.py).

Building: the UNet and VAE are constructed on the meta device (no memory, no random init) and
receive the checkpoint tensors by `load_state_dict(assign=True)`, each converted ONCE to its
compute dtype; the file's tensor is dropped right after, so peak memory stays near one copy of
the weights. Loading is strict: missing, unexpected or misshapen keys raise a ModelError listing
a few of them. Everything is built on the CPU; the model manager decides where weights go.

Checkpoint prefixes (spec §7.4): `model.diffusion_model.` UNet, `first_stage_model.` VAE, text
encoders per family (`cond_stage_model.transformer.` CLIP-L, `cond_stage_model.model.` OpenCLIP-H,
`conditioner.embedders.N.(transformer|model).` SDXL).
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import pickle
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from core.errors import ModelError
from diffusion import diffusers_keys, families
from diffusion.clip import TextEncoders
from diffusion.configs import TextEncoderConfig, UNetConfig, VAEConfig
from diffusion.families.base import (
    UNET_PREFIX,
    VAE_PREFIX,
    Family,
    PrefixView,
    StateDict,
    read_as,
    shape_of,
    text_config_from_state_dict,
    uses_zsnr,
    vae_config_from_state_dict,
)
from diffusion.unet import UNetModel
from diffusion.vae import AutoencoderKL

log = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
MARKER_KEYS = frozenset({"v_pred", "ztsnr", "edm_mean", "edm_std", "edm_vpred.sigma_max", "edm_vpred.sigma_min"})
"""Empty tensors some tools add to say how to sample; never weights."""
_CONVERT_THREADS = max(1, min(4, os.cpu_count() or 1))


# -- reading files --------------------------------------------------------------------------------


class LazyStateDict(Mapping[str, Tensor]):
    """A safetensors file as a read-only mapping: keys and shapes from the header, data on access.

    The file is memory-mapped (copy-on-write, never written). Every `[key]` copies that tensor out
    of the mapping into its own memory; `read_as(key, dtype)` converts it straight from the mapped
    pages into a new tensor of `dtype` (one pass, no intermediate copy). Either way the mapped pages
    just read are then dropped from this process (madvise DONTNEED; they stay in the page cache),
    so reading a whole file never holds it in the resident size next to the converted weights.
    `close()` (or leaving a `with` block) releases the file.
    """

    def __init__(self, path: str | Path) -> None:
        from safetensors import safe_open

        self.path = Path(path)
        try:  # safetensors validates the header (offsets, dtypes, sizes) before we trust it
            with safe_open(str(self.path), framework="pt", device="cpu") as checked:
                self._keys = list(checked.keys())
                self.metadata: dict[str, str] = dict(checked.metadata() or {})
            self._entries, data_start = _safetensors_header(self.path)
        except Exception as exc:  # safetensors raises its own SafetensorError for bad headers
            raise ModelError(f"cannot read '{self.path.name}' as safetensors: {exc}") from exc
        self._keyset = frozenset(self._keys)
        self._data_start = data_start
        self._map: mmap.mmap | None = None
        size = self.path.stat().st_size
        if size > data_start:  # a file of empty tensors only has nothing to map
            with open(self.path, "rb") as file:
                self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)

    def __getitem__(self, key: str) -> Tensor:
        return self.read_as(key, None)

    def read_as(self, key: str, dtype: torch.dtype | None) -> Tensor:
        """sd[key] in its own memory, floating-point values converted to `dtype` (None: as stored)."""
        if key not in self._keyset:
            raise KeyError(key)
        file_dtype, shape, begin, end = self._entries[key]
        if dtype is None or not file_dtype.is_floating_point:
            dtype = file_dtype
        out = torch.empty(shape, dtype=dtype)
        if out.numel() == 0:
            return out
        if self._map is None:
            raise ModelError(f"'{self.path.name}' is closed")
        start = self._data_start + begin
        source = torch.frombuffer(self._map, dtype=file_dtype, count=out.numel(), offset=start)
        out.copy_(source.view(shape))
        del source
        self._release(start, self._data_start + end)
        return out

    def _release(self, start: int, end: int) -> None:
        """Drop the mapped pages of [start, end) from the resident set (they are clean file pages:
        a later read faults them back in from the page cache, so neighbours sharing an edge page
        lose nothing)."""
        page = mmap.PAGESIZE
        first = start // page * page
        if self._map is not None and hasattr(self._map, "madvise"):
            self._map.madvise(mmap.MADV_DONTNEED, first, end - first)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keyset

    def shape(self, key: str) -> tuple[int, ...]:
        if key not in self._keyset:
            raise KeyError(key)
        return self._entries[key][1]

    def close(self) -> None:
        mapped, self._map = self._map, None
        if mapped is not None:
            try:
                mapped.close()
            except BufferError:  # a tensor still views it (never ours); the GC unmaps it later
                log.debug("%s: mapping still in use at close", self.path.name)

    def __enter__(self) -> LazyStateDict:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    **{name: getattr(torch, attr) for name, attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"))
       if hasattr(torch, attr)},
}  # fmt: skip


def _safetensors_header(path: Path) -> tuple[dict[str, tuple[torch.dtype, tuple[int, ...], int, int]], int]:
    """{key: (dtype, shape, begin, end)} with offsets relative to the data, and where the data starts."""
    with open(path, "rb") as file:
        length = int.from_bytes(file.read(8), "little")
        header = json.loads(file.read(length))
    entries = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ModelError(f"tensor {key}: unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        entries[key] = (dtype, tuple(int(n) for n in info["shape"]), int(begin), int(end))
    return entries, 8 + length


class TensorDict(dict):
    """A plain dict of tensors (from a pickle checkpoint) with the LazyStateDict extras."""

    metadata: dict[str, str]

    def __init__(self, data: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(data)
        self.metadata = dict(metadata or {})

    def close(self) -> None:
        return None

    def __enter__(self) -> TensorDict:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def open_state_dict(path: str | Path) -> LazyStateDict | TensorDict:
    """Open a weights file (use as a context manager). ModelError if missing, unreadable or unsafe."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        return LazyStateDict(path)
    return TensorDict(_load_pickle(path))


def _load_pickle(path: Path) -> dict[str, Tensor]:
    """torch.load with weights_only=True (no code runs); mmap for the zip format."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        raise ModelError(
            f"refused to load '{path.name}': it is a pickle that would run code to load "
            f"(only plain tensors are accepted; convert it to .safetensors). Detail: {str(exc).splitlines()[0]}"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
        raise ModelError(f"cannot read '{path.name}' as a torch checkpoint: {exc}") from exc
    if isinstance(data, Mapping) and isinstance(data.get("state_dict"), Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping):
        raise ModelError(f"'{path.name}' holds a {type(data).__name__}, not a state dict of tensors")
    tensors = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, Tensor)}
    skipped = len(data) - len(tensors)
    if skipped:
        log.debug("%s: ignored %d non-tensor entries", path.name, skipped)
    return tensors


# -- building modules -----------------------------------------------------------------------------


def _listing(keys: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown} ... ({len(keys)} in all)" if len(keys) > limit else shown


def check_keys(expected: Mapping[str, Tensor], weights: StateDict, what: str) -> None:
    """Strict loading, explained: ModelError naming missing, unexpected and misshapen keys."""
    missing = sorted(k for k in expected if k not in weights)
    unexpected = sorted(k for k in weights if k not in expected)
    wrong = [
        f"{k} {list(shape_of(weights, k))} (model: {list(expected[k].shape)})"
        for k in sorted(expected)
        if k in weights and tuple(shape_of(weights, k)) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or wrong):
        return
    parts = [
        f"{label}: {_listing(keys)}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        if keys
    ]
    raise ModelError(f"{what}: the weights do not fit the model ({'; '.join(parts)})")


def build_module(make: Callable[[], nn.Module], weights: StateDict, dtype: torch.dtype, what: str) -> nn.Module:
    """Construct on the meta device, then assign the weights converted once to `dtype`."""
    with torch.device("meta"):
        module = make()
    expected = module.state_dict()
    check_keys(expected, weights, what)

    def convert(key: str) -> Tensor:
        # Read from the file (lazy) and converted at once, so only one copy stays alive.
        return read_as(weights, key, dtype)

    # Converting is bound by page faults on fresh memory; a few threads overlap them (torch
    # releases the GIL in copies), about halving the time on 2 cores.
    with ThreadPoolExecutor(max_workers=_CONVERT_THREADS) as pool:
        tensors = dict(zip(expected, pool.map(convert, expected), strict=True))
    module.load_state_dict(tensors, strict=True, assign=True)
    left = [name for name, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise ModelError(f"{what}: no weights for {_listing(left)} (not in the checkpoint)")
    return module.requires_grad_(False).eval()


def build_unet(config: UNetConfig, weights: StateDict, dtype: torch.dtype = torch.float32) -> UNetModel:
    weights = _without_markers(weights)
    return build_module(lambda: UNetModel(config), weights, dtype, "UNet")  # type: ignore[return-value]


def build_vae(config: VAEConfig, weights: StateDict, dtype: torch.dtype = torch.float32) -> AutoencoderKL:
    return build_module(lambda: AutoencoderKL(config), weights, dtype, "VAE")  # type: ignore[return-value]


def build_text_encoders(
    configs: Sequence[TextEncoderConfig], weights: Mapping[str, StateDict], dtype: torch.dtype = torch.float32
) -> TextEncoders:
    """The family's encoders in order; `weights` by encoder name, hf or open_clip layout."""
    return TextEncoders.from_configs(configs, weights, dtype=dtype)


def _without_markers(weights: StateDict) -> StateDict:
    if not any(k in MARKER_KEYS for k in weights):
        return weights
    return _FilteredView(weights, MARKER_KEYS)


class _FilteredView(Mapping[str, Any]):
    def __init__(self, sd: StateDict, drop: frozenset[str]) -> None:
        self._sd, self._keys = sd, [k for k in sd if k not in drop]
        self._keyset = frozenset(self._keys)

    def __getitem__(self, key: str) -> Any:
        if key not in self._keyset:
            raise KeyError(key)
        return self._sd[key]

    def __contains__(self, key: object) -> bool:
        return key in self._keyset

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def shape(self, key: str) -> tuple[int, ...]:
        return shape_of(self._sd, key)

    def read_as(self, key: str, dtype: torch.dtype) -> Tensor:
        if key not in self._keyset:
            raise KeyError(key)
        return read_as(self._sd, key, dtype)


# -- what a load produces -------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadDtypes:
    """The dtype each component is converted to at load (the model manager's choice)."""

    unet: torch.dtype = torch.float32
    vae: torch.dtype = torch.float32
    text: torch.dtype = torch.float32


@dataclass
class Loaded:
    """What one load produced: modules on the CPU in their load dtypes, and what they are."""

    source: str
    family: Family
    unet: UNetModel | None = None
    vae: AutoencoderKL | None = None
    text: TextEncoders | None = None
    text_configs: tuple[TextEncoderConfig, ...] = ()
    prediction: str = "eps"
    zsnr: bool = False
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def unet_config(self) -> UNetConfig | None:
        return None if self.unet is None else self.unet.config

    @property
    def vae_config(self) -> VAEConfig | None:
        return None if self.vae is None else self.vae.config


def check_text_fits_unet(family: Family, unet: UNetConfig, text: Sequence[TextEncoderConfig]) -> None:
    """The UNet attends to the concatenated text features and (SDXL) takes the pooled projection."""
    width = sum(c.hidden_size for c in text)
    if unet.context_dim != width:
        widths = " + ".join(f"{c.name} {c.hidden_size}" for c in text)
        raise ModelError(
            f"{family.name} checkpoint: the UNet expects text features of width {unet.context_dim}, "
            f"but its text encoders give {widths} = {width}"
        )
    if family.adm and unet.adm_in_channels is not None:
        pooled = text[-1].projection_dim or text[-1].hidden_size
        sizes = unet.adm_in_channels - pooled
        if sizes % 256 or sizes <= 0:
            raise ModelError(
                f"{family.name} checkpoint: adm_in_channels {unet.adm_in_channels} does not fit a pooled "
                f"text vector of {pooled} plus 256-wide size embeddings"
            )


# -- single-file checkpoints ----------------------------------------------------------------------


def text_weights(sd: StateDict, family: Family) -> dict[str, StateDict]:
    """{encoder name: its prefix-stripped weights} for every text encoder the checkpoint holds."""
    out: dict[str, StateDict] = {}
    for slot in family.text_encoders:
        for prefix in slot.prefixes:
            view = PrefixView(sd, prefix)
            if len(view):
                # Early SD1 files (older transformers) lack the `text_model.` level.
                if "embeddings.token_embedding.weight" in view:
                    view = PrefixView(sd, prefix, add="text_model.")
                out[slot.name] = view
                break
    return out


def _ignored_keys(sd: StateDict, family: Family) -> list[str]:
    used = (UNET_PREFIX, VAE_PREFIX, *(p for slot in family.text_encoders for p in slot.prefixes))
    return [k for k in sd if not k.startswith(used) and k not in MARKER_KEYS]


def load_checkpoint(
    path: str | Path,
    *,
    dtypes: LoadDtypes | None = None,
    want_vae: bool = True,
    want_text: bool = True,
) -> Loaded:
    """A single-file checkpoint (UNet + VAE + text encoders), as CheckpointLoaderSimple loads it."""
    dtypes = dtypes or LoadDtypes()
    started = time.perf_counter()
    with open_state_dict(path) as sd:
        loaded = load_checkpoint_state_dict(sd, str(path), dtypes=dtypes, want_vae=want_vae, want_text=want_text)
        loaded.metadata = dict(sd.metadata)
    log.info("loaded %s (%s) in %.1f s", Path(path).name, loaded.family.name, time.perf_counter() - started)
    return loaded


def load_checkpoint_state_dict(
    sd: StateDict, source: str, *, dtypes: LoadDtypes, want_vae: bool = True, want_text: bool = True
) -> Loaded:
    """The same from an open state dict with the single-file key layout."""
    family = families.detect(sd, prefix=UNET_PREFIX)
    unet_view = PrefixView(sd, UNET_PREFIX)
    unet_cfg = family.unet_config(sd, UNET_PREFIX)
    loaded = Loaded(source, family, prediction=family.prediction(sd, UNET_PREFIX), zsnr=uses_zsnr(sd, UNET_PREFIX))
    texts = text_weights(sd, family) if want_text else {}
    if want_text:
        missing = [slot.name for slot in family.text_encoders if slot.name not in texts]
        if missing:
            raise ModelError(
                f"{Path(source).name}: this {family.description} checkpoint has no weights for text "
                f"encoder(s) {', '.join(missing)} (looked under {_prefixes(family, missing)})"
            )
        configs = tuple(text_config_from_state_dict(texts[s.name], s.config) for s in family.text_encoders)
        check_text_fits_unet(family, unet_cfg, configs)
        loaded.text_configs = configs
    if want_vae and not len(PrefixView(sd, VAE_PREFIX)):
        raise ModelError(f"{Path(source).name}: no VAE weights (no keys under {VAE_PREFIX})")
    ignored = _ignored_keys(sd, family)
    if ignored:
        log.debug("%s: %d keys outside the model ignored, e.g. %s", Path(source).name, len(ignored), ignored[:3])
    loaded.unet = build_unet(unet_cfg, unet_view, dtypes.unet)
    if want_vae:
        vae_view = PrefixView(sd, VAE_PREFIX)
        loaded.vae = build_vae(vae_config_from_state_dict(vae_view), vae_view, dtypes.vae)
    if want_text:
        loaded.text = build_text_encoders(loaded.text_configs, texts, dtypes.text)
    return loaded


def _prefixes(family: Family, names: Sequence[str]) -> str:
    return ", ".join(p for slot in family.text_encoders if slot.name in names for p in slot.prefixes)


# -- single components (VAELoader, UNETLoader, CLIPLoader, DualCLIPLoader) ------------------------


def vae_weights(sd: StateDict) -> StateDict:
    """A standalone VAE's weights in LDM names: bare, under first_stage_model., or diffusers."""
    if len(PrefixView(sd, VAE_PREFIX)):
        sd = PrefixView(sd, VAE_PREFIX)
    if diffusers_keys.is_diffusers_vae(sd):
        return diffusers_keys.vae_diffusers_to_ldm(sd)
    # Training leftovers of some .ckpt VAEs (the discriminator under loss.*) are not weights.
    drop = [k for k in sd if k.startswith("loss.") or k.startswith("model_ema.")]
    return _FilteredView(sd, frozenset(drop)) if drop else sd


def load_vae_file(path: str | Path, *, dtype: torch.dtype = torch.float32) -> AutoencoderKL:
    with open_state_dict(path) as sd:
        weights = vae_weights(sd)
        return build_vae(vae_config_from_state_dict(weights), weights, dtype)


def unet_weights(sd: StateDict) -> StateDict:
    """A standalone UNet's weights in LDM names: bare, under model.diffusion_model., or diffusers."""
    prefix = families.unet_prefix(sd)
    if prefix:
        return PrefixView(sd, prefix)
    if diffusers_keys.is_diffusers_unet(sd):
        return diffusers_keys.unet_diffusers_to_ldm(sd)
    return sd


def load_unet_file(path: str | Path, *, dtype: torch.dtype = torch.float32) -> Loaded:
    """A diffusion model alone (UNETLoader): family detected from the UNet, no VAE or text."""
    with open_state_dict(path) as sd:
        weights = unet_weights(sd)
        family = families.detect(weights, prefix="")
        loaded = Loaded(str(path), family, prediction=family.prediction(sd, ""), zsnr=uses_zsnr(sd, ""))
        loaded.unet = build_unet(family.unet_config(weights, ""), weights, dtype)
        loaded.metadata = dict(sd.metadata)
    return loaded


TEXT_ROOT_SUFFIXES = ("text_model.embeddings.token_embedding.weight", "token_embedding.weight")


def text_encoder_weights(sd: StateDict) -> StateDict:
    """A standalone text encoder's weights with any wrapping prefix removed (hf or open_clip).

    Accepts `text_model.*`, `<anything>.text_model.*` (ComfyUI's `clip_l.transformer.`...),
    `cond_stage_model.model.*` style open_clip exports and bare open_clip keys."""
    for suffix in TEXT_ROOT_SUFFIXES:
        roots = sorted(k[: -len(suffix)] for k in sd if k.endswith(suffix))
        if roots:
            return PrefixView(sd, roots[0]) if roots[0] else sd
    raise ModelError(f"no CLIP text encoder weights found (first keys: {_listing(sorted(sd)[:4])})")


def classify_text_encoder(sd: StateDict) -> str:
    """'clip_l', 'clip_h' or 'clip_g' by depth, as ComfyUI's detect_te_model (32 / 24 / 12 layers)."""
    config = text_config_from_state_dict(sd, families.get("sd15").text_encoders[0].config)
    if config.num_layers >= 31:
        return "clip_g"
    if config.num_layers >= 23:
        return "clip_h"
    return "clip_l"


# CLIPLoader / DualCLIPLoader: which family's encoders a set of files makes.
CLIP_SETS = {
    ("clip_l",): "sd15",
    ("clip_h",): "sd2",
    ("clip_g",): "sdxl_refiner",
    ("clip_g", "clip_l"): "sdxl",
}


def load_text_encoder_files(
    paths: Sequence[str | Path], *, dtype: torch.dtype = torch.float32, kinds: Sequence[str] | None = None
) -> tuple[Family, TextEncoders]:
    """Text encoders from separate files. `kinds` names each file's encoder ("clip_l"...); by
    default it is read from the depth of the weights (tests pass it for narrow models)."""
    files = [open_state_dict(p) for p in paths]
    try:
        weights = [text_encoder_weights(sd) for sd in files]
        names = list(kinds) if kinds is not None else [classify_text_encoder(w) for w in weights]
        family_name = CLIP_SETS.get(tuple(sorted(names)))
        if family_name is None:
            raise ModelError(f"no supported model uses the text encoders {', '.join(names)} together")
        family = families.get(family_name)
        by_name = dict(zip(names, weights, strict=True))
        configs = tuple(text_config_from_state_dict(by_name[s.name], s.config) for s in family.text_encoders)
        return family, build_text_encoders(configs, by_name, dtype)
    finally:
        for sd in files:
            sd.close()


# -- diffusers folders ----------------------------------------------------------------------------

DIFFUSERS_WEIGHTS = (
    "diffusion_pytorch_model.safetensors",
    "model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
    "model.fp16.safetensors",
    "diffusion_pytorch_model.bin",
    "pytorch_model.bin",
)


def _diffusers_file(folder: Path, part: str) -> Path | None:
    for name in DIFFUSERS_WEIGHTS:
        candidate = folder / part / name
        if candidate.is_file():
            return candidate
    return None


def is_diffusers_folder(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "unet").is_dir() and (path / "model_index.json").is_file()


def load_diffusers(
    folder: str | Path, *, dtypes: LoadDtypes | None = None, want_vae: bool = True, want_text: bool = True
) -> Loaded:
    """A diffusers pipeline folder (DiffusersLoader): unet/, vae/, text_encoder/, text_encoder_2/."""
    folder, dtypes = Path(folder), dtypes or LoadDtypes()
    unet_file = _diffusers_file(folder, "unet")
    if unet_file is None:
        raise ModelError(f"{folder}: not a diffusers model folder (no unet/ weights)")
    with open_state_dict(unet_file) as sd:
        weights = diffusers_keys.unet_diffusers_to_ldm(sd)
        family = families.detect(weights, prefix="")
        loaded = Loaded(str(folder), family, prediction=_diffusers_prediction(folder, family, weights))
        loaded.unet = build_unet(family.unet_config(weights, ""), weights, dtypes.unet)
    if want_vae:
        vae_file = _diffusers_file(folder, "vae")
        if vae_file is None:
            raise ModelError(f"{folder}: no vae/ weights")
        loaded.vae = load_vae_file(vae_file, dtype=dtypes.vae)
    if want_text:
        loaded.text_configs, loaded.text = _diffusers_text(folder, family, dtypes.text)
        check_text_fits_unet(family, loaded.unet.config, loaded.text_configs)
    return loaded


def _diffusers_text(
    folder: Path, family: Family, dtype: torch.dtype
) -> tuple[tuple[TextEncoderConfig, ...], TextEncoders]:
    # diffusers puts the last encoder in text_encoder_2 when there are two, and a refiner's only
    # (CLIP-G) encoder there too.
    parts = ["text_encoder", "text_encoder_2"] if len(family.text_encoders) == 2 else ["text_encoder"]
    if family.name == "sdxl_refiner":
        parts = ["text_encoder_2"]
    files = []
    for part in parts:
        path = _diffusers_file(folder, part)
        if path is None:
            raise ModelError(f"{folder}: no {part}/ weights for {family.description}")
        files.append(open_state_dict(path))
    try:
        weights = {
            slot.name: diffusers_keys.text_diffusers_to_hf(sd)
            for slot, sd in zip(family.text_encoders, files, strict=True)
        }
        configs = tuple(text_config_from_state_dict(weights[s.name], s.config) for s in family.text_encoders)
        return configs, build_text_encoders(configs, weights, dtype)
    finally:
        for sd in files:
            sd.close()


def _diffusers_prediction(folder: Path, family: Family, unet_weights: StateDict) -> str:
    """scheduler/scheduler_config.json's prediction_type when present, else the family's rule."""
    import json

    config = folder / "scheduler" / "scheduler_config.json"
    if config.is_file():
        try:
            kind = json.loads(config.read_text()).get("prediction_type")
        except (OSError, ValueError):
            kind = None
        if kind in ("epsilon", "v_prediction"):
            return "eps" if kind == "epsilon" else "v_prediction"
    return family.prediction(unet_weights, "")
