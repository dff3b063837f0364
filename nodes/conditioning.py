"""Text encoding and conditioning nodes (spec §5.1, §5.5; ComfyUI's nodes.py and nodes_clip_sdxl.py).

CONDITIONING is ComfyUI's list of `[cond (1, T, D), options]` pairs. Every node here returns new
lists with copied option dicts and never changes a tensor in place: its inputs may be cached
results that other nodes read too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from nodes.api import Choice, Float, Input, Int, Node, NodeRuntime, NodeSpec, Output, String

log = logging.getLogger(__name__)

MAX_RESOLUTION = 16384

Conditioning = list[list[Any]]


def set_values(conditioning: Sequence[Sequence[Any]], values: Mapping[str, Any]) -> Conditioning:
    """A copy of the conditioning with `values` set in every entry's options (node_helpers)."""
    return [[entry[0], {**entry[1], **values}] for entry in conditioning]


def _need_clip(clip: Any) -> Any:
    if clip is None:
        raise ValueError(
            "clip input is invalid: None. If the clip comes from a checkpoint loader, the checkpoint "
            "does not contain a text encoder; load one with CLIPLoader instead."
        )
    return clip


class CLIPTextEncode(Node):
    """Encodes a text prompt using a CLIP model into an embedding that can be used to guide the
    diffusion model towards generating specific images."""

    spec = NodeSpec(
        id="CLIPTextEncode",
        display_name="CLIP Text Encode (Prompt)",
        category="conditioning",
        inputs=(
            String("text", multiline=True, dynamic_prompts=True, tooltip="The text to be encoded."),
            Input("clip", "CLIP", tooltip="The CLIP model used for encoding the text."),
        ),
        outputs=(
            Output(
                "CONDITIONING",
                tooltip="A conditioning containing the embedded text used to guide the diffusion model.",
            ),
        ),
    )

    def run(self, ctx: NodeRuntime, text: str, clip: Any) -> tuple[Conditioning]:
        clip = _need_clip(clip)
        return (clip.encode_from_tokens_scheduled(clip.tokenize(text)),)


class CLIPTextEncodeSDXL(Node):
    spec = NodeSpec(
        id="CLIPTextEncodeSDXL",
        category="advanced/conditioning",
        inputs=(
            Input("clip", "CLIP"),
            Int("width", 1024, min=0, max=MAX_RESOLUTION),
            Int("height", 1024, min=0, max=MAX_RESOLUTION),
            Int("crop_w", 0, min=0, max=MAX_RESOLUTION),
            Int("crop_h", 0, min=0, max=MAX_RESOLUTION),
            Int("target_width", 1024, min=0, max=MAX_RESOLUTION),
            Int("target_height", 1024, min=0, max=MAX_RESOLUTION),
            String("text_g", multiline=True, dynamic_prompts=True),
            String("text_l", multiline=True, dynamic_prompts=True),
        ),
        outputs=(Output("CONDITIONING"),),
    )

    def run(self, ctx: NodeRuntime, clip: Any, width: int, height: int, crop_w: int, crop_h: int,
            target_width: int, target_height: int, text_g: str, text_l: str) -> tuple[Conditioning]:  # fmt: skip
        clip = _need_clip(clip)
        tokens = clip.tokenize(text_g)
        if "l" not in tokens or "g" not in tokens:
            raise ValueError("CLIPTextEncodeSDXL needs an SDXL text encoder pair (CLIP-L and OpenCLIP-G)")
        tokens = {**tokens, "l": list(clip.tokenize(text_l)["l"])}
        tokens["g"] = list(tokens["g"])
        # Both encoders must see the same number of 77-token chunks: pad the shorter with empty ones.
        empty = clip.tokenize("")
        while len(tokens["l"]) < len(tokens["g"]):
            tokens["l"] += empty["l"]
        while len(tokens["g"]) < len(tokens["l"]):
            tokens["g"] += empty["g"]
        sizes = {"width": width, "height": height, "crop_w": crop_w, "crop_h": crop_h,
                 "target_width": target_width, "target_height": target_height}  # fmt: skip
        return (clip.encode_from_tokens_scheduled(tokens, add_dict=sizes),)


class CLIPTextEncodeSDXLRefiner(Node):
    spec = NodeSpec(
        id="CLIPTextEncodeSDXLRefiner",
        category="advanced/conditioning",
        inputs=(
            Float("ascore", 6.0, min=0.0, max=1000.0, step=0.01),
            Int("width", 1024, min=0, max=MAX_RESOLUTION),
            Int("height", 1024, min=0, max=MAX_RESOLUTION),
            String("text", multiline=True, dynamic_prompts=True),
            Input("clip", "CLIP"),
        ),
        outputs=(Output("CONDITIONING"),),
    )

    def run(self, ctx: NodeRuntime, ascore: float, width: int, height: int, text: str, clip: Any) -> tuple:
        clip = _need_clip(clip)
        extra = {"aesthetic_score": ascore, "width": width, "height": height}
        return (clip.encode_from_tokens_scheduled(clip.tokenize(text), add_dict=extra),)


class ConditioningCombine(Node):
    spec = NodeSpec(
        id="ConditioningCombine",
        display_name="Conditioning (Combine)",
        category="conditioning",
        inputs=(Input("conditioning_1", "CONDITIONING"), Input("conditioning_2", "CONDITIONING")),
        outputs=(Output("CONDITIONING"),),
    )

    def run(self, ctx: NodeRuntime, conditioning_1: Conditioning, conditioning_2: Conditioning) -> tuple:
        return (list(conditioning_1) + list(conditioning_2),)


class ConditioningAverage(Node):
    # No display name: ComfyUI's mapping has the key "ConditioningAverage " (trailing space).
    spec = NodeSpec(
        id="ConditioningAverage",
        category="conditioning",
        inputs=(
            Input("conditioning_to", "CONDITIONING"),
            Input("conditioning_from", "CONDITIONING"),
            Float("conditioning_to_strength", 1.0, min=0.0, max=1.0, step=0.01),
        ),
        outputs=(Output("CONDITIONING"),),
    )

    def run(self, ctx: NodeRuntime, conditioning_to: Conditioning, conditioning_from: Conditioning,
            conditioning_to_strength: float) -> tuple[Conditioning]:  # fmt: skip
        import torch

        if len(conditioning_from) > 1:
            log.warning("ConditioningAverage: conditioning_from has %d entries; only the first is used",
                        len(conditioning_from))  # fmt: skip
        cond_from = conditioning_from[0][0]
        pooled_from = conditioning_from[0][1].get("pooled_output")
        w = conditioning_to_strength
        out = []
        for cond_to, options in conditioning_to:
            t0 = cond_from[:, : cond_to.shape[1]]
            if t0.shape[1] < cond_to.shape[1]:  # a shorter prompt is padded with zeros
                pad = torch.zeros((1, cond_to.shape[1] - t0.shape[1], cond_to.shape[2]), dtype=t0.dtype)
                t0 = torch.cat([t0, pad.to(t0.device)], dim=1)
            mixed = cond_to * w + t0 * (1.0 - w)
            new = dict(options)
            pooled_to = options.get("pooled_output", pooled_from)
            if pooled_from is not None and pooled_to is not None:
                new["pooled_output"] = pooled_to * w + pooled_from * (1.0 - w)
            elif pooled_from is not None:
                new["pooled_output"] = pooled_from
            out.append([mixed, new])
        return (out,)


class ConditioningConcat(Node):
    spec = NodeSpec(
        id="ConditioningConcat",
        display_name="Conditioning (Concat)",
        category="conditioning",
        inputs=(Input("conditioning_to", "CONDITIONING"), Input("conditioning_from", "CONDITIONING")),
        outputs=(Output("CONDITIONING"),),
    )

    def run(self, ctx: NodeRuntime, conditioning_to: Conditioning, conditioning_from: Conditioning) -> tuple:
        import torch

        if len(conditioning_from) > 1:
            log.warning("ConditioningConcat: conditioning_from has %d entries; only the first is used",
                        len(conditioning_from))  # fmt: skip
        cond_from = conditioning_from[0][0]
        return ([[torch.cat((cond, cond_from), dim=1), dict(options)] for cond, options in conditioning_to],)


class ConditioningSetArea(Node):
    spec = NodeSpec(
        id="ConditioningSetArea",
        display_name="Conditioning (Set Area)",
        category="conditioning",
        inputs=(
            Input("conditioning", "CONDITIONING"),
            Int("width", 64, min=64, max=MAX_RESOLUTION, step=8),
            Int("height", 64, min=64, max=MAX_RESOLUTION, step=8),
            Int("x", 0, min=0, max=MAX_RESOLUTION, step=8),
            Int("y", 0, min=0, max=MAX_RESOLUTION, step=8),
            Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
        ),
        outputs=(Output("CONDITIONING"),),
    )

    def run(self, ctx: NodeRuntime, conditioning: Conditioning, width: int, height: int, x: int, y: int,
            strength: float) -> tuple[Conditioning]:  # fmt: skip
        # Areas are stored in latent units (pixels / 8), (height, width, y, x) as ComfyUI does.
        area = (height // 8, width // 8, y // 8, x // 8)
        return (set_values(conditioning, {"area": area, "strength": strength, "set_area_to_bounds": False}),)


class ConditioningSetAreaPercentage(Node):
    spec = NodeSpec(
        id="ConditioningSetAreaPercentage",
        display_name="Conditioning (Set Area with Percentage)",
        category="conditioning",
        inputs=(
            Input("conditioning", "CONDITIONING"),
            Float("width", 1.0, min=0, max=1.0, step=0.01),
            Float("height", 1.0, min=0, max=1.0, step=0.01),
            Float("x", 0, min=0, max=1.0, step=0.01),
            Float("y", 0, min=0, max=1.0, step=0.01),
            Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
        ),
        outputs=(Output("CONDITIONING"),),
    )

    def run(self, ctx: NodeRuntime, conditioning: Conditioning, width: float, height: float, x: float, y: float,
            strength: float) -> tuple[Conditioning]:  # fmt: skip
        area = ("percentage", height, width, y, x)
        return (set_values(conditioning, {"area": area, "strength": strength, "set_area_to_bounds": False}),)


class ConditioningSetAreaStrength(Node):
    spec = NodeSpec(
        id="ConditioningSetAreaStrength",
        category="conditioning",
        inputs=(Input("conditioning", "CONDITIONING"), Float("strength", 1.0, min=0.0, max=10.0, step=0.01)),
        outputs=(Output("CONDITIONING"),),
    )

    def run(self, ctx: NodeRuntime, conditioning: Conditioning, strength: float) -> tuple[Conditioning]:
        return (set_values(conditioning, {"strength": strength}),)


class ConditioningSetMask(Node):
    spec = NodeSpec(
        id="ConditioningSetMask",
        display_name="Conditioning (Set Mask)",
        category="conditioning",
        inputs=(
            Input("conditioning", "CONDITIONING"),
            Input("mask", "MASK"),
            Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
            Choice("set_cond_area", ("default", "mask bounds"), legacy=True),
        ),
        outputs=(Output("CONDITIONING"),),
    )

    def run(self, ctx: NodeRuntime, conditioning: Conditioning, mask: Any, strength: float,
            set_cond_area: str) -> tuple[Conditioning]:  # fmt: skip
        if mask.ndim < 3:
            mask = mask.unsqueeze(0)
        values = {"mask": mask, "set_area_to_bounds": set_cond_area != "default", "mask_strength": strength}
        return (set_values(conditioning, values),)


class ConditioningZeroOut(Node):
    spec = NodeSpec(
        id="ConditioningZeroOut",
        category="advanced/conditioning",
        inputs=(Input("conditioning", "CONDITIONING"),),
        outputs=(Output("CONDITIONING"),),
    )

    def run(self, ctx: NodeRuntime, conditioning: Conditioning) -> tuple[Conditioning]:
        import torch

        out = []
        for cond, options in conditioning:
            new = dict(options)
            if new.get("pooled_output") is not None:
                new["pooled_output"] = torch.zeros_like(new["pooled_output"])
            out.append([torch.zeros_like(cond), new])
        return (out,)


class ConditioningSetTimestepRange(Node):
    spec = NodeSpec(
        id="ConditioningSetTimestepRange",
        category="advanced/conditioning",
        inputs=(
            Input("conditioning", "CONDITIONING"),
            Float("start", 0.0, min=0.0, max=1.0, step=0.001),
            Float("end", 1.0, min=0.0, max=1.0, step=0.001),
        ),
        outputs=(Output("CONDITIONING"),),
    )

    def run(self, ctx: NodeRuntime, conditioning: Conditioning, start: float, end: float) -> tuple[Conditioning]:
        return (set_values(conditioning, {"start_percent": start, "end_percent": end}),)


NODES = [
    CLIPTextEncode,
    ConditioningCombine,
    ConditioningAverage,
    ConditioningConcat,
    ConditioningSetArea,
    ConditioningSetAreaPercentage,
    ConditioningSetAreaStrength,
    ConditioningSetMask,
    ConditioningZeroOut,
    ConditioningSetTimestepRange,
    CLIPTextEncodeSDXL,
    CLIPTextEncodeSDXLRefiner,
]

__all__ = [
    "MAX_RESOLUTION",
    "NODES",
    "CLIPTextEncode",
    "CLIPTextEncodeSDXL",
    "CLIPTextEncodeSDXLRefiner",
    "ConditioningAverage",
    "ConditioningCombine",
    "ConditioningConcat",
    "ConditioningSetArea",
    "ConditioningSetAreaPercentage",
    "ConditioningSetAreaStrength",
    "ConditioningSetMask",
    "ConditioningSetTimestepRange",
    "ConditioningZeroOut",
    "set_values",
]
