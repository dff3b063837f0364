"""An out-of-memory error inside sampling: torch.OutOfMemoryError (what torch.cuda raises) is
injected from inside the UNet's forward while KSampler runs. The prompt fails at KSampler with an
"out of memory" message carrying a hint, every model is unloaded (ModelManager.free with
unload_models), and the next prompt runs normally. torch.cuda.OutOfMemoryError is the same class
as torch.OutOfMemoryError; a plain MemoryError (host RAM) is treated alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from diffusion.unet import UNetModel
from execution.oom import OOM_HINT, is_out_of_memory
from tests.faults.fault_engine import FaultEngine, error_of, txt2img

pytestmark = pytest.mark.slow


def _raise_in_forward(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> list[int]:
    calls: list[int] = []
    real = UNetModel.forward

    def forward(self: UNetModel, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            return real(self, *args, **kwargs)  # the first step runs: the error comes mid-sampling
        raise error

    monkeypatch.setattr(UNetModel, "forward", forward)
    return calls


@pytest.mark.parametrize(
    "error",
    [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), MemoryError()],
    ids=["torch-oom", "host-memoryerror"],
)
def test_oom_in_sampling_frees_models_reports_and_the_next_prompt_runs(
    engine_root: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    engine = FaultEngine.create(engine_root)
    frees: list[dict[str, Any]] = []
    real_free = engine.manager.free
    monkeypatch.setattr(engine.manager, "free", lambda **kw: (frees.append(kw), real_free(**kw))[1])

    with monkeypatch.context() as patch:
        calls = _raise_in_forward(patch, error)
        result, events = engine.run(txt2img(steps=3))
    assert len(calls) == 2
    error_message = error_of(result)
    assert error_message["node_id"] == "5" and error_message["node_type"] == "KSampler"
    text = error_message["exception_message"]
    assert text.startswith("out of memory: ") and OOM_HINT in text and "--lowvram" in text
    if isinstance(error, torch.OutOfMemoryError):
        assert "Tried to allocate 20.00 GiB" in text
        assert error_message["exception_type"] == "torch.OutOfMemoryError"
    assert error_message["traceback"]  # the frames down to the injected raise
    # The models were unloaded: nothing stays cached in the manager.
    assert frees == [{"unload_models": True}]
    assert engine.manager.cached_count() == 0
    assert all(record.device == record.offload_device for record in engine.manager.loaded_models())
    assert not any(e.to_message()[0] == "execution_success" for e in events.events)

    again, _ = engine.run(txt2img(steps=2, seed=2))
    assert again.status == "success", again.error
    saved = again.outputs["7"]["images"][0]
    assert (engine_root / "output" / saved["subfolder"] / saved["filename"]).is_file()


def test_oom_is_recognised_by_type_name_message_and_memoryerror() -> None:
    assert is_out_of_memory(torch.OutOfMemoryError("x"))
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only allocator errors say it
