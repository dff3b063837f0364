"""ModelPaths: model kind ("checkpoints", "loras", ...) -> folders; listing and safe resolution.

An instance, built once in main.py, never module state. Folder kinds, extensions, legacy aliases
and the extra_model_paths.yaml format follow ComfyUI (spec §11), so existing set-ups work.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from core.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

MODEL_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})

# kind -> (folder names under models/, extensions or None for the defaults)
MODEL_KINDS: dict[str, tuple[tuple[str, ...], frozenset[str] | None]] = {
    "checkpoints": (("checkpoints",), None),
    "configs": (("configs",), frozenset({".yaml"})),
    "loras": (("loras",), None),
    "vae": (("vae",), None),
    "text_encoders": (("text_encoders", "clip"), None),
    "diffusion_models": (("unet", "diffusion_models"), None),
    "clip_vision": (("clip_vision",), None),
    "style_models": (("style_models",), None),
    "embeddings": (("embeddings",), None),
    "diffusers": (("diffusers",), frozenset({"folder"})),
    "vae_approx": (("vae_approx",), None),
    "controlnet": (("controlnet", "t2i_adapter"), None),
    "gligen": (("gligen",), None),
    "upscale_models": (("upscale_models",), None),
    "latent_upscale_models": (("latent_upscale_models",), None),
    "hypernetworks": (("hypernetworks",), None),
    "photomaker": (("photomaker",), None),
    "classifiers": (("classifiers",), frozenset({""})),
    "model_patches": (("model_patches",), None),
    "audio_encoders": (("audio_encoders",), None),
}
ALIASES = {"clip": "text_encoders", "unet": "diffusion_models"}


class ModelPaths:
    """Where each kind of model lives. Several folders per kind; the first is the default."""

    def __init__(self, models_dir: Path, extra: Mapping[str, Iterable[Path]] | None = None) -> None:
        self.models_dir = Path(models_dir)
        self._folders: dict[str, list[Path]] = {
            kind: [self.models_dir / name for name in names] for kind, (names, _) in MODEL_KINDS.items()
        }
        self.custom_nodes_dirs: list[Path] = []
        for kind, folders in (extra or {}).items():
            for folder in folders:
                self.add(kind, folder)

    @staticmethod
    def canonical(kind: str) -> str:
        return ALIASES.get(kind, kind)

    def kinds(self) -> list[str]:
        return list(self._folders)

    def add(self, kind: str, folder: Path, *, first: bool = False) -> None:
        """Add a search folder; an unknown kind becomes a new kind (custom nodes use their own)."""
        if kind == "custom_nodes":
            self.custom_nodes_dirs.append(Path(folder))
            return
        folders = self._folders.setdefault(self.canonical(kind), [])
        folder = Path(folder)
        if folder not in folders:
            folders.insert(0, folder) if first else folders.append(folder)

    def folders(self, kind: str) -> list[Path]:
        try:
            return list(self._folders[self.canonical(kind)])
        except KeyError:
            raise ModelError(f"unknown model folder kind '{kind}'; known kinds: {', '.join(self._folders)}") from None

    def extensions(self, kind: str) -> frozenset[str]:
        entry = MODEL_KINDS.get(self.canonical(kind))
        return (entry[1] if entry and entry[1] is not None else None) or MODEL_EXTENSIONS

    def list(self, kind: str) -> list[str]:
        """Relative paths (with "/") of every model file of this kind, all folders merged, sorted."""
        extensions = self.extensions(kind)
        found: set[str] = set()
        for folder in self.folders(kind):
            if not folder.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                for filename in filenames:
                    if Path(filename).suffix.lower() in extensions or "" in extensions:
                        rel = Path(dirpath, filename).relative_to(folder)
                        found.add(rel.as_posix())
        return sorted(found)

    def resolve(self, kind: str, name: str) -> Path:
        """The file for a combo value. Refuses names that escape their folder (`..`, absolute)."""
        if not name or "\x00" in name:
            raise ModelError(f"empty or invalid {kind} file name {name!r}")
        for folder in self.folders(kind):
            candidate = model_file(folder, name)
            if candidate is not None and candidate.is_file():
                return candidate
        searched = ", ".join(str(f) for f in self.folders(kind))
        raise ModelError(f"{kind} file '{name}' not found; looked in: {searched}")

    @classmethod
    def from_config(cls, models_dir: Path, yaml_files: Iterable[Path] = ()) -> ModelPaths:
        paths = cls(models_dir)
        for yaml_file in yaml_files:
            for kind, folder in read_extra_model_paths(yaml_file):
                paths.add(kind, folder)
        return paths


def model_file(folder: Path, name: str) -> Path | None:
    """`folder/name` for a model combo value, or None if the NAME leaves the folder.

    The name is checked lexically (no `..`, not absolute), the file itself may be a symlink to
    anywhere: users link big model files in from other disks, as ComfyUI allows. Files that
    clients can name over HTTP (outputs, uploads) use the stricter `contained` instead.
    """
    root = os.path.abspath(folder)
    candidate = os.path.normpath(os.path.join(root, name))
    if os.path.isabs(name) or os.path.commonpath([root, candidate]) != root or candidate == root:
        return None
    return Path(candidate)


def contained(folder: Path, name: str) -> Path | None:
    """`folder/name` if its real path stays inside the real folder, else None."""
    root = os.path.realpath(folder)
    candidate = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, candidate]) != root or candidate == root:
        return None
    return Path(candidate)


def read_extra_model_paths(yaml_file: Path) -> list[tuple[str, Path]]:
    """(kind, folder) pairs from an extra_model_paths.yaml (ComfyUI format, spec §11).

    Top-level sections each hold optional `base_path` (relative to the YAML's folder),
    `is_default` (accepted, ignored: our defaults always come first) and `kind: path` entries,
    where a multi-line string lists several folders.
    """
    import yaml  # deferred: importing core.paths must stay cheap

    try:
        data = yaml.safe_load(Path(yaml_file).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read extra model paths file {yaml_file}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"extra model paths file {yaml_file}: expected sections of `kind: path`, got {data!r}")
    here = Path(yaml_file).absolute().parent
    pairs: list[tuple[str, Path]] = []
    for section_name, section in data.items():
        if not isinstance(section, dict):
            raise ConfigError(f"{yaml_file}: section '{section_name}' must be a mapping of kind: path")
        base = Path(os.path.expandvars(os.path.expanduser(str(section.get("base_path", here)))))
        if not base.is_absolute():
            base = here / base
        for kind, value in section.items():
            if kind in ("base_path", "is_default"):
                continue
            for line in str(value).splitlines():
                line = line.strip()
                if line:
                    folder = Path(os.path.expandvars(os.path.expanduser(line)))
                    pairs.append((kind, folder if folder.is_absolute() else base / folder))
    log.debug("extra model paths from %s: %s", yaml_file, pairs)
    return pairs
