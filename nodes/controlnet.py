"""ControlNet nodes (spec §5.1): ControlNetLoader, DiffControlNetLoader, ControlNetApply (deprecated
in ComfyUI, still listed) and ControlNetApplyAdvanced -- ComfyUI's names, inputs and outputs.

The loaders read models/controlnet (and models/t2i_adapter) through the "paths" service and place
the network with the "models" service (the ModelManager) when there is one. The apply nodes never
change their inputs: every conditioning entry is copied and gets a copy of the control carrying
the hint, strength and window (one copy per distinct previous control, so positive and negative
share it and run as one batch). torch and diffusion.* are imported inside run().
"""

from __future__ import annotations

import logging
from typing import Any

from core.runtime import services
from nodes.api import Choice, Float, Input, Node, NodeRuntime, NodeSpec, Output

log = logging.getLogger(__name__)


def _controlnet_names() -> list[str]:
    paths = services().get("paths")
    return paths.list("controlnet") if paths is not None else []


def _load(ctx: NodeRuntime, control_net_name: str, model: Any = None) -> Any:
    from diffusion.controlnet import load_controlnet

    path = ctx.service("paths").resolve("controlnet", control_net_name)
    return load_controlnet(path, manager=ctx.services.get("models"), model=model)


def _with_hint(control_net: Any, hint: Any, strength: float, window: tuple[float, float], vae: Any = None) -> Any:
    return control_net.copy().set_cond_hint(hint, strength, window, vae=vae)


class ControlNetLoader(Node):
    """Loads a ControlNet, Control-LoRA or T2I-Adapter from the controlnet folder."""

    spec = NodeSpec(
        id="ControlNetLoader",
        display_name="Load ControlNet Model",
        category="loaders",
        inputs=(Choice("control_net_name", _controlnet_names, legacy=True),),
        outputs=(Output("CONTROL_NET"),),
    )

    def run(self, ctx: NodeRuntime, control_net_name: str) -> tuple[Any]:
        return (_load(ctx, control_net_name),)


class DiffControlNetLoader(Node):
    """Loads a ControlNet stored as a difference to a base model (and any other kind)."""

    spec = NodeSpec(
        id="DiffControlNetLoader",
        display_name="Load ControlNet Model (diff)",
        category="loaders",
        inputs=(Input("model", "MODEL"), Choice("control_net_name", _controlnet_names, legacy=True)),
        outputs=(Output("CONTROL_NET"),),
    )

    def run(self, ctx: NodeRuntime, model: Any, control_net_name: str) -> tuple[Any]:
        return (_load(ctx, control_net_name, model),)


class ControlNetApply(Node):
    """Applies a ControlNet to one conditioning; the sampler also gives it to the negative."""

    spec = NodeSpec(
        id="ControlNetApply",
        display_name="Apply ControlNet (OLD)",
        category="conditioning/controlnet",
        deprecated=True,
        inputs=(
            Input("conditioning", "CONDITIONING"),
            Input("control_net", "CONTROL_NET"),
            Input("image", "IMAGE"),
            Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
        ),
        outputs=(Output("CONDITIONING"),),
    )

    def run(self, ctx: NodeRuntime, conditioning: list, control_net: Any, image: Any, strength: float) -> tuple[list]:
        if strength == 0:
            return (conditioning,)
        hint = image.movedim(-1, 1)
        out = []
        for cond, options in conditioning:
            entry = dict(options)
            c_net = _with_hint(control_net, hint, strength, (0.0, 1.0))
            if "control" in options:
                c_net.set_previous_controlnet(options["control"])
            entry["control"] = c_net
            entry["control_apply_to_uncond"] = True
            out.append([cond, entry])
        return (out,)


class ControlNetApplyAdvanced(Node):
    """Applies a ControlNet to the positive and negative conditioning, within a sampling window."""

    spec = NodeSpec(
        id="ControlNetApplyAdvanced",
        display_name="Apply ControlNet",
        category="conditioning/controlnet",
        inputs=(
            Input("positive", "CONDITIONING"),
            Input("negative", "CONDITIONING"),
            Input("control_net", "CONTROL_NET"),
            Input("image", "IMAGE"),
            Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
            Float("start_percent", 0.0, min=0.0, max=1.0, step=0.001),
            Float("end_percent", 1.0, min=0.0, max=1.0, step=0.001),
            Input("vae", "VAE", optional=True),
        ),
        outputs=(Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative")),
    )

    def run(
        self,
        ctx: NodeRuntime,
        positive: list,
        negative: list,
        control_net: Any,
        image: Any,
        strength: float,
        start_percent: float,
        end_percent: float,
        vae: Any = None,
    ) -> tuple[list, list]:
        if strength == 0:
            return (positive, negative)
        hint = image.movedim(-1, 1)
        by_previous: dict[int, Any] = {}  # previous control (by identity) -> its new control
        results = []
        for conditioning in (positive, negative):
            out = []
            for cond, options in conditioning:
                entry = dict(options)
                previous = entry.get("control")
                c_net = by_previous.get(id(previous))
                if c_net is None:
                    c_net = _with_hint(control_net, hint, strength, (start_percent, end_percent), vae)
                    c_net.set_previous_controlnet(previous)
                    by_previous[id(previous)] = c_net
                entry["control"] = c_net
                entry["control_apply_to_uncond"] = False
                out.append([cond, entry])
            results.append(out)
        return (results[0], results[1])


NODES = [ControlNetLoader, DiffControlNetLoader, ControlNetApply, ControlNetApplyAdvanced]

__all__ = ["NODES", "ControlNetApply", "ControlNetApplyAdvanced", "ControlNetLoader", "DiffControlNetLoader"]
