"""Request-level sanity limits on queued prompts (DESIGN.md §6), checked before validation.

A prompt is refused before it reaches the queue when its body is larger than `--max-prompt-size`
MB, when it has more than `--max-nodes` nodes, or when a constant (not linked) `width`/`height`,
`batch_size` or `steps` input is above the server's cap (`--max-image-size`, `--max-batch-size`,
`--max-steps`; 0 = no cap). These caps are the operator's, not the node's: a node may allow
16384-pixel images while this server, shared by several people, allows 4096. The caps apply to
those input names on every node, custom ones included -- a name is all the server can know about
an input without running anything. Values arriving through links are not checked (they are only
known when the graph runs).

Refusals use ComfyUI's 400 shape, with one entry per offending input in `node_errors`, so editors
show the message on the node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.config import Config

LIMIT_ERROR = "prompt_over_server_limits"


@dataclass(frozen=True)
class PromptLimits:
    max_prompt_bytes: int = 32 * 1024 * 1024
    max_nodes: int = 10_000
    max_image_size: int = 8192
    max_batch_size: int = 64
    max_steps: int = 1000

    @classmethod
    def from_config(cls, config: Config) -> PromptLimits:
        return cls(
            max_prompt_bytes=int(config.max_prompt_size_mb * 1024 * 1024),
            max_nodes=config.max_nodes,
            max_image_size=config.max_image_size,
            max_batch_size=config.max_batch_size,
            max_steps=config.max_steps,
        )

    def input_caps(self) -> dict[str, tuple[int, str]]:
        """input name -> (cap, flag that sets it), for the caps that are on."""
        caps = {
            "width": (self.max_image_size, "--max-image-size"),
            "height": (self.max_image_size, "--max-image-size"),
            "batch_size": (self.max_batch_size, "--max-batch-size"),
            "steps": (self.max_steps, "--max-steps"),
        }
        return {name: cap for name, cap in caps.items() if cap[0] > 0}


@dataclass(frozen=True)
class LimitViolation:
    """Why a prompt is refused: a top-level error and ComfyUI-shaped node_errors."""

    status: int
    message: str
    node_errors: dict[str, Any]


def body_too_large(limits: PromptLimits, size: int) -> LimitViolation | None:
    if size <= limits.max_prompt_bytes:
        return None
    return LimitViolation(
        413,
        f"the prompt request is {size} bytes; this server accepts at most {limits.max_prompt_bytes} "
        "(--max-prompt-size, in MB)",
        {},
    )


def check_prompt(limits: PromptLimits, prompt: Any) -> LimitViolation | None:
    """Node count, then the constant inputs; None when the prompt is within every limit."""
    if not isinstance(prompt, Mapping):
        return None  # not a graph at all: validation explains that
    if len(prompt) > limits.max_nodes:
        return LimitViolation(
            400,
            f"the prompt has {len(prompt)} nodes; this server runs at most {limits.max_nodes} per prompt (--max-nodes)",
            {},
        )
    caps = limits.input_caps()
    node_errors: dict[str, Any] = {}
    for node_id, node in prompt.items():
        inputs = node.get("inputs") if isinstance(node, Mapping) else None
        if not isinstance(inputs, Mapping):
            continue
        errors = [
            _over_cap(name, value, *caps[name])
            for name, value in inputs.items()
            if name in caps and _number(value) is not None and _number(value) > caps[name][0]
        ]
        if errors:
            node_errors[str(node_id)] = {
                "errors": errors,
                "dependent_outputs": [],
                "class_type": node.get("class_type"),
            }
    if not node_errors:
        return None
    described = "; ".join(
        f"node {node_id} ({entry['class_type']}): {error['details']}"
        for node_id, entry in node_errors.items()
        for error in entry["errors"]
    )
    return LimitViolation(400, f"the prompt is over this server's limits: {described}", node_errors)


def _number(value: Any) -> float | None:
    # Links are [node_id, index] lists; booleans are not sizes.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _over_cap(name: str, value: Any, cap: int, flag: str) -> dict[str, Any]:
    return {
        "type": "value_over_server_limit",
        "message": "Value over this server's limit",
        "details": f"{name} {value} > {cap} ({flag})",
        "extra_info": {"input_name": name, "input_config": None, "received_value": value, "limit": cap},
    }


__all__ = ["LIMIT_ERROR", "LimitViolation", "PromptLimits", "body_too_large", "check_prompt"]
