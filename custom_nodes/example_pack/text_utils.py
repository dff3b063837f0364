"""Helpers shared by the package's nodes (imported relatively: `from .text_utils import ...`)."""

from __future__ import annotations

from pathlib import Path

TEXTS = Path(__file__).parent / "texts"


def text_files() -> list[str]:
    """The .txt files the ExampleReadTextFile node offers (listed again on every request, so
    files added while Loom runs appear in the editor)."""
    return sorted(path.name for path in TEXTS.glob("*.txt"))


def text_path(name: str) -> Path:
    """The file behind a choice; refuses names that would leave the texts folder."""
    path = (TEXTS / name).resolve()
    if path.parent != TEXTS.resolve():
        raise ValueError(f"{name!r} is not a file of {TEXTS}")
    return path
