"""A small in-process engine for the model and file faults: the built-in nodes, a CPU ModelManager
of its own, the folders of one Loom root, and a txt2img prompt builder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import Config
from core.paths import ModelPaths
from core.runtime import install_services
from execution.cache import make_cache
from execution.events import RecordingSink
from execution.executor import ExecutionResult, Executor
from execution.validate import validate_prompt


@dataclass
class FaultEngine:
    root: Path
    services: dict[str, Any] = field(default_factory=dict)
    registry: Any = None
    executor: Executor | None = None
    runs: int = 0

    @classmethod
    def create(cls, root: Path) -> FaultEngine:
        from diffusion.memory import ModelManager, device_policy
        from nodes.builtin import builtin_registry

        services = {
            "config": Config(base_dir=root),
            "paths": ModelPaths(root / "models"),
            "models": ModelManager(device_policy(device="cpu")),
            "input_dir": root / "input",
            "output_dir": root / "output",
            "temp_dir": root / "temp",
        }
        engine = cls(root, services, builtin_registry())
        engine.executor = Executor(engine.registry, make_cache(), services)
        return engine

    @property
    def manager(self) -> Any:
        return self.services["models"]

    def run(self, prompt: dict[str, Any]) -> tuple[ExecutionResult, RecordingSink]:
        """Validate (must pass) and execute on the engine's one Executor (its cache persists, as in
        a server's worker)."""
        install_services(self.services)
        try:
            checked = validate_prompt(prompt, self.registry)
            assert checked.ok, (checked.error, checked.node_errors)
            events = RecordingSink()
            self.runs += 1
            assert self.executor is not None
            result = self.executor.execute(checked.prompt, f"fault-{self.runs}", checked.outputs, events=events)
            return result, events
        finally:
            install_services(None)


def txt2img(ckpt: str = "tiny.safetensors", *, seed: int = 1, steps: int = 1, size: int = 32,
            prefix: str = "fault", lora: str | None = None, save: bool = True) -> dict[str, Any]:  # fmt: skip
    """CheckpointLoaderSimple [-> LoraLoader] -> CLIPTextEncode x2 -> KSampler -> VAEDecode -> SaveImage."""
    model, clip = ["1", 0], ["1", 1]
    prompt: dict[str, Any] = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}}}
    if lora is not None:
        prompt["10"] = {
            "class_type": "LoraLoader",
            "inputs": {"model": model, "clip": clip, "lora_name": lora, "strength_model": 1.0, "strength_clip": 1.0},
        }
        model, clip = ["10", 0], ["10", 1]
    prompt.update({
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red apple", "clip": clip}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": clip}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": model, "seed": seed, "steps": steps, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
    })  # fmt: skip
    if save:
        prompt["7"] = {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}}
    else:
        prompt["7"] = {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}}
    return prompt


def error_of(result: ExecutionResult) -> dict[str, Any]:
    """The execution_error message of a failed result."""
    assert result.status == "error", result.status
    assert result.error is not None
    return result.error.to_message()[1]
