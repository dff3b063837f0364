"""The objects that flow on MODEL / CLIP / VAE links, with ComfyUI-compatible methods.

A handle is light: it points at a ManagedModel (weights owned by the ModelManager) and carries
its own settings -- LoRA patches, model_options, object patches, CLIP layer. `clone()` shares the
weights and copies the settings, so LoraLoader / CLIPSetLastLayer / ModelSamplingDiscrete change
a clone and never the handle upstream nodes (and the executor's cache) hold. Patches are applied
to the shared weights only while a handle runs, reversibly (diffusion/lora.py Patcher); the
manager re-patches when a handle with other patches uses the same weights.

MODEL (ModelHandle): `model_sampling`, `latent_format`, `apply_model(x, t, c_crossattn, y=None,
control=None, c_concat=None)` -> the raw UNet output (eps or v) for already-scaled input x and
timestep t, `extra_conds(cond, noise, first_sigma)` -> the UNet's extra inputs ("y" for SDXL:
pooled + sinusoidal size embeddings, spec §7.7; "c_concat" for 9-channel inpainting models).
CLIP (ClipHandle): tokenize / encode_from_tokens / encode_from_tokens_scheduled / clip_layer.
VAE (VAEHandle): decode -> IMAGE [B, H, W, 3] float32 0..1 on the CPU; encode(IMAGE) -> latent,
cropped to multiples of 8 like ComfyUI; tiled variants; automatic tiled fallback on OOM.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from core import runtime
from core.errors import EngineError
from diffusion import lora
from diffusion.families.base import Family
from diffusion.layers import timestep_embedding
from diffusion.lora_formats import Adapter, Diff
from diffusion.sampling.model_sampling import make_model_sampling
from diffusion.tokenizer import PromptTokenizer

if TYPE_CHECKING:
    from diffusion.memory import ManagedModel, ModelManager

log = logging.getLogger(__name__)

WeightedPatches = dict[str, list[tuple[Adapter, float]]]
SIZE_EMBED_DIM = 256
_UNET_PREFIXES = ("model.diffusion_model.", "diffusion_model.")


# -- patches --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ScaleWeight(Adapter):
    """ComfyUI's `strength_model`: scale the current weight before the patch that follows."""

    kind: ClassVar[str] = "scale"

    def fits(self, shape: Sequence[int]) -> bool:
        return True

    def apply(self, weight: Tensor, strength: float, key: str = "") -> Tensor:
        return weight * strength


def _as_adapters(value: Any) -> list[Adapter]:
    """A patch value: an Adapter, a list of them, or a bare tensor (a full difference)."""
    if isinstance(value, Adapter):
        return [value]
    if isinstance(value, Tensor):
        return [Diff(value)]
    if isinstance(value, (list, tuple)) and all(isinstance(v, Adapter) for v in value):
        return list(value)
    raise EngineError(f"unsupported patch value {type(value).__name__}; expected lora adapters or a tensor")


def _add_patches(
    own: WeightedPatches, params: Mapping[str, str], patches: Mapping[Any, Any], strength: float, strength_model: float
) -> list[Any]:
    """Append the patches whose key maps (through `params`) to one of this handle's parameters."""
    added = []
    for key, value in patches.items():
        name = params.get(key if isinstance(key, str) else f"{key[0]}\0{key[1]}")
        if name is None:
            continue
        entries = own.setdefault(name, [])
        if strength_model != 1.0:
            entries.append((ScaleWeight(), strength_model))
        entries.extend((adapter, strength) for adapter in _as_adapters(value))
        added.append(key)
    return added


def _patch_key(patches: WeightedPatches) -> tuple:
    """Identity of a patch set: equal sets (same adapters, same strengths) share applied weights."""
    return tuple((name, tuple((id(a), float(s)) for a, s in entries)) for name, entries in sorted(patches.items()))


def _copy_patches(patches: WeightedPatches) -> WeightedPatches:
    return {name: list(entries) for name, entries in patches.items()}


# -- MODEL ----------------------------------------------------------------------------------------


class _ModelView:
    """`model.model` of a ComfyUI ModelPatcher: what custom nodes read through it."""

    def __init__(self, handle: ModelHandle) -> None:
        self._handle = handle

    @property
    def model_sampling(self) -> Any:
        return self._handle.model_sampling

    @property
    def latent_format(self) -> Any:
        return self._handle.latent_format

    @property
    def diffusion_model(self) -> nn.Module:
        return self._handle.record.module

    @property
    def model_config(self) -> Any:
        return self._handle.family

    def get_dtype(self) -> torch.dtype:
        return self._handle.model_dtype()

    def process_latent_in(self, latent: Tensor) -> Tensor:
        return self._handle.latent_format.process_in(latent)

    def process_latent_out(self, latent: Tensor) -> Tensor:
        return self._handle.latent_format.process_out(latent)


class ModelHandle:
    """MODEL: a diffusion model (UNet) with its sampling parameterisation and patches."""

    def __init__(
        self,
        manager: ModelManager,
        record: ManagedModel,
        family: Family,
        prediction: str = "eps",
        *,
        zsnr: bool = False,
        owner: object = None,
    ) -> None:
        self.manager = manager
        self.record = record
        self.family = family
        self.prediction = prediction
        self._owner = owner  # keeps the manager's cache entry alive while this handle lives
        self.latent_format = family.latent_format
        self.model_options: dict[str, Any] = {"transformer_options": {}}
        self.patches: WeightedPatches = {}
        self.object_patches: dict[str, Any] = {"model_sampling": make_model_sampling(prediction, zsnr)}
        self._params: dict[str, str] | None = None

    def __repr__(self) -> str:
        return f"ModelHandle({self.family.name}, {self.prediction}, {len(self.patches)} patched weights)"

    # -- ComfyUI ModelPatcher surface ---------------------------------------------------------------

    @property
    def model(self) -> _ModelView:
        return _ModelView(self)

    @property
    def model_sampling(self) -> Any:
        return self.get_model_object("model_sampling")

    @property
    def unet_config(self) -> Any:
        return self.record.module.config

    @property
    def load_device(self) -> torch.device:
        return self.record.load_device

    @property
    def offload_device(self) -> torch.device:
        return self.record.offload_device

    def model_dtype(self) -> torch.dtype:
        return self.record.module.dtype

    def get_model_object(self, name: str) -> Any:
        """An object patch if set ("model_sampling" ...), else the family's / the UNet's attribute."""
        if name in self.object_patches:
            return self.object_patches[name]
        if name == "latent_format":
            return self.latent_format
        if name == "diffusion_model":
            return self.record.module
        target: Any = self.record.module
        for part in name.removeprefix("diffusion_model.").split("."):
            target = getattr(target, part)
        return target

    def add_object_patch(self, name: str, obj: Any) -> None:
        self.object_patches[name] = obj

    def clone(self) -> ModelHandle:
        """Same weights; own patches, object patches and model_options (deep-copied, as ComfyUI)."""
        other = copy.copy(self)
        other.patches = _copy_patches(self.patches)
        other.object_patches = dict(self.object_patches)
        other.model_options = copy.deepcopy(self.model_options)
        return other

    def is_clone(self, other: Any) -> bool:
        return isinstance(other, ModelHandle) and other.record is self.record

    def _param_names(self) -> dict[str, str]:
        """Every accepted patch key -> UNet parameter name (lora ModelKeys and ComfyUI strings)."""
        if self._params is None:
            params: dict[str, str] = {}
            for name in self.record.module.state_dict():
                params[f"{lora.UNET}\0{name}"] = name
                params[f"diffusion_model.{name}"] = name
                params[f"model.diffusion_model.{name}"] = name
            self._params = params
        return self._params

    def add_patches(self, patches: Mapping[Any, Any], strength_patch: float = 1.0, strength_model: float = 1.0) -> list:
        """Add LoRA-style patches ({(component, param) or "diffusion_model.<param>": adapters});
        returns the keys that belong to this UNet (others, e.g. text encoder keys, are skipped).
        Applied when the model next runs, on top of any patches added before."""
        return _add_patches(self.patches, self._param_names(), patches, strength_patch, strength_model)

    def get_key_patches(self) -> WeightedPatches:
        return _copy_patches(self.patches)

    def lora_key_map(self) -> dict[str, tuple[str, str]]:
        """LoRA file stems -> (unet, parameter) for diffusion.lora.load_lora."""
        return lora.model_lora_keys_unet(list(self.record.module.state_dict()), self.unet_config)

    def patch_shapes(self) -> dict[tuple[str, str], tuple[int, ...]]:
        return lora.module_shapes(lora.UNET, self.record.module)

    # -- running ------------------------------------------------------------------------------------

    @contextmanager
    def loaded(self) -> Iterator[nn.Module]:
        """The UNet on its device with this handle's patches, for a block of work (a sampler run)."""
        with self.manager.use(self.record, patch_key=_patch_key(self.patches), patches=self.patches) as unet:
            yield unet

    def apply_model(
        self,
        x: Tensor,
        t: Tensor,
        c_crossattn: Tensor | None = None,
        y: Tensor | None = None,
        control: Any = None,
        c_concat: Tensor | None = None,
        transformer_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """Raw network output for x (already scaled by the model sampling: x / sqrt(sigma^2+1)) at
        timestep t. x: (B, 4, h, w); t: (B,); c_crossattn: (B, T, context_dim); y: (B, adm).
        Returns float32 (B, 4, h, w) on x's device."""
        with self.loaded() as unet:
            device, dtype = self.record.load_device, unet.dtype
            xc = x if c_concat is None else torch.cat([x, c_concat.to(x)], dim=1)
            context = None if c_crossattn is None else c_crossattn.to(device, dtype)
            yy = None if y is None else y.to(device, dtype)
            forward = self.manager.runner(self.record, unet)
            out = forward(xc.to(device, dtype), t.to(device).float(), context, y=yy, control=control)
        return out.to(x.device).float()

    def process_latent_in(self, latent: Tensor) -> Tensor:
        return self.latent_format.process_in(latent)

    def process_latent_out(self, latent: Tensor) -> Tensor:
        return self.latent_format.process_out(latent)

    # -- extra model inputs -------------------------------------------------------------------------

    def extra_conds(
        self, cond: Mapping[str, Any], noise: Tensor, first_sigma: Tensor | None = None, **kwargs: Any
    ) -> dict:
        """The UNet's inputs beyond x, t and the text: SDXL's "y", an inpainting model's
        "c_concat". `cond` is one conditioning entry's dict (pooled_output, width, height,
        crop_w, crop_h, target_*, aesthetic_score, prompt_type, concat_latent_image, concat_mask);
        kwargs may carry prompt_type, denoise_mask, latent_image from the sampler."""
        out: dict[str, Tensor] = {}
        if self.family.adm is not None:
            out["y"] = self.encode_adm(cond, noise, prompt_type=kwargs.get("prompt_type"))
        if self.unet_config.in_channels == noise.shape[1] + 5:
            out["c_concat"] = self._inpaint_concat(cond, noise, kwargs.get("denoise_mask"), kwargs.get("latent_image"))
        return out

    def encode_adm(self, cond: Mapping[str, Any], noise: Tensor, prompt_type: str | None = None) -> Tensor:
        """SDXL (2816) / refiner (2560) vector conditioning for one cond entry (spec §7.7)."""
        pooled = cond.get("pooled_output")
        if pooled is None:
            raise EngineError(
                f"{self.family.description} needs the pooled text output (pooled_output) in its conditioning; "
                "this CONDITIONING has none (was it made by an SDXL text encoder?)"
            )
        width = cond.get("width", noise.shape[3] * 8)
        height = cond.get("height", noise.shape[2] * 8)
        crop_w, crop_h = cond.get("crop_w", 0), cond.get("crop_h", 0)
        if self.family.adm == "sdxl_refiner":
            kind = prompt_type or cond.get("prompt_type", "positive")
            score = cond.get("aesthetic_score", 2.5 if kind == "negative" else 6.0)
            values = [height, width, crop_h, crop_w, score]
        else:
            values = [height, width, crop_h, crop_w, cond.get("target_height", height), cond.get("target_width", width)]
        return size_conditioning(pooled, values)

    def _inpaint_concat(
        self, cond: Mapping[str, Any], noise: Tensor, denoise_mask: Tensor | None, latent: Tensor | None
    ) -> Tensor:
        """[mask (1 ch), masked image latent (4 ch)] for 9-channel inpainting UNets (ComfyUI)."""
        mask = cond.get("concat_mask", denoise_mask)
        image = cond.get("concat_latent_image")
        image = self.latent_format.process_in(image) if image is not None else latent
        batch, size = noise.shape[0], noise.shape[2:]
        if mask is None or image is None:
            ones = torch.ones_like(noise[:, :1])
            return torch.cat([ones, blank_inpaint_latent(noise)], dim=1)
        if mask.ndim == noise.ndim:  # a (B, C, h, w) denoise mask: one channel is enough
            mask = mask[:, :1]
        mask = mask.reshape(-1, 1, *mask.shape[-2:]).to(noise)
        if tuple(mask.shape[-2:]) != tuple(size):
            mask = F.interpolate(mask, size=size, mode="bilinear")
        image = image.to(noise)
        if tuple(image.shape[-2:]) != tuple(size):
            image = F.interpolate(image, size=size, mode="bilinear")
        return torch.cat([_to_batch(mask.round(), batch), _to_batch(image, batch)], dim=1)


def size_conditioning(pooled: Tensor, values: Sequence[float]) -> Tensor:
    """cat(pooled, 256-wide sinusoidal embedding of each value) per batch row (ComfyUI's Timestep)."""
    embeds = [timestep_embedding(torch.tensor([float(v)]), SIZE_EMBED_DIM) for v in values]
    flat = torch.cat(embeds).flatten().unsqueeze(0).repeat(pooled.shape[0], 1)
    return torch.cat([pooled.to(flat.device).float(), flat], dim=1)


# Pixel-space zero in SD latent space, per channel (ComfyUI's blank_inpaint_image_like).
_BLANK_LATENT = (0.8223, -0.6876, 0.6364, 0.1380)


def blank_inpaint_latent(like: Tensor) -> Tensor:
    values = torch.tensor(_BLANK_LATENT, dtype=like.dtype, device=like.device)
    return values.view(1, -1, 1, 1).expand(like.shape[0], -1, *like.shape[2:]).clone()


def _to_batch(t: Tensor, batch: int) -> Tensor:
    if t.shape[0] == batch:
        return t
    reps = -(-batch // t.shape[0])
    return t.repeat(reps, *([1] * (t.ndim - 1)))[:batch]


# -- CLIP -----------------------------------------------------------------------------------------


class ClipHandle:
    """CLIP: a family's text encoders plus tokenizer, layer choice and patches."""

    def __init__(
        self,
        manager: ModelManager,
        record: ManagedModel,
        family: Family,
        embedding_folders: Sequence[Path | str] | None = None,
        *,
        owner: object = None,
    ) -> None:
        self.manager = manager
        self.record = record
        self.family = family
        self._owner = owner
        self.configs = tuple(part.transformer.config for _, part in record.module.parts())
        self.tokenizer = PromptTokenizer.for_encoders(self.configs, embedding_folders)
        self.layer_idx: int | None = None
        self.patches: WeightedPatches = {}
        self._params: dict[str, str] | None = None

    def __repr__(self) -> str:
        names = "+".join(c.name for c in self.configs)
        return f"ClipHandle({self.family.name}: {names}, layer {self.layer_idx})"

    @property
    def cond_stage_model(self) -> nn.Module:
        return self.record.module

    def clone(self) -> ClipHandle:
        other = copy.copy(self)
        other.patches = _copy_patches(self.patches)
        return other

    def clip_layer(self, layer_idx: int | None) -> None:
        """CLIPSetLastLayer: -1 last layer, -2 penultimate ... (on a clone, as that node does)."""
        self.layer_idx = layer_idx

    def tokenize(self, text: str, return_word_ids: bool = False) -> dict[str, list[list[tuple]]]:
        return self.tokenizer.tokenize_with_weights(text, return_word_ids)

    def _options(self, return_pooled: bool | str) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.layer_idx is not None:
            options["layer"] = self.layer_idx
        if return_pooled == "unprojected":
            options["projected_pooled"] = False
        return options

    def encode_from_tokens(
        self, tokens: Mapping[str, Any], return_pooled: bool | str = False, return_dict: bool = False
    ) -> Any:
        """cond [1, T, D] (and pooled [1, P]) as ComfyUI's CLIP.encode_from_tokens; on the CPU."""
        options = self._options(return_pooled)
        with (
            self.manager.use(self.record, patch_key=_patch_key(self.patches), patches=self.patches) as encoders,
            self.record.lock,
        ):
            encoders.reset_clip_options()
            encoders.set_clip_options(options)
            try:
                cond, pooled = encoders.encode_token_weights(tokens)
            finally:
                encoders.reset_clip_options()
        cond, pooled = cond.cpu(), pooled.cpu()
        if return_dict:
            return {"cond": cond, "pooled_output": pooled}
        if return_pooled:
            return cond, pooled
        return cond

    def encode_from_tokens_scheduled(
        self, tokens: Mapping[str, Any], unprojected: bool = False, add_dict: Mapping[str, Any] | None = None, **_: Any
    ) -> list[list[Any]]:
        """CONDITIONING: [[cond, {"pooled_output": pooled, **add_dict}]]."""
        out = self.encode_from_tokens(tokens, return_pooled="unprojected" if unprojected else True, return_dict=True)
        cond = out.pop("cond")
        out.update(add_dict or {})
        return [[cond, out]]

    def encode(self, text: str) -> Tensor:
        return self.encode_from_tokens(self.tokenize(text))

    # -- patches and weights ------------------------------------------------------------------------

    def _param_names(self) -> dict[str, str]:
        """Accepted patch keys -> parameter paths of the encoders module (ComfyUI's layout,
        `clip_l.transformer.text_model...`): (lora.CLIP, path), the bare path, and
        (encoder name, hf parameter)."""
        if self._params is None:
            params: dict[str, str] = {}
            for key, part in self.record.module.parts():
                name = part.transformer.config.name
                for param in part.transformer.state_dict():
                    path = f"clip_{key}.transformer.{param}"
                    params[f"{lora.CLIP}\0{path}"] = path
                    params[f"{name}\0{param}"] = path
                    params[path] = path
            self._params = params
        return self._params

    def add_patches(self, patches: Mapping[Any, Any], strength_patch: float = 1.0, strength_model: float = 1.0) -> list:
        """Patches keyed by (lora.CLIP, "clip_l.transformer.<param>"), that path alone, or
        (encoder name, hf parameter); keys of other components are skipped. Returns the keys taken."""
        return _add_patches(self.patches, self._param_names(), patches, strength_patch, strength_model)

    def get_key_patches(self) -> WeightedPatches:
        return _copy_patches(self.patches)

    def lora_key_map(self) -> dict[str, tuple[str, str]]:
        """LoRA file stems -> (clip, parameter path) for diffusion.lora.load_lora."""
        return lora.model_lora_keys_clip(list(self.record.module.state_dict()))

    def patch_shapes(self) -> dict[tuple[str, str], tuple[int, ...]]:
        return lora.module_shapes(lora.CLIP, self.record.module)

    def get_sd(self) -> dict[str, Tensor]:
        return self.record.module.state_dict()

    def load_sd(self, sd: Mapping[str, Tensor], full_model: bool = False) -> tuple[list[str], list[str]]:
        """Load weights ({"clip_l.transformer.text_model...": tensor}) into the shared encoders;
        returns (missing, unexpected) like torch's non-strict load."""
        with self.record.lock:
            result = self.record.module.load_state_dict(dict(sd), strict=False)
        return list(result.missing_keys), list(result.unexpected_keys)


# -- VAE ------------------------------------------------------------------------------------------


def _oom_errors() -> tuple[type[BaseException], ...]:
    error = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    return (error,) if error is not None else ()


def _node_progress() -> Callable[[int, int], None] | None:
    """Tile progress reported to the running node (if any), which also checks for interrupts."""
    current = runtime.current()
    if current is None:
        return None
    return lambda done, total: current.progress(done, total)


class VAEHandle:
    """VAE: pixels <-> latents (unscaled; the MODEL's latent format scales them for sampling)."""

    def __init__(self, manager: ModelManager, record: ManagedModel, *, owner: object = None) -> None:
        self.manager = manager
        self.record = record
        self._owner = owner
        config = record.module.config
        self.downscale_ratio = config.downscale
        self.upscale_ratio = config.downscale
        self.latent_channels = config.embed_dim
        self.output_channels = config.out_channels

    def __repr__(self) -> str:
        return f"VAEHandle({self.record.name}, 1/{self.downscale_ratio})"

    @property
    def first_stage_model(self) -> nn.Module:
        return self.record.module

    @property
    def vae_dtype(self) -> torch.dtype:
        return self.record.module.dtype

    def get_sd(self) -> dict[str, Tensor]:
        return self.record.module.state_dict()

    def _batch_size(self, per_item: int, total: int) -> int:
        free = self.manager.free_bytes(self.record.load_device)
        return max(1, min(total, free // max(1, per_item)))

    # -- decode -------------------------------------------------------------------------------------

    def decode(self, samples: Tensor) -> Tensor:
        """samples (B, C, h, w) -> IMAGE (B, h*8, w*8, 3) float32 in 0..1 on the CPU."""
        size = torch.empty((), dtype=self.vae_dtype).element_size()
        per_item = 2178 * samples.shape[2] * samples.shape[3] * 64 * size  # ComfyUI's estimate
        try:
            with self.manager.use(self.record, extra_memory=per_item) as vae:
                device = self.record.load_device
                step = self._batch_size(per_item, samples.shape[0])
                parts = [
                    vae.decode(samples[i : i + step].to(device, vae.dtype)).float().cpu()
                    for i in range(0, samples.shape[0], step)
                ]
            pixels = torch.cat(parts)
        except _oom_errors():
            log.warning("out of memory while decoding with the VAE; retrying with tiled decoding")
            return self.decode_tiled(samples)
        return _to_image(pixels)

    def decode_tiled(self, samples: Tensor, tile_x: int = 64, tile_y: int = 64, overlap: int = 16) -> Tensor:
        """Tiled decode (tile and overlap in latent pixels); one square tile size min(tile_x, tile_y)."""
        tile = min(tile_x, tile_y)
        overlap = min(overlap, tile // 2)
        with self.manager.use(self.record) as vae:
            z = samples.to(self.record.load_device, vae.dtype)
            pixels = vae.decode_tiled(z, tile=tile, overlap=overlap, progress=_node_progress())
        return _to_image(pixels.float().cpu())

    # -- encode -------------------------------------------------------------------------------------

    def vae_encode_crop_pixels(self, pixels: Tensor) -> Tensor:
        """Centre-crop H and W down to multiples of the downscale factor (ComfyUI)."""
        f = self.downscale_ratio
        for dim in (1, 2):
            size = pixels.shape[dim]
            keep = (size // f) * f
            if keep != size:
                pixels = pixels.narrow(dim, (size % f) // 2, keep)
        return pixels

    def _pixels_in(self, pixels: Tensor) -> Tensor:
        if pixels.ndim != 4:
            raise EngineError(f"VAE encode expects an IMAGE of shape [B, H, W, C]; got {tuple(pixels.shape)}")
        pixels = self.vae_encode_crop_pixels(pixels[..., :3])
        if pixels.shape[1] == 0 or pixels.shape[2] == 0:
            raise EngineError(f"image too small for the VAE (needs at least {self.downscale_ratio} px per side)")
        return pixels.movedim(-1, 1).float() * 2.0 - 1.0

    def encode(self, pixels: Tensor) -> Tensor:
        """IMAGE (B, H, W, C) 0..1 -> latent (B, 4, H/8, W/8) float32 on the CPU (unscaled)."""
        x = self._pixels_in(pixels)
        size = torch.empty((), dtype=self.vae_dtype).element_size()
        per_item = 1767 * x.shape[2] * x.shape[3] * size  # ComfyUI's estimate
        try:
            with self.manager.use(self.record, extra_memory=per_item) as vae:
                device = self.record.load_device
                step = self._batch_size(per_item, x.shape[0])
                parts = [
                    vae.encode(x[i : i + step].to(device, vae.dtype)).float().cpu() for i in range(0, x.shape[0], step)
                ]
            return torch.cat(parts)
        except _oom_errors():
            log.warning("out of memory while encoding with the VAE; retrying with tiled encoding")
            return self._encode_tiled(x)

    def encode_tiled(self, pixels: Tensor, tile_x: int = 512, tile_y: int = 512, overlap: int = 64) -> Tensor:
        """Tiled encode (tile and overlap in pixels, rounded down to multiples of 8)."""
        return self._encode_tiled(self._pixels_in(pixels), min(tile_x, tile_y), overlap)

    def _encode_tiled(self, x: Tensor, tile: int = 512, overlap: int = 64) -> Tensor:
        f = self.downscale_ratio
        tile = max(f * 2, tile // f * f)
        overlap = min(overlap // f * f, tile // 2 // f * f)
        with self.manager.use(self.record) as vae:
            latent = vae.encode_tiled(
                x.to(self.record.load_device, vae.dtype), tile=tile, overlap=overlap, progress=_node_progress()
            )
        return latent.float().cpu()


def _to_image(pixels: Tensor) -> Tensor:
    """(B, 3, H, W) in about -1..1 -> (B, H, W, 3) in 0..1 (ComfyUI's process_output)."""
    return torch.clamp((pixels + 1.0) / 2.0, min=0.0, max=1.0).movedim(1, -1).contiguous()


__all__ = ["ClipHandle", "ModelHandle", "ScaleWeight", "VAEHandle", "blank_inpaint_latent", "size_conditioning"]
