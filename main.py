"""Loom's composition root: parse args -> Config -> build services -> serve | run | convert.

    python main.py [flags]                 start the server and editor (127.0.0.1:8188)
    python main.py run WORKFLOW.json       run a workflow headless, print where outputs went
    python main.py convert WORKFLOW.json   print the API prompt of a UI-format workflow

Only this module reads argv, configures logging and wires the layers together.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core.config import Config
from core.errors import EngineError, WorkflowError

log = logging.getLogger("loom")

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def configure_logging(config: Config) -> None:
    default = "INFO" if config.command == "serve" else "WARNING"
    level = getattr(logging, str(config.verbose or default).upper(), logging.INFO)
    stream = sys.stdout if config.log_stdout else sys.stderr
    logging.basicConfig(level=level, stream=stream, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class LazyModels:
    """The "models" service: a diffusion.memory.ModelManager built on first use.

    Building the manager imports torch and probes devices, which neither `convert`, a server
    that has not run a prompt yet, nor a workflow without model nodes should pay for. Attribute
    access is forwarded to the manager (`ctx.service("models").load_checkpoint(...)`), creating
    it then; `unload_all()` (POST /free) only frees a manager that exists.
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._manager: Any = None
        self._lock = threading.Lock()

    @property
    def created(self) -> bool:
        return self._manager is not None

    def get(self) -> Any:
        """The manager, created now if this is the first use."""
        if self._manager is None:
            with self._lock:  # two worker threads must not build two managers
                if self._manager is None:
                    self._manager = self._factory()
        return self._manager

    def unload_all(self) -> None:
        if self._manager is not None:
            self._manager.free(unload_models=True)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # private names and copy/pickle probes never build a manager
            raise AttributeError(name)
        return getattr(self.get(), name)

    def __repr__(self) -> str:
        return f"LazyModels({self._manager!r})" if self.created else "LazyModels(not created yet)"


DEMO_MODEL_FILE = "loom_demo_tiny.safetensors"
"""diffusion.random_weights.DEMO_CHECKPOINT, named here so a start that finds it imports no torch."""


def ensure_demo_model(config: Config) -> None:
    """--demo-model: a tiny random-weight SD1.5-family checkpoint in models/checkpoints (made once)."""
    folder = config.models_path / "checkpoints"
    if (folder / DEMO_MODEL_FILE).is_file():
        log.info("demo model: %s", folder / DEMO_MODEL_FILE)
        return
    from diffusion.random_weights import ensure_demo_checkpoint  # torch: only when it must be made

    path, _ = ensure_demo_checkpoint(folder)
    log.info("demo model created: %s (random weights: it draws coloured noise)", path)


def build_services(config: Config) -> dict[str, Any]:
    """What nodes may reach through their runtime (`ctx.service(name)`)."""
    from core.paths import ModelPaths
    from core.runtime import install_services

    if config.demo_model:
        ensure_demo_model(config)
    paths = ModelPaths.from_config(config.models_path, config.extra_model_paths)

    def model_manager() -> Any:
        from diffusion.memory import ModelManager  # deferred: imports torch, probes devices

        return ModelManager.from_config(config, paths)

    services = {
        "config": config,
        "paths": paths,
        "models": LazyModels(model_manager),
        "output_dir": config.output_path,
        "input_dir": config.input_path,
        "temp_dir": config.temp_path,
    }
    install_services(services)  # combo lists and validation run outside any node call
    return services


def registry_loader(config: Config, services: dict[str, Any]) -> Any:
    """A function that builds the node registry (built-ins + custom packages) and its package reports."""

    def load() -> Any:
        from nodes.builtin import build_registry

        dirs = [*config.all_custom_nodes_dirs, *services["paths"].custom_nodes_dirs]
        return build_registry(
            dirs, disable_custom_nodes=config.disable_custom_nodes, whitelist=config.whitelist_custom_nodes
        )

    return load


def build_registry(config: Config, services: dict[str, Any]) -> Any:
    registry, _reports = registry_loader(config, services)()
    return registry


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load_workflow(path: Path) -> Any:
    """The JSON of a workflow file, or what a PNG saved by Loom or ComfyUI carries: its `prompt`
    chunk (exactly what ran) as a POST-style body, with its `workflow` chunk kept for re-saving."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WorkflowError(f"cannot read workflow file {path}: {exc.strerror or exc}") from exc
    if raw.startswith(PNG_SIGNATURE):
        return _png_workflow(path, raw)
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise WorkflowError(f"{path} is neither a JSON workflow nor a PNG (not UTF-8 text: {exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise WorkflowError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from exc


def _png_workflow(path: Path, raw: bytes) -> Any:
    from nodes.pngmeta import read_png_metadata

    try:
        meta = read_png_metadata(raw)
    except ValueError as exc:
        raise WorkflowError(f"{path}: unreadable PNG: {exc}") from exc
    if meta["prompt"] is not None:
        extra = {"extra_pnginfo": {"workflow": meta["workflow"]}} if meta["workflow"] is not None else {}
        return {"prompt": meta["prompt"], "extra_data": extra}
    if meta["workflow"] is not None:
        return meta["workflow"]
    raise WorkflowError(f"{path} carries no workflow: it has no 'prompt' or 'workflow' text chunk")


def to_api_prompt(data: Any, registry: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(API prompt, extra_pnginfo) for an API- or UI-format workflow."""
    from execution.workflow import is_ui_workflow, workflow_to_prompt

    if is_ui_workflow(data):

        def spec_of(class_type: str) -> Any:
            definition = registry.get(class_type)
            return definition.spec() if definition is not None else None

        return workflow_to_prompt(data, spec_of), {"workflow": data}
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):  # a saved POST /prompt body
        extra = data.get("extra_data") if isinstance(data.get("extra_data"), dict) else {}
        pnginfo = extra.get("extra_pnginfo") if isinstance(extra.get("extra_pnginfo"), dict) else {}
        return data["prompt"], pnginfo
    if not isinstance(data, dict):
        raise WorkflowError(
            "a workflow must be a JSON object: an API prompt {id: {class_type, inputs}} or a UI workflow"
        )
    return data, {}


def command_convert(config: Config) -> int:
    services = build_services(config)
    registry = build_registry(config, services)
    assert config.workflow is not None
    prompt, _ = to_api_prompt(load_workflow(config.workflow), registry)
    print(json.dumps(prompt, indent=2))
    return EXIT_OK


def command_run(config: Config) -> int:
    from execution.cache import cache_for_policy
    from execution.executor import Executor
    from execution.interrupt import InterruptFlag
    from execution.progress_display import ProgressDisplay, format_validation_errors
    from execution.validate import validate_prompt

    services = build_services(config)
    registry = build_registry(config, services)
    assert config.workflow is not None
    prompt, pnginfo = to_api_prompt(load_workflow(config.workflow), registry)
    validation = validate_prompt(prompt, registry)
    if validation.node_errors or not validation.ok:
        print(format_validation_errors(validation, prompt), file=sys.stderr)
        if not validation.ok:
            return EXIT_INVALID
    display = ProgressDisplay(prompt, stream=sys.stderr, enabled=not config.quiet)
    executor = Executor(registry, cache_for_policy(config.cache), services)
    interrupt = InterruptFlag()
    try:
        result = executor.execute(
            validation.prompt,
            str(uuid.uuid4()),
            validation.outputs,
            extra_data={"extra_pnginfo": pnginfo},
            events=display,
            interrupt=interrupt,
        )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_FAILED
    display.close()
    print(display.summary(result, services))
    return EXIT_OK if result.status == "success" else EXIT_FAILED


def command_serve(config: Config) -> int:
    from server.app import serve

    services = build_services(config)
    return serve(config, services, registry_loader(config, services))


def main(argv: Sequence[str] | None = None) -> int:
    config = Config.from_args(sys.argv[1:] if argv is None else argv, base_dir=Path(__file__).resolve().parent)
    configure_logging(config)
    commands = {"serve": command_serve, "run": command_run, "convert": command_convert}
    try:
        return commands[config.command](config)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID


if __name__ == "__main__":
    sys.exit(main())
