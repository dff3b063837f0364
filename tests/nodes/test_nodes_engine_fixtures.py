"""Shared set-up for the engine node tests (test_nodes_engine_*.py): a models folder holding the tiny
random sd15 / sdxl checkpoints and a LoRA, one CPU ModelManager for the session (so each checkpoint
is read once), the services a Loom process gives its nodes, and helpers to run one node or a whole
graph through the real validator and Executor. It holds no tests itself.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from core.config import Config
from core.graph_builder import GraphBuilder
from core.paths import ModelPaths
from core.runtime import NodeRuntime, install_services
from diffusion.memory import ModelManager, device_policy
from execution.cache import make_cache
from execution.events import RecordingSink
from execution.executor import ExecutionResult, Executor
from execution.interrupt import InterruptFlag
from execution.validate import validate_prompt
from nodes.api import DeclarativeNode
from nodes.builtin import builtin_registry
from tests.nodes.conftest import call_node
from tests.utils.checkpoints import cached_checkpoint

LORA_UNET_STEMS = (
    "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q",
    "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_out_0",
    "lora_unet_input_blocks_1_1_transformer_blocks_0_ff_net_0_proj",
)
LORA_CLIP_STEMS = (
    "lora_te_text_model_encoder_layers_0_self_attn_k_proj",
    "lora_te_text_model_encoder_layers_1_mlp_fc1",
)


@dataclass
class Engine:
    """What the tests share: the folders, the services dict nodes see, the registry."""

    root: Path
    services: dict[str, Any]
    registry: Mapping[str, Any]

    @property
    def manager(self) -> ModelManager:
        return self.services["models"]

    def runtime(self, node_id: str = "1", class_type: str = "test", **overrides: Any) -> NodeRuntime:
        return NodeRuntime(node_id=node_id, class_type=class_type, services={**self.services, **overrides})

    def load(self, family: str = "sd15") -> tuple[Any, Any, Any]:
        return self.manager.load_checkpoint(self.root / "models" / "checkpoints" / f"{family}.safetensors")


def _write_lora(path: Path, model: Any, clip: Any) -> None:
    """A rank-2 LoRA over a few UNet and CLIP linears of the tiny sd15 model (random, seeded)."""
    gen = torch.Generator().manual_seed(7)
    tensors: dict[str, torch.Tensor] = {}
    for handle, stems in ((model, LORA_UNET_STEMS), (clip, LORA_CLIP_STEMS)):
        key_map, shapes = handle.lora_key_map(), handle.patch_shapes()
        for stem in stems:
            rows, cols = shapes[key_map[stem]]
            tensors[f"{stem}.lora_up.weight"] = torch.randn(rows, 2, generator=gen)
            tensors[f"{stem}.lora_down.weight"] = torch.randn(2, cols, generator=gen)
            tensors[f"{stem}.alpha"] = torch.tensor(2.0)
    save_file(tensors, str(path))


_SHARED: dict[str, Engine] = {}
"""The one Engine of the test session. Each test module imports the fixtures, which makes pytest
define them once per module; keeping the Engine here still loads every model only once."""


def _make_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("loom")
    checkpoints = root / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for family in ("sd15", "sdxl"):
        # copied, not linked: ModelPaths refuses links that lead outside the models folder
        shutil.copy(cached_checkpoint(family, tiny=True), checkpoints / f"{family}.safetensors")
    for kind in ("input", "output", "temp"):
        (root / kind).mkdir()
    (root / "models" / "loras").mkdir()
    return root


@pytest.fixture(scope="session", name="session_engine")
def session_engine_fixture(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    if "engine" in _SHARED:
        return _SHARED["engine"]
    engine_root = _make_root(tmp_path_factory)
    services: dict[str, Any] = {
        "config": Config(base_dir=engine_root),
        "paths": ModelPaths(engine_root / "models"),
        "models": ModelManager(device_policy(device="cpu")),
        "input_dir": engine_root / "input",
        "output_dir": engine_root / "output",
        "temp_dir": engine_root / "temp",
    }
    engine = Engine(engine_root, services, builtin_registry())
    model, clip, _ = engine.load("sd15")
    _write_lora(engine_root / "models" / "loras" / "style.safetensors", model, clip)
    _SHARED["engine"] = engine
    return engine


@pytest.fixture(name="engine")
def engine_fixture(session_engine: Engine) -> Iterator[Engine]:
    """The session engine with its services installed for combo lists and validation (other test
    modules install their own, so this is redone for every test)."""
    install_services(session_engine.services)
    yield session_engine
    install_services(None)


def call(engine: Engine | None, node_class: type, runtime: NodeRuntime | None = None, **inputs: Any) -> Any:
    """Run one declarative node the way the executor does, inside a runtime with the engine's
    services (none when `engine` is None: for nodes that need no model)."""
    definition = DeclarativeNode(node_class)
    if runtime is None and engine is not None:
        runtime = engine.runtime(class_type=definition.class_type)
    return call_node(definition, inputs, runtime)


def txt2img_graph(
    prefix: str,
    ckpt: str = "sd15.safetensors",
    *,
    seed: int = 3,
    steps: int = 3,
    size: int = 64,
    batch: int = 1,
    sampler: str = "euler",
    scheduler: str = "normal",
) -> tuple[GraphBuilder, dict[str, Any]]:
    """CheckpointLoaderSimple -> CLIPTextEncode x2 -> EmptyLatentImage -> KSampler -> VAEDecode -> SaveImage."""
    graph = GraphBuilder(prefix=prefix)
    ckpt_node = graph.node("CheckpointLoaderSimple", ckpt_name=ckpt)
    positive = graph.node("CLIPTextEncode", text="a red apple on a table", clip=ckpt_node.out(1))
    negative = graph.node("CLIPTextEncode", text="blurry", clip=ckpt_node.out(1))
    latent = graph.node("EmptyLatentImage", width=size, height=size, batch_size=batch)
    sampler_node = graph.node(
        "KSampler", model=ckpt_node.out(0), seed=seed, steps=steps, cfg=6.5, sampler_name=sampler,
        scheduler=scheduler, positive=positive.out(0), negative=negative.out(0), latent_image=latent.out(0),
        denoise=1.0,
    )  # fmt: skip
    decode = graph.node("VAEDecode", samples=sampler_node.out(0), vae=ckpt_node.out(2))
    save = graph.node("SaveImage", images=decode.out(0), filename_prefix=f"{prefix}/img")
    nodes = {"ckpt": ckpt_node, "positive": positive, "negative": negative, "latent": latent,
             "sampler": sampler_node, "decode": decode, "save": save}  # fmt: skip
    return graph, nodes


def run_graph(
    engine: Engine,
    graph: GraphBuilder,
    *,
    services: Mapping[str, Any] | None = None,
    interrupt: InterruptFlag | None = None,
    sink: Any = None,
) -> tuple[ExecutionResult, RecordingSink]:
    """Validate (must pass) and execute a graph; returns the result and every event."""
    checked = validate_prompt(graph.finalize(), engine.registry)
    assert checked.ok, (checked.error, checked.node_errors)
    executor = Executor(engine.registry, make_cache(), dict(services or engine.services), interrupt)
    events = RecordingSink()

    def both(event: Any) -> None:
        events(event)
        if sink is not None:
            sink(event)

    result = executor.execute(checked.prompt, f"p-{id(graph)}", checked.outputs, events=both, interrupt=interrupt)
    return result, events


def conditioning(engine: Engine, clip: Any, text: str) -> list:
    from nodes.conditioning import CLIPTextEncode

    return call(engine, CLIPTextEncode, text=text, clip=clip)[0]


__all__ = [
    "Engine",
    "call",
    "conditioning",
    "engine_fixture",
    "run_graph",
    "session_engine_fixture",
    "txt2img_graph",
]
