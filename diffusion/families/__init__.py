"""The model-family registry: name -> Family, and `detect(state_dict)` that finds exactly one.

Unlike ComfyUI's ordered `models = [...]` list (first match wins), every family is asked and
exactly one must answer yes: zero or several matches raise a ModelError that says what the
weights looked like, so a new family that overlaps an old one fails loudly in its tests.
"""

from __future__ import annotations

from collections.abc import Mapping

from core.errors import ModelError
from diffusion.families import sd2, sd15, sdxl, sdxl_refiner
from diffusion.families.base import (
    UNET_PREFIX,
    Family,
    LatentFormat,
    ModelConfigs,
    StateDict,
    TextEncoderSlot,
    unet_facts,
)

__all__ = [
    "FAMILIES",
    "Family",
    "LatentFormat",
    "ModelConfigs",
    "TextEncoderSlot",
    "detect",
    "get",
    "register",
    "unet_prefix",
    "unregister",
]

FAMILIES: dict[str, Family] = {}


def register(family: Family, *, replace: bool = False) -> Family:
    """Add a family; a second family with the same name is an error unless replace=True."""
    if family.name in FAMILIES and not replace:
        raise ModelError(f"model family '{family.name}' is already registered")
    FAMILIES[family.name] = family
    return family


def unregister(name: str) -> None:
    FAMILIES.pop(name, None)


def get(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ModelError(f"unknown model family '{name}'; known: {', '.join(sorted(FAMILIES))}") from None


def unet_prefix(sd: StateDict) -> str:
    """Where the UNet sits: `model.diffusion_model.` in a full checkpoint, '' in a UNet-only file."""
    if f"{UNET_PREFIX}input_blocks.0.0.weight" in sd:
        return UNET_PREFIX
    return ""


def detect(sd: StateDict, *, prefix: str | None = None, families: Mapping[str, Family] | None = None) -> Family:
    """The one family whose detection rule accepts this state dict (a full checkpoint or a UNet).

    Raises ModelError naming the facts seen when no family or more than one matches.
    """
    prefix = unet_prefix(sd) if prefix is None else prefix
    facts = unet_facts(sd, prefix)
    if facts is None:
        sample = ", ".join(sorted(sd)[:5]) or "none"
        raise ModelError(
            f"no diffusion model (UNet) found: no key {prefix or ''}input_blocks.0.0.weight; first keys: {sample}"
        )
    candidates = FAMILIES if families is None else families
    found = [f for f in candidates.values() if f.matches(facts)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ModelError(
            f"the UNet matches no known model family ({', '.join(sorted(candidates))}); saw {facts.describe()}"
        )
    names = ", ".join(f.name for f in found)
    raise ModelError(f"the UNet matches several model families ({names}); saw {facts.describe()}")


for _module in (sd15, sd2, sdxl, sdxl_refiner):
    register(_module.FAMILY)
