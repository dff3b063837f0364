"""LoRA / LyCORIS weight adapters: read one target's tensors from a LoRA file and compute the change
to that target's weight, with ComfyUI's arithmetic (comfy/weight_adapter/*, spec §7.1).

A *target* is the name stem a LoRA file uses for one layer (`lora_unet_..._proj_in`,
`unet.down_blocks.0....to_q`); its tensors are `<stem><suffix>`. `read_target()` turns the tensors of
one stem into adapters. Every adapter works on a float32 working copy of the weight: the caller
(lora.apply_weighted) makes that copy and casts the result back once, as ComfyUI does, so stacked
LoRAs round only once.

Formats: LoRA / LoCon (every up/down naming in `LORA_NAMES`, optional `lora_mid` Tucker core for
convolutions), LoHa (`hada_*`, optional Tucker `hada_t1/t2`), LoKr (`lokr_*`), full diffs (`diff`,
`diff_b`, `w_norm`, `b_norm`), `set_weight`, and DoRA (`dora_scale`) on top of LoRA / LoHa / LoKr.
Scale = alpha / rank (rank = rows of the down matrix), 1.0 without alpha.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

log = logging.getLogger(__name__)

LORA_NAMES: tuple[tuple[str, str, str | None], ...] = (
    # (up suffix, down suffix, mid suffix), in ComfyUI's order of preference: the first found wins.
    (".lora_up.weight", ".lora_down.weight", ".lora_mid.weight"),  # kohya / LyCORIS LoCon
    ("_lora.up.weight", "_lora.down.weight", None),  # diffusers attention processors
    (".lora_B.weight", ".lora_A.weight", None),  # PEFT
    (".lora.up.weight", ".lora.down.weight", None),  # diffusers LoRACompatible layers
    (".lora_B", ".lora_A", None),  # Mochi trainer
    (".lora_linear_layer.up.weight", ".lora_linear_layer.down.weight", None),  # transformers
    (".lora_B.default.weight", ".lora_A.default.weight", None),  # PEFT with the adapter name kept
)


def _f32(t: Tensor, device: torch.device) -> Tensor:
    return t.to(device=device, dtype=torch.float32)


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


class Adapter:
    """One change to one weight. `apply` updates a float32 working copy and returns it."""

    kind: ClassVar[str] = ""

    def fits(self, shape: Sequence[int]) -> bool:
        """Whether this adapter can be applied to a weight of `shape` (ComfyUI reshapes the delta,
        so for the low-rank kinds only the element count must agree)."""
        raise NotImplementedError

    def apply(self, weight: Tensor, strength: float, key: str = "") -> Tensor:
        raise NotImplementedError

    def _mismatch(self, weight: Tensor, key: str) -> Tensor:
        # ComfyUI logs and leaves the weight alone; so do we, but the log says which layer and why.
        log.error(
            "lora: %s patch for %r does not fit weight of shape %s; weight left unchanged",
            self.kind,
            key,
            tuple(weight.shape),
        )
        return weight


@dataclass(frozen=True, eq=False)
class _LowRank(Adapter):
    """Shared part of LoRA, LoHa and LoKr: alpha / rank scaling and optional DoRA."""

    alpha: float | None = field(default=None, kw_only=True)
    dora_scale: Tensor | None = field(default=None, kw_only=True)

    def _delta(self, device: torch.device) -> tuple[Tensor, float]:
        """(unscaled weight change, alpha scale), float32 on `device`, not yet reshaped."""
        raise NotImplementedError

    def _delta_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def fits(self, shape: Sequence[int]) -> bool:
        if _numel(self._delta_shape()) != _numel(shape):
            return False
        return self.dora_scale is None or (len(shape) > 1 and self.dora_scale.numel() == shape[1])

    def apply(self, weight: Tensor, strength: float, key: str = "") -> Tensor:
        if not self.fits(weight.shape):
            return self._mismatch(weight, key)
        delta, scale = self._delta(weight.device)
        delta = delta.reshape(weight.shape)
        if self.dora_scale is not None:
            return _dora(weight, delta, scale, strength, _f32(self.dora_scale, weight.device))
        # One scalar product, then one tensor product: the same rounding as ComfyUI.
        weight += (strength * scale) * delta
        return weight


def _dora(weight: Tensor, delta: Tensor, scale: float, strength: float, dora_scale: Tensor) -> Tensor:
    """Weight-decomposed LoRA (Liu et al. 2024): direction W + dW, magnitude dora_scale.

    The norm is taken per input channel (over every dim but 1), as ComfyUI's weight_decompose does;
    strength interpolates between the old weight and the decomposed one.
    """
    combined = weight + delta * scale
    in_ch = combined.shape[1]
    norm = combined.transpose(0, 1).reshape(in_ch, -1).norm(dim=1, keepdim=True)
    norm = norm.reshape(in_ch, *[1] * (combined.dim() - 1)).transpose(0, 1)
    combined = combined * (dora_scale.reshape(norm.shape) / norm)
    if strength != 1.0:
        weight += strength * (combined - weight)
        return weight
    weight.copy_(combined)
    return weight


@dataclass(frozen=True, eq=False)
class LoRA(_LowRank):
    """W += s * alpha/rank * up @ down. `mid` (LoCon Tucker core, kxk conv between a 1x1 down and a
    1x1 up) is folded into the down kernel first."""

    kind: ClassVar[str] = "lora"
    up: Tensor
    down: Tensor
    mid: Tensor | None = None

    def _delta_shape(self) -> tuple[int, ...]:
        rows = self.up.shape[0]
        if self.mid is not None:
            cols = self.down.shape[1] * _numel(self.mid.shape[2:])
        else:
            cols = _numel(self.down.shape[1:])
        return (rows, cols)

    def fits(self, shape: Sequence[int]) -> bool:
        if self.mid is not None and (self.mid.dim() != 4 or self.mid.shape[1] != self.down.shape[0]):
            return False
        rank = self.mid.shape[0] if self.mid is not None else self.down.shape[0]
        return _numel(self.up.shape[1:]) == rank and super().fits(shape)

    def _delta(self, device: torch.device) -> tuple[Tensor, float]:
        up = _f32(self.up, device).flatten(start_dim=1)
        down = _f32(self.down, device)
        scale = self.alpha / self.down.shape[0] if self.alpha is not None else 1.0
        if self.mid is not None:
            # x -> down (1x1) -> mid (kxk) -> up (1x1) is one kxk conv whose down kernel is
            # sum_m mid[r, m] * down[m, i]; as one (in, rank) @ (rank, rank*k*k) product, the
            # summation order ComfyUI uses, so the result rounds the same.
            mid = _f32(self.mid, device)
            folded = down.flatten(start_dim=1).transpose(0, 1) @ mid.transpose(0, 1).flatten(start_dim=1)
            down = folded.reshape(down.shape[1], mid.shape[0], *mid.shape[2:]).transpose(0, 1)
        return up @ down.flatten(start_dim=1), scale


def _tucker(core: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Rebuild a conv kernel from a Tucker core (LyCORIS 'cp' mode): core (i, j, k, l), a (i, out),
    b (j, in) -> (out, in, k, l)."""
    return torch.einsum("ijkl,jr,ip->prkl", core, b, a)


def _tucker_shape(core: Tensor, a: Tensor, b: Tensor) -> tuple[int, ...]:
    return (a.shape[1], b.shape[1], *core.shape[2:])


@dataclass(frozen=True, eq=False)
class LoHa(_LowRank):
    """Hadamard product of two low-rank matrices (FedPara): dW = (w1a @ w1b) * (w2a @ w2b)."""

    kind: ClassVar[str] = "loha"
    w1a: Tensor
    w1b: Tensor
    w2a: Tensor
    w2b: Tensor
    t1: Tensor | None = None
    t2: Tensor | None = None

    def _factor_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if self.t1 is not None and self.t2 is not None:
            return _tucker_shape(self.t1, self.w1a, self.w1b), _tucker_shape(self.t2, self.w2a, self.w2b)
        return (self.w1a.shape[0], self.w1b.shape[1]), (self.w2a.shape[0], self.w2b.shape[1])

    def _delta_shape(self) -> tuple[int, ...]:
        return self._factor_shapes()[0]

    def fits(self, shape: Sequence[int]) -> bool:
        first, second = self._factor_shapes()
        return first == second and super().fits(shape)

    def _delta(self, device: torch.device) -> tuple[Tensor, float]:
        w1a, w1b, w2a, w2b = (_f32(t, device) for t in (self.w1a, self.w1b, self.w2a, self.w2b))
        if self.t1 is not None and self.t2 is not None:
            m1 = _tucker(_f32(self.t1, device), w1a, w1b)
            m2 = _tucker(_f32(self.t2, device), w2a, w2b)
        else:
            m1, m2 = w1a @ w1b, w2a @ w2b
        scale = self.alpha / self.w1b.shape[0] if self.alpha is not None else 1.0
        return m1 * m2, scale


@dataclass(frozen=True, eq=False)
class LoKr(_LowRank):
    """Kronecker product dW = w1 (x) w2; either factor may be stored whole or as a low-rank pair
    (w2 optionally with a Tucker core t2). alpha / rank only applies when a factor is low-rank."""

    kind: ClassVar[str] = "lokr"
    w1: Tensor | None = None
    w1a: Tensor | None = None
    w1b: Tensor | None = None
    w2: Tensor | None = None
    w2a: Tensor | None = None
    w2b: Tensor | None = None
    t2: Tensor | None = None

    def _factor_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        s1 = tuple(self.w1.shape) if self.w1 is not None else (self.w1a.shape[0], self.w1b.shape[1])
        if self.w2 is not None:
            s2 = tuple(self.w2.shape)
        elif self.t2 is not None:
            s2 = _tucker_shape(self.t2, self.w2a, self.w2b)
        else:
            s2 = (self.w2a.shape[0], self.w2b.shape[1])
        if len(s2) == 4:
            s1 = (*s1, 1, 1)
        return s1, s2

    def _delta_shape(self) -> tuple[int, ...]:
        s1, s2 = self._factor_shapes()
        return (_numel(s1) * _numel(s2),)

    def _rank(self) -> int | None:
        # As ComfyUI: the rank of the low-rank w2 if there is one, else of w1, else none.
        if self.w2 is None:
            return self.w2b.shape[0]
        if self.w1 is None:
            return self.w1b.shape[0]
        return None

    def _delta(self, device: torch.device) -> tuple[Tensor, float]:
        w1 = _f32(self.w1, device) if self.w1 is not None else _f32(self.w1a, device) @ _f32(self.w1b, device)
        if self.w2 is not None:
            w2 = _f32(self.w2, device)
        elif self.t2 is not None:
            w2 = _tucker(_f32(self.t2, device), _f32(self.w2a, device), _f32(self.w2b, device))
        else:
            w2 = _f32(self.w2a, device) @ _f32(self.w2b, device)
        if w2.dim() == 4:
            w1 = w1[:, :, None, None]
        # kron needs contiguous factors (a Tucker-rebuilt w2 is a permuted view).
        w1, w2 = w1.contiguous(), w2.contiguous()
        rank = self._rank()
        scale = self.alpha / rank if self.alpha is not None and rank is not None else 1.0
        return torch.kron(w1, w2), scale


@dataclass(frozen=True, eq=False)
class Diff(Adapter):
    """A full difference: W += s * diff (same shape as W; `diff`, `diff_b`, `w_norm`, `b_norm`)."""

    kind: ClassVar[str] = "diff"
    diff: Tensor

    def fits(self, shape: Sequence[int]) -> bool:
        return tuple(self.diff.shape) == tuple(shape)

    def apply(self, weight: Tensor, strength: float, key: str = "") -> Tensor:
        if not self.fits(weight.shape):
            return self._mismatch(weight, key)
        if strength != 0.0:
            weight += strength * _f32(self.diff, weight.device)
        return weight


@dataclass(frozen=True, eq=False)
class SetWeight(Adapter):
    """Replace the weight outright (`set_weight`); strength does not apply, as in ComfyUI."""

    kind: ClassVar[str] = "set"
    value: Tensor

    def fits(self, shape: Sequence[int]) -> bool:
        return tuple(self.value.shape) == tuple(shape)

    def apply(self, weight: Tensor, strength: float, key: str = "") -> Tensor:
        if not self.fits(weight.shape):
            return self._mismatch(weight, key)
        weight.copy_(self.value)
        return weight


@dataclass
class TargetAdapters:
    """What one stem of a LoRA file holds: changes to the weight, changes to the bias, and the
    file keys they were read from (everything else under the stem stays unmatched)."""

    weight: list[Adapter] = field(default_factory=list)
    bias: list[Adapter] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)


def _read_lora(sd: Mapping[str, Tensor], x: str, common: dict, used: set[str]) -> LoRA | None:
    for up_sfx, down_sfx, mid_sfx in LORA_NAMES:
        up_name, down_name = x + up_sfx, x + down_sfx
        if up_name not in sd:
            continue
        if down_name not in sd:
            log.warning("lora: %r has no matching %r; layer not loaded", up_name, down_name)
            return None
        mid = None
        if mid_sfx is not None and x + mid_sfx in sd:
            mid = sd[x + mid_sfx]
            used.add(x + mid_sfx)
        used.update((up_name, down_name))
        return LoRA(up=sd[up_name], down=sd[down_name], mid=mid, **common)
    return None


def _read_loha(sd: Mapping[str, Tensor], x: str, common: dict, used: set[str]) -> LoHa | None:
    names = [f"{x}.hada_{n}" for n in ("w1_a", "w1_b", "w2_a", "w2_b")]
    if names[0] not in sd:
        return None
    if not all(n in sd for n in names):
        log.warning("lora: LoHa %r is missing one of %s; layer not loaded", x, names)
        return None
    t1, t2 = sd.get(f"{x}.hada_t1"), sd.get(f"{x}.hada_t2")
    if t1 is not None and t2 is not None:
        names += [f"{x}.hada_t1", f"{x}.hada_t2"]
    else:
        t1 = t2 = None
    used.update(names)
    return LoHa(w1a=sd[names[0]], w1b=sd[names[1]], w2a=sd[names[2]], w2b=sd[names[3]], t1=t1, t2=t2, **common)


def _read_lokr(sd: Mapping[str, Tensor], x: str, common: dict, used: set[str]) -> LoKr | None:
    parts = {n: sd.get(f"{x}.lokr_{n}") for n in ("w1", "w1_a", "w1_b", "w2", "w2_a", "w2_b", "t2")}
    if parts["w1"] is None and parts["w1_a"] is None and parts["w2"] is None and parts["w2_a"] is None:
        return None
    w1_ok = parts["w1"] is not None or (parts["w1_a"] is not None and parts["w1_b"] is not None)
    w2_ok = parts["w2"] is not None or (parts["w2_a"] is not None and parts["w2_b"] is not None)
    if not (w1_ok and w2_ok):
        log.warning("lora: LoKr %r lacks a complete w1 or w2 factor; layer not loaded", x)
        return None
    used.update(f"{x}.lokr_{n}" for n, t in parts.items() if t is not None)
    return LoKr(
        w1=parts["w1"], w1a=parts["w1_a"], w1b=parts["w1_b"],
        w2=parts["w2"], w2a=parts["w2_a"], w2b=parts["w2_b"], t2=parts["t2"], **common,
    )  # fmt: skip


def read_target(sd: Mapping[str, Tensor], x: str) -> TargetAdapters:
    """Every adapter the LoRA state dict `sd` holds under stem `x`."""
    found = TargetAdapters()
    alpha_t, dora = sd.get(f"{x}.alpha"), sd.get(f"{x}.dora_scale")
    common = {"alpha": float(alpha_t.item()) if alpha_t is not None else None, "dora_scale": dora}
    for reader in (_read_lora, _read_loha, _read_lokr):
        adapter = reader(sd, x, common, found.keys)
        if adapter is not None:
            found.weight.append(adapter)
    if found.weight:  # alpha / dora_scale count as loaded only when something used them
        found.keys.update(n for n, t in ((f"{x}.alpha", alpha_t), (f"{x}.dora_scale", dora)) if t is not None)
    for suffix, into_bias, make in (
        (".w_norm", False, Diff), (".b_norm", True, Diff), (".diff", False, Diff),
        (".diff_b", True, Diff), (".set_weight", False, SetWeight),
    ):  # fmt: skip
        tensor = sd.get(x + suffix)
        if tensor is not None:
            (found.bias if into_bias else found.weight).append(make(tensor))
            found.keys.add(x + suffix)
    return found
