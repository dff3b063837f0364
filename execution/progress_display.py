"""Terminal progress for `main.py run`: an EventSink that draws a line per node and a bar per step.

On a terminal the step bar redraws in place; into a pipe or file it prints a line at every 25%
so logs stay short. Also formats validation errors and the final summary for the CLI.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from execution.events import (
    Event,
    ExecutionBlocked,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    NodeExecuted,
    NodeExecuting,
    NodeFinished,
    NodeProgress,
)

BAR_WIDTH = 30


class ProgressDisplay:
    def __init__(self, prompt: Mapping[str, Any], stream: TextIO, *, enabled: bool = True) -> None:
        self.prompt = prompt
        self.stream = stream
        self.enabled = enabled
        self.interactive = bool(getattr(stream, "isatty", lambda: False)())
        self.started = 0
        self.current: str | None = None
        self.node_start = time.perf_counter()
        self.last_quarter = -1
        self.bar_open = False
        self.outputs: dict[str, dict[str, Any]] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, NodeExecuted):
            self.outputs.setdefault(event.node_id, {}).update(event.output)
        if not self.enabled:
            if isinstance(event, ExecutionError):
                self._write(self.format_error(event))
            return
        if isinstance(event, ExecutionCached) and event.nodes:
            self._line(f"cached: {len(event.nodes)} node(s) reused from earlier runs")
        elif isinstance(event, NodeExecuting):
            self._begin_node(event)
        elif isinstance(event, NodeProgress):
            self._progress(event)
        elif isinstance(event, NodeFinished) and not event.cached and event.node_id == self.current:
            self._end_bar()
            elapsed = time.perf_counter() - self.node_start
            self._line(f"      done in {elapsed:.2f} s")
            self.current = None
        elif isinstance(event, ExecutionBlocked):
            self._line(f"blocked at node {event.node_id} ({event.node_type}): {event.message}")
        elif isinstance(event, ExecutionError):
            self._end_bar()
            self._write(self.format_error(event))
        elif isinstance(event, ExecutionInterrupted):
            self._end_bar()
            self._line(f"interrupted at node {event.node_id} ({event.node_type})")

    def _begin_node(self, event: NodeExecuting) -> None:
        self._end_bar()
        if event.node_id != self.current:
            self.started += 1
            self.node_start = time.perf_counter()
        self.current = event.node_id
        self.last_quarter = -1
        node = self.prompt.get(event.real_node_id or event.node_id) or {}
        class_type = node.get("class_type", "?") if isinstance(node, Mapping) else "?"
        title = (node.get("_meta") or {}).get("title") if isinstance(node, Mapping) else None
        label = f"{class_type}" + (f" '{title}'" if title and title != class_type else "")
        shown = event.display_node_id or event.node_id
        self._line(f"[{self.started}/{len(self.prompt)}] node {shown}: {label}")

    def _progress(self, event: NodeProgress) -> None:
        if not event.max:
            return
        fraction = max(0.0, min(1.0, event.value / event.max))
        text = f"      [{'#' * round(fraction * BAR_WIDTH):<{BAR_WIDTH}}] {event.value:g}/{event.max:g}"
        if self.interactive:
            self.stream.write("\r" + text)
            self.stream.flush()
            self.bar_open = True
        else:
            quarter = int(fraction * 4)
            if quarter != self.last_quarter:
                self.last_quarter = quarter
                self._line(text)

    def _end_bar(self) -> None:
        if self.bar_open:
            self.stream.write("\n")
            self.bar_open = False

    def _line(self, text: str) -> None:
        self._end_bar()
        self._write(text + "\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def close(self) -> None:
        self._end_bar()

    @staticmethod
    def format_error(event: ExecutionError) -> str:
        lines = [
            f"error: node {event.node_id} ({event.node_type}) failed",
            f"  {event.exception_type}: {event.exception_message}",
        ]
        if event.traceback:
            lines.append("  traceback (most recent call last):")
            lines.extend("    " + line.rstrip().replace("\n", "\n    ") for line in event.traceback[-6:])
        return "\n".join(lines) + "\n"

    def summary(self, result: Any, folders: Mapping[str, Any]) -> str:
        """Where the outputs went (files) and what text outputs said, one line each."""
        outputs = getattr(result, "outputs", None) or self.outputs
        lines = [f"{result.status}: {len(result.ran)} node(s) ran, {len(result.cached)} cached"]
        roots = {
            "output": folders.get("output_dir"),
            "temp": folders.get("temp_dir"),
            "input": folders.get("input_dir"),
        }
        for node_id, ui in outputs.items():
            for key, items in ui.items():
                for item in items if isinstance(items, list) else [items]:
                    lines.append(f"  node {node_id} {key}: {_describe_output(item, roots)}")
        return "\n".join(lines)


def _describe_output(item: Any, roots: Mapping[str, Any]) -> str:
    if isinstance(item, Mapping) and "filename" in item:
        root = roots.get(item.get("type", "output")) or Path(".")
        return str(Path(root) / item.get("subfolder", "") / item["filename"])
    text = str(item)
    return text if len(text) <= 200 else text[:200] + "..."


def format_validation_errors(validation: Any, prompt: Mapping[str, Any]) -> str:
    """Every validation problem, one line each, with node id, class and input name."""
    lines = []
    error = validation.error
    if error:
        lines.append(f"invalid workflow: {error.get('message', '')}")
        if error.get("details"):
            lines.extend("  " + line for line in str(error["details"]).splitlines())
    for node_id, entry in (validation.node_errors or {}).items():
        class_type = entry.get("class_type", "?")
        for err in entry.get("errors", []):
            where = f"node {node_id} ({class_type})"
            input_name = (err.get("extra_info") or {}).get("input_name")
            if input_name:
                where += f" input '{input_name}'"
            detail = f" -- {err['details']}" if err.get("details") else ""
            lines.append(f"  {where}: {err.get('message', '')}{detail}")
    if validation.ok and validation.node_errors:
        lines.insert(0, "some outputs failed validation and are skipped:")
    return "\n".join(lines)
