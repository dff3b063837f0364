"""LoRA key mapping and reversible weight patching (spec §7.1; ComfyUI's comfy/lora.py behaviour).

Model keys are `(component, parameter name)` pairs (`ModelKey`):
- the UNet is component `UNET` ("unet"); its parameter names are the keys of the UNet module's
  state_dict as the caller passes them (LDM layout, `input_blocks.1.1.proj_in.weight`; a leading
  `model.diffusion_model.` / `diffusion_model.` is tolerated and kept as given);
- the text encoders together are component `CLIP` ("clip"): the module holding them all
  (clip.TextEncoders), whose keys read like ComfyUI's, `<encoder>.<path>` with encoder `clip_l`,
  `clip_h` or `clip_g` (`clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.weight`).

Flow: `model_lora_keys_unet()` + `model_lora_keys_clip()` give `{lora stem: ModelKey}`;
`load_lora(lora_sd, key_map)` gives `{ModelKey: [Adapter, ...]}` plus the file keys nothing used
(returned and logged, never dropped silently); `patches_for(patches, component, strength)` picks one
component's patches at the caller's strength (model and clip strengths differ); a `Patcher` applies
them to that component's module and `restore()` puts the original tensors back.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from diffusion.configs import UNetConfig
from diffusion.lora_formats import Adapter, read_target

log = logging.getLogger(__name__)

ModelKey = tuple[str, str]
WeightedPatches = Mapping[str, Sequence[tuple[Adapter, float]]]
"""{parameter name: [(adapter, strength), ...]} for one module, applied in order."""

UNET = "unet"
CLIP = "clip"
_UNET_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
_LOG_LIMIT = 40  # keys listed in one warning; the returned list always has all of them

# --- UNet: diffusers <-> LDM names -----------------------------------------------------------

_RESNET = (
    ("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("emb_layers.1", "time_emb_proj"),
    ("out_layers.0", "norm2"), ("out_layers.3", "conv2"), ("skip_connection", "conv_shortcut"),
)  # fmt: skip
_SPATIAL = ("norm", "proj_in", "proj_out")
_BLOCK = (
    "norm1", "norm2", "norm3", "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
    "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2",
)  # fmt: skip
_BASIC = (
    ("conv_in", "input_blocks.0.0"), ("conv_norm_out", "out.0"), ("conv_out", "out.2"),
    ("time_embedding.linear_1", "time_embed.0"), ("time_embedding.linear_2", "time_embed.2"),
    ("add_embedding.linear_1", "label_emb.0.0"), ("add_embedding.linear_2", "label_emb.0.2"),
    ("class_embedding.linear_1", "label_emb.0.0"), ("class_embedding.linear_2", "label_emb.0.2"),
)  # fmt: skip


def _add_resnet(out: dict[str, str], diffusers: str, ldm: str) -> None:
    for ldm_name, diffusers_name in _RESNET:
        out[f"{diffusers}.{diffusers_name}"] = f"{ldm}.{ldm_name}"


def _add_spatial(out: dict[str, str], diffusers: str, ldm: str, depth: int) -> None:
    for name in _SPATIAL:
        out[f"{diffusers}.{name}"] = f"{ldm}.{name}"
    for t in range(depth):
        for name in _BLOCK:
            out[f"{diffusers}.transformer_blocks.{t}.{name}"] = f"{ldm}.transformer_blocks.{t}.{name}"


def _map_down(out: dict[str, str], cfg: UNetConfig) -> None:
    block, depths = 1, iter(cfg.transformer_depth)  # input_blocks.0 is conv_in
    for level in range(cfg.levels):
        for i in range(cfg.num_res_blocks[level]):
            _add_resnet(out, f"down_blocks.{level}.resnets.{i}", f"input_blocks.{block}.0")
            depth = next(depths, 0)
            if depth > 0:
                _add_spatial(out, f"down_blocks.{level}.attentions.{i}", f"input_blocks.{block}.1", depth)
            block += 1
        if level < cfg.levels - 1:
            out[f"down_blocks.{level}.downsamplers.0.conv"] = f"input_blocks.{block}.0.op"
            block += 1


def _map_mid(out: dict[str, str], cfg: UNetConfig) -> None:
    _add_resnet(out, "mid_block.resnets.0", "middle_block.0")
    if cfg.transformer_depth_middle >= 0:  # < 0: the LDM middle block is a single resblock
        _add_spatial(out, "mid_block.attentions.0", "middle_block.1", cfg.transformer_depth_middle)
        _add_resnet(out, "mid_block.resnets.1", "middle_block.2")


def _map_up(out: dict[str, str], cfg: UNetConfig) -> None:
    # up_blocks.0 is the lowest resolution (LDM level levels-1); transformer_depth_output is in
    # output-block order (see UNetConfig).
    block = 0
    for level, res_blocks in enumerate(reversed(cfg.num_res_blocks)):
        count = res_blocks + 1
        for i in range(count):
            _add_resnet(out, f"up_blocks.{level}.resnets.{i}", f"output_blocks.{block}.0")
            depth = cfg.transformer_depth_output[block] if block < len(cfg.transformer_depth_output) else 0
            sub = 1
            if depth > 0:
                _add_spatial(out, f"up_blocks.{level}.attentions.{i}", f"output_blocks.{block}.1", depth)
                sub = 2
            if i == count - 1 and level < cfg.levels - 1:
                out[f"up_blocks.{level}.upsamplers.0.conv"] = f"output_blocks.{block}.{sub}.conv"
            block += 1


def unet_diffusers_map(config: UNetConfig) -> dict[str, str]:
    """{diffusers module path: LDM module path} for a UNet of `config` (no `.weight`/`.bias`;
    both parameter names follow the module path). E.g. `down_blocks.0.attentions.0.proj_in` ->
    `input_blocks.1.1.proj_in`, `up_blocks.0.upsamplers.0.conv` -> `output_blocks.2.1.conv` (SD1)."""
    out = {diffusers: ldm for diffusers, ldm in _BASIC}
    _map_down(out, config)
    _map_mid(out, config)
    _map_up(out, config)
    return out


def _strip_unet_prefix(key: str) -> str:
    for prefix in _UNET_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def model_lora_keys_unet(unet_keys: Iterable[str], config: UNetConfig) -> dict[str, ModelKey]:
    """{LoRA stem: (UNET, parameter)} for every UNet naming ComfyUI accepts, plus plain diffusers
    / PEFT module paths:
    `lora_unet_<ldm path, . -> _>`, `diffusion_model.<ldm path>` (and `diffusion_model.<key>` for
    non-weights), `lora_unet_<diffusers path, . -> _>`, `lycoris_<same>`, and with or without
    `unet.`: `<diffusers path with .processor.to_*, to_out.0 -> to_out>` and `<diffusers path>`."""
    out: dict[str, ModelKey] = {}
    weights: dict[str, str] = {}  # LDM module path -> the caller's parameter key
    for key in unet_keys:
        path = _strip_unet_prefix(key)
        if not path.endswith(".weight"):
            out[f"diffusion_model.{path}"] = (UNET, key)
            continue
        module = path[: -len(".weight")]
        weights[module] = key
        out[f"lora_unet_{module.replace('.', '_')}"] = (UNET, key)
        out[f"diffusion_model.{module}"] = (UNET, key)
    for diffusers, ldm in unet_diffusers_map(config).items():
        key = weights.get(ldm)
        if key is None:  # a layer this model does not have (e.g. label_emb on SD1)
            continue
        target = (UNET, key)
        flat = diffusers.replace(".", "_")
        out[f"lora_unet_{flat}"] = target
        out[f"lycoris_{flat}"] = target
        processor = diffusers.replace(".to_", ".processor.to_")
        if processor.endswith(".to_out.0"):
            processor = processor[: -len(".0")]
        for prefix in ("", "unet."):
            out[prefix + processor] = target
            out[prefix + diffusers] = target
    return out


# --- text encoders ---------------------------------------------------------------------------

_CLIP_LAYER = re.compile(
    r"(?:^|\.)text_model\.encoder\.layers\.(\d+)\.(mlp\.fc[12]|self_attn\.[qkv]_proj|self_attn\.out_proj)\.weight$"
)


def _clip_prefixes(name: str, names: set[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(kohya prefixes, diffusers prefixes) that address encoder `name`, decided like ComfyUI:
    by which encoders the model has (SD1 clip_l, SD2 clip_h, SDXL clip_l + clip_g, refiner clip_g)."""
    if name in ("clip_l", "clip_h"):
        return ("lora_te_", "lora_te1_"), ("text_encoder.",)
    if name == "clip_g" and "clip_l" in names:
        return ("lora_te2_",), ("text_encoder_2.",)
    if name == "clip_g":
        return ("lora_te_", "lora_prior_te_"), ("text_encoder.",)
    log.warning("lora: unknown text encoder %r; only text_encoders.%s.* LoRA names reach it", name, name)
    return (), ()


def model_lora_keys_clip(clip_keys: Iterable[str]) -> dict[str, ModelKey]:
    """{LoRA stem: (CLIP, parameter)} for the text encoders.

    `clip_keys`: the state_dict keys of the module holding every text encoder of the model, in
    ComfyUI's layout `<encoder>.<path>` (clip.TextEncoders: `clip_l.transformer.text_model.encoder.
    layers.0.mlp.fc1.weight`; encoders `clip_l` / `clip_h` / `clip_g`). Names: `lora_te_` /
    `lora_te1_` / `lora_te2_` + `text_model_encoder_layers_{i}_{mlp_fc1|mlp_fc2|self_attn_{q,k,v,
    out}_proj}`, `text_encoder(_2).text_model.encoder.layers.{i}.{...}`, `text_encoders.<key
    without .weight>` for every weight, and the text projections.
    """
    weights = [k for k in clip_keys if k.endswith(".weight")]
    names = {k.partition(".")[0] for k in weights}
    prefixes = {name: _clip_prefixes(name, names) for name in sorted(names)}
    out: dict[str, ModelKey] = {}
    for key in weights:
        target = (CLIP, key)
        name, _, rest = key.partition(".")
        out[f"text_encoders.{key[: -len('.weight')]}"] = target
        match = _CLIP_LAYER.search(rest)
        if match is not None:
            layer, sub = match.groups()
            kohya, diffusers = prefixes[name]
            for prefix in kohya:
                out[f"{prefix}text_model_encoder_layers_{layer}_{sub.replace('.', '_')}"] = target
            for prefix in diffusers:
                out[f"{prefix}text_model.encoder.layers.{layer}.{sub}"] = target
        elif rest in ("transformer.text_projection.weight", "text_projection.weight"):
            projection = {"clip_g": ("lora_prior_te_", "lora_te2_"), "clip_l": ("lora_te1_",)}
            for prefix in projection.get(name, ()):
                out[f"{prefix}text_projection"] = target
    return out


# --- loading -----------------------------------------------------------------------------------


def _candidate_stems(lora_sd: Mapping[str, Tensor]) -> set[str]:
    """Every string that could be a stem of some key: each prefix ending before a '.' plus the
    part before `_lora.` (diffusers processor names). Lets load_lora skip most of a large map."""
    stems: set[str] = set()
    for key in lora_sd:
        for i, ch in enumerate(key):
            if ch == ".":
                stems.add(key[:i])
        head, sep, _ = key.partition("_lora.")
        if sep:
            stems.add(head)
    return stems


def _bias_key(target: ModelKey) -> ModelKey | None:
    component, name = target
    if not name.endswith(".weight"):
        return None
    return component, name[: -len(".weight")] + ".bias"


def _warn_keys(what: str, reason: str, items: Sequence[str]) -> None:
    shown = ", ".join(items[:_LOG_LIMIT])
    more = f" ... and {len(items) - _LOG_LIMIT} more" if len(items) > _LOG_LIMIT else ""
    log.warning("lora: %d %s not loaded (%s): %s%s", len(items), what, reason, shown, more)


def _accept(
    adapters: list[Adapter], target: ModelKey | None, shapes: Mapping[ModelKey, Sequence[int]] | None
) -> tuple[list[Adapter], bool]:
    """The adapters that may go to `target`; False when some were refused."""
    if not adapters:
        return [], True
    if target is None or (shapes is not None and target not in shapes):
        return [], False
    if shapes is None:
        return adapters, True
    ok = [a for a in adapters if a.fits(shapes[target])]
    return ok, len(ok) == len(adapters)


def load_lora(
    lora_sd: Mapping[str, Tensor],
    key_map: Mapping[str, ModelKey],
    shapes: Mapping[ModelKey, Sequence[int]] | None = None,
) -> tuple[dict[ModelKey, list[Adapter]], list[str]]:
    """Read a LoRA state dict against a key map -> (patches {ModelKey: [Adapter, ...]}, unmatched).

    `unmatched` lists every file key that no adapter used, sorted; it is also logged as a warning.
    With `shapes` ({ModelKey: weight shape}), an adapter whose delta cannot fit its layer (a LoRA
    for another family that happens to share a name) is refused and its keys reported too, instead
    of failing later at patch time. Several adapters for one layer are all kept, in map order.
    """
    stems = _candidate_stems(lora_sd)
    patches: dict[ModelKey, list[Adapter]] = {}
    used: set[str] = set()
    refused: list[str] = []
    refused_keys: set[str] = set()
    for stem, target in key_map.items():
        if stem not in stems:
            continue
        found = read_target(lora_sd, stem)
        if not found.keys:
            continue
        weight_ok, all_weight = _accept(found.weight, target, shapes)
        bias_target = _bias_key(target)
        bias_ok, all_bias = _accept(found.bias, bias_target, shapes)
        if not (all_weight and all_bias):
            refused.append(f"{stem} -> {target[0]}:{target[1]}")
            refused_keys |= found.keys
            continue
        for key, adapters in ((target, weight_ok), (bias_target, bias_ok)):
            if adapters and key is not None:
                patches.setdefault(key, []).extend(adapters)
        used |= found.keys
    unmatched = sorted(k for k in lora_sd if k not in used)
    if refused:
        _warn_keys("layer(s)", "the model's weight has another shape, or none", refused)
    leftover = [k for k in unmatched if k not in refused_keys]
    if leftover:
        _warn_keys("key(s)", "no matching layer in this model", leftover)
    log.info("lora: %d layer(s) patched from %d key(s)", len(patches), len(used))
    return patches, unmatched


def patches_for(
    patches: Mapping[ModelKey, Sequence[Adapter]], component: str, strength: float
) -> dict[str, list[tuple[Adapter, float]]]:
    """One component's patches at `strength`, keyed by parameter name (ready for a Patcher).
    Merge several LoRAs by concatenating their lists per key (`stack_patches`)."""
    return {name: [(a, strength) for a in adapters] for (comp, name), adapters in patches.items() if comp == component}


def stack_patches(*layers: WeightedPatches) -> dict[str, list[tuple[Adapter, float]]]:
    """Concatenate several {parameter: [(adapter, strength)]} maps, first to last."""
    out: dict[str, list[tuple[Adapter, float]]] = {}
    for layer in layers:
        for name, entries in layer.items():
            out.setdefault(name, []).extend(entries)
    return out


def module_shapes(component: str, module: nn.Module) -> dict[ModelKey, tuple[int, ...]]:
    """{(component, parameter): shape} for load_lora's `shapes` argument."""
    return {(component, k): tuple(v.shape) for k, v in module.state_dict().items()}


# --- applying ----------------------------------------------------------------------------------


@torch.no_grad()
def apply_weighted(weight: Tensor, entries: Sequence[tuple[Adapter, float]], *, key: str = "") -> Tensor:
    """A new tensor: `weight` with each (adapter, strength) applied in order, computed in float32
    on the weight's device and cast back to its dtype once. `weight` itself is not modified."""
    work = weight.detach().to(dtype=torch.float32, copy=True)
    for adapter, strength in entries:
        work = adapter.apply(work, strength, key)
    return work.to(weight.dtype)


def apply_patches(weight: Tensor, adapters: Sequence[Adapter], strength: float, *, key: str = "") -> Tensor:
    """`weight` with every adapter applied at one strength (see apply_weighted)."""
    return apply_weighted(weight, [(a, strength) for a in adapters], key=key)


def _set_param(module: nn.Module, name: str, param: nn.Parameter) -> None:
    owner_path, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_path) if owner_path else module
    setattr(owner, leaf, param)


class Patcher:
    """Patches one module's parameters and can undo it exactly.

    Patching swaps in new Parameter objects and keeps the originals untouched (not copied, not
    written to), so `restore()` puts back the very same tensors, bit for bit, and the executor's
    mutation guard (tensor version counters) never sees a write. `apply()` always starts from the
    originals, so applying again with other strengths does not accumulate.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self._originals: dict[str, nn.Parameter] = {}

    @property
    def patched(self) -> tuple[str, ...]:
        return tuple(self._originals)

    @torch.no_grad()
    def apply(self, patches: WeightedPatches) -> list[str]:
        """Patch every named parameter; returns (and logs) the names this module lacks."""
        self.restore()
        params = dict(self.module.named_parameters())
        missing = sorted(name for name in patches if name not in params)
        if missing:
            _warn_keys("patch(es)", f"no such parameter in {type(self.module).__name__}", missing)
        for name, entries in patches.items():
            original = params.get(name)
            if original is None or not entries:
                continue
            new = apply_weighted(original, entries, key=name)
            self._originals[name] = original
            _set_param(self.module, name, nn.Parameter(new, requires_grad=original.requires_grad))
        return missing

    @torch.no_grad()
    def restore(self) -> None:
        """Put the original parameters back (a no-op when nothing is patched)."""
        for name, original in self._originals.items():
            current = self.module.get_parameter(name)
            if (current.device, current.dtype) != (original.device, original.dtype):
                # The model manager moved or cast the module while it was patched: keep its
                # placement, with the original values.
                original = nn.Parameter(original.to(current.device, current.dtype), original.requires_grad)
            _set_param(self.module, name, original)
        self._originals.clear()
