"""widgets_values -> named inputs, through the node's spec (spec §9).

The editor saves a node's widget values positionally: one value per widget input in INPUT_TYPES
order (required, then optional), with UI-only companions in between: the "control after generate"
mode after seed-like inputs ("fixed", "increment", "decrement", "randomize"; combos with a control
also get a filter string), and the upload button's value after the last required widget of a node
whose combo has `image_upload`. Those companions are not always there (they depend on the frontend version that saved the file), so each
is consumed only when the value in its place looks like one and there are enough values left for
the real widgets that follow. Newer custom nodes may save an object `{name: value}` instead.

Plain stdlib: no torch, no imports from nodes/.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from core.spec import WIDGET_TYPES, InputSpec, NodeSpec

log = logging.getLogger(__name__)

CONTROL_MODES = frozenset({"fixed", "increment", "decrement", "randomize"})
"""Values of the frontend's control_after_generate companion widget."""
LEGACY_SEED_NAMES = frozenset({"seed", "noise_seed"})
"""Old frontends added the control widget to INT inputs with these names, whatever their options."""
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
"""Combo options that make the frontend add an upload button whose value is saved after the combo."""

_VALUE, _CONTROL, _FILTER, _UPLOAD, _FORCED = "value", "control", "filter", "upload", "forced"

Slot = tuple[str, InputSpec]


def has_control(spec: InputSpec) -> bool:
    if spec.options.get("control_after_generate"):
        return True
    return spec.type == "INT" and spec.name in LEGACY_SEED_NAMES


def _declared_control(spec: InputSpec) -> bool:
    return bool(spec.options.get("control_after_generate"))


def _slots(spec: NodeSpec, with_forced: bool) -> list[Slot]:
    """The saved layout of widgets_values: each widget and the UI-only values around it."""
    slots: list[Slot] = []
    for section in ("required", "optional"):
        for inp in spec.section(section):
            slots.extend(_widget_slots(inp, with_forced))
        uploads = [inp for inp in spec.section("required") if _has_upload(inp)]
        if section == "required" and uploads:
            # The frontend declares its upload button as one more *required* input, appended after
            # the node's own: its value follows the last required widget, not the combo it serves.
            slots.append((_UPLOAD, uploads[0]))
    return slots


def _widget_slots(inp: InputSpec, with_forced: bool) -> list[Slot]:
    if not inp.is_widget:
        # Some frontend versions kept a value for forceInput widgets too (see widget_values).
        if with_forced and (inp.is_combo or inp.type in WIDGET_TYPES):
            return [(_FORCED, inp), (_CONTROL, inp)] if _declared_control(inp) else [(_FORCED, inp)]
        return []
    slots: list[Slot] = [(_VALUE, inp)]
    if has_control(inp):
        # control_after_generate widgets are inserted right after the widget they drive.
        slots.append((_CONTROL, inp))
        if inp.is_combo:
            slots.append((_FILTER, inp))
    return slots


def _has_upload(inp: InputSpec) -> bool:
    return inp.is_combo and any(inp.options.get(option) for option in UPLOAD_OPTIONS)


def widget_default(spec: InputSpec) -> Any:
    """The value a freshly created widget shows (what the frontend sends when nothing was saved)."""
    if "default" in spec.options:
        return spec.options["default"]
    if spec.is_combo:
        return spec.choices[0] if spec.choices else None
    if spec.type in ("INT", "FLOAT"):
        zero: Any = 0 if spec.type == "INT" else 0.0
        low, high = spec.min, spec.max
        if isinstance(low, (int, float)) and zero < low:
            return low
        if isinstance(high, (int, float)) and zero > high:
            return high
        return zero
    return {"STRING": "", "BOOLEAN": False}.get(spec.type)


def widget_values(node: Mapping[str, Any], spec: NodeSpec, where: str) -> dict[str, Any]:
    """Input name -> widget value for one node; missing values take the widget's default."""
    raw = node.get("widgets_values")
    if isinstance(raw, Mapping):
        assigned = {inp.name: raw[inp.name] for inp in spec.widget_inputs if inp.is_widget and inp.name in raw}
    else:
        assigned = _assign_positional(list(raw or ()), spec, where)
    for inp in spec.widget_inputs:
        if inp.is_widget and inp.name not in assigned:
            default = widget_default(inp)
            if default is not None:
                log.debug("%s: no saved value for widget '%s'; using its default %r", where, inp.name, default)
                assigned[inp.name] = default
    return assigned


def _assign_positional(values: Sequence[Any], spec: NodeSpec, where: str) -> dict[str, Any]:
    slots = _slots(spec, with_forced=False)
    forced = _slots(spec, with_forced=True)
    if len(values) == len(slots):
        return _zip(slots, values)
    if len(forced) != len(slots) and len(values) == len(forced):
        return _zip(forced, values)
    if len(values) > len(slots):
        log.debug("%s: %d widget values for a layout of %d; extra values ignored", where, len(values), len(slots))
    return _walk(slots, values)


def _zip(slots: Sequence[Slot], values: Sequence[Any]) -> dict[str, Any]:
    return {inp.name: value for (kind, inp), value in zip(slots, values, strict=True) if kind == _VALUE}


def _walk(slots: Sequence[Slot], values: Sequence[Any]) -> dict[str, Any]:
    """Assign values when the count does not match the layout exactly: UI-only companions are
    consumed only when the value in their place looks like one and enough values remain."""
    needed_after = [0] * len(slots)
    remaining = 0
    for position in range(len(slots) - 1, -1, -1):
        needed_after[position] = remaining
        remaining += slots[position][0] == _VALUE
    assigned: dict[str, Any] = {}
    cursor = 0
    for position, (kind, inp) in enumerate(slots):
        if cursor >= len(values):
            break
        value = values[cursor]
        if kind == _VALUE:
            assigned[inp.name] = value
            cursor += 1
            continue
        spare = len(values) - cursor - needed_after[position]
        if _companion_fits(kind, inp, value, spare, slots[position + 1 :]):
            cursor += 1
    return assigned


def _companion_fits(kind: str, inp: InputSpec, value: Any, spare: int, rest: Sequence[Slot]) -> bool:
    if kind == _CONTROL:
        if not isinstance(value, str) or value not in CONTROL_MODES:  # a list or object is unhashable
            return False
        # A declared control is trusted; the legacy name rule only when the value cannot belong to
        # the next widget (a string or combo widget could legitimately hold "fixed").
        return _declared_control(inp) or spare > 0 or not _next_takes_string(rest)
    if spare <= 0:
        return False
    if kind == _FILTER:
        return isinstance(value, str)
    return value is None or isinstance(value, str)  # _UPLOAD


def _next_takes_string(rest: Sequence[Slot]) -> bool:
    for kind, inp in rest:
        if kind == _VALUE:
            return inp.type == "STRING" or inp.is_combo
    return False
