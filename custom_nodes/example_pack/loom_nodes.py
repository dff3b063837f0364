"""Two nodes in Loom's declarative form: a `spec` plus `run(self, ctx, ...)`."""

from __future__ import annotations

from typing import Any

from nodes.api import Choice, Int, Node, NodeRuntime, NodeSpec, Output, ProgressBar, String

from .text_utils import text_files, text_path


class ExampleReadTextFile(Node):
    """Reads a text file from the package's texts/ folder."""

    spec = NodeSpec(
        id="ExampleReadTextFile",
        display_name="Read Text File (example)",
        category="examples",
        version="1",  # bump when the output changes for the same inputs: cached results are dropped
        # A function as options: called each time the spec is requested, so the list stays current.
        inputs=[Choice("file", text_files, tooltip="a .txt file in example_pack/texts")],
        outputs=[Output("STRING", name="text")],
    )

    @classmethod
    def fingerprint(cls, file: str) -> Any:
        # ComfyUI's IS_CHANGED: joins the cache key. The file's modification time means an edited
        # file is read again while an unchanged one comes from the cache.
        try:
            return text_path(file).stat().st_mtime_ns
        except (OSError, ValueError):
            return float("nan")  # NaN never matches: always run (and let run() report the error)

    @classmethod
    def validate(cls, file: Any) -> bool | str:
        # VALIDATE_INPUTS: checked before the prompt runs. Naming `file` means only it is passed
        # (None if it is linked) and the built-in combo check is skipped for it.
        if file is None:
            return True
        try:
            exists = text_path(file).is_file()
        except ValueError as exc:
            return str(exc)
        return True if exists else f"no text file named {file!r}"

    def run(self, ctx: NodeRuntime, file: str) -> tuple[str]:
        return (text_path(file).read_text(encoding="utf-8"),)


class ExampleCountWords(Node):
    """Counts the words of a text, reporting progress line by line."""

    spec = NodeSpec(
        id="ExampleCountWords",
        display_name="Count Words (example)",
        category="examples",
        inputs=[
            String("text", multiline=True, force_input=True),
            Int("min_length", 1, min=1, max=64, tooltip="shorter words are not counted"),
        ],
        outputs=[Output("INT", name="words"), Output("STRING", name="report")],
    )

    def run(self, ctx: NodeRuntime, text: str, min_length: int) -> tuple[int, str]:
        lines = text.splitlines() or [""]
        bar = ProgressBar(len(lines))  # the editor shows it on the node; interrupts stop here too
        words = 0
        for line in lines:
            words += sum(1 for word in line.split() if len(word) >= min_length)
            bar.update(1)
        return (words, f"{words} words in {len(lines)} lines")
