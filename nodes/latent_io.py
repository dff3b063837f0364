"""Latent file nodes: SaveLatent and LoadLatent (spec §5.1), ComfyUI's `.latent` format.

A `.latent` file is safetensors with `latent_tensor` (the samples) and an empty
`latent_format_version_0` marker; its header metadata carries `prompt` and the extra_pnginfo
entries (`workflow`) as JSON strings, like a saved PNG. Files written before the marker existed
hold samples pre-multiplied by SD1's 0.18215 scale, so LoadLatent divides those by it.

torch and safetensors are imported inside run(): the server imports this module at start.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from nodes.api import Choice, Hidden, Input, Node, NodeRuntime, NodeSpec, Output, String
from nodes.image_io import (
    existing_file,
    folder_for,
    list_files,
    loadable_file,
    metadata_enabled,
    resolve_annotated,
    save_path,
    sha256_file,
)
from nodes.pngmeta import metadata_texts

log = logging.getLogger(__name__)

LATENT_EXTENSIONS = frozenset({".latent"})
TENSOR_KEY = "latent_tensor"
VERSION_0_KEY = "latent_format_version_0"
LEGACY_SCALE = 0.18215
"""Files without the version marker stored samples times this (SD1's latent scale factor)."""


def save_latent_file(path: Path, samples: Any, metadata: dict[str, str] | None) -> None:
    """Write `samples` (any device or float dtype) as a version-0 `.latent` file."""
    import torch
    from safetensors.torch import save_file

    tensors = {
        TENSOR_KEY: samples.detach().to("cpu", torch.float32).contiguous(),
        VERSION_0_KEY: torch.tensor([]),
    }
    save_file(tensors, str(path), metadata=metadata)


def load_latent_file(path: Path) -> dict[str, Any]:
    """{"samples": float32 CPU tensor} from a `.latent` file, legacy files rescaled."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"cannot read latent file '{path.name}': {exc}") from exc
    if TENSOR_KEY not in tensors:
        raise ValueError(f"'{path.name}' is not a latent file: it has no '{TENSOR_KEY}' tensor (has {sorted(tensors)})")
    multiplier = 1.0 if VERSION_0_KEY in tensors else 1.0 / LEGACY_SCALE
    return {"samples": (tensors[TENSOR_KEY].float() * multiplier).contiguous()}


def _input_latents() -> list[str]:
    return list_files(folder_for("input"), LATENT_EXTENSIONS)


class SaveLatent(Node):
    """Saves a latent to the output folder as a `.latent` file (safetensors)."""

    spec = NodeSpec(
        id="SaveLatent",
        category="_for_testing",
        inputs=(
            Input("samples", "LATENT"),
            String("filename_prefix", "latents/ComfyUI"),
            Hidden("prompt", "PROMPT"),
            Hidden("extra_pnginfo", "EXTRA_PNGINFO"),
        ),
        output_node=True,
    )

    def run(
        self,
        ctx: NodeRuntime,
        samples: dict[str, Any],
        filename_prefix: str = "latents/ComfyUI",
        prompt: Any = None,
        extra_pnginfo: Any = None,
    ) -> dict[str, Any]:
        metadata = None
        if metadata_enabled(ctx):
            # ComfyUI always writes a `prompt` entry here, "" when there is none.
            metadata = {"prompt": "", **metadata_texts(prompt, extra_pnginfo)}
        target = save_path(Path(ctx.service("output_dir")), filename_prefix)
        file = target.name(target.counter, "latent")
        save_latent_file(target.folder / file, samples["samples"], metadata)
        log.debug("saved latent %s to %s", file, target.folder)
        return {"ui": {"latents": [{"filename": file, "subfolder": target.subfolder, "type": "output"}]}}


class LoadLatent(Node):
    """Loads a `.latent` file from the input folder."""

    spec = NodeSpec(
        id="LoadLatent",
        category="_for_testing",
        inputs=(Choice("latent", _input_latents, legacy=True),),
        outputs=(Output("LATENT"),),
    )

    @classmethod
    def fingerprint(cls, latent: Any = None, **_: Any) -> str:
        path = resolve_annotated(latent)
        if path is None:
            raise ValueError(f"latent '{latent}' is outside the input folder")
        return sha256_file(path)

    @classmethod
    def validate(cls, latent: Any) -> bool | str:
        return existing_file(latent, "latent")

    def run(self, ctx: NodeRuntime, latent: str) -> tuple[dict[str, Any]]:
        return (load_latent_file(loadable_file(ctx, latent, "latent")),)


NODES = [SaveLatent, LoadLatent]

__all__ = [
    "LATENT_EXTENSIONS",
    "LEGACY_SCALE",
    "NODES",
    "LoadLatent",
    "SaveLatent",
    "load_latent_file",
    "save_latent_file",
]
