"""Value nodes: constants and a tiny tensor lookalike (no torch, so tests run in milliseconds)."""

from __future__ import annotations

from typing import Any

from tests.testing_nodes.tracking import record

_FILLS = {"WHITE": 1.0, "BLACK": 0.0, "GREY": 0.5}


class StubTensor:
    """A flat list of floats with a shape and a torch-like `_version` counter that every in-place
    method bumps, so the executor's mutation guard can be tested without torch."""

    def __init__(self, shape: tuple[int, ...], data: list[float]) -> None:
        self.shape = shape
        self.data = data
        self._version = 0

    @classmethod
    def full(cls, shape: tuple[int, ...], value: float) -> StubTensor:
        count = 1
        for size in shape:
            count *= size
        return cls(shape, [value] * count)

    @property
    def nbytes(self) -> int:
        return 4 * len(self.data)

    def fill_(self, value: float) -> StubTensor:
        self.data = [value] * len(self.data)
        self._version += 1
        return self

    def clone(self) -> StubTensor:
        return StubTensor(self.shape, list(self.data))

    def mean(self) -> float:
        return sum(self.data) / len(self.data) if self.data else 0.0

    def __repr__(self) -> str:
        return f"StubTensor(shape={self.shape}, mean={self.mean():.3f})"


class StubInt:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT", {"default": 0, "min": -(2**31), "max": 2**31})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "make"
    CATEGORY = "Testing/Stubs"

    def make(self, value: int) -> tuple[int]:
        record("StubInt")
        return (value,)


class StubFloat:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("FLOAT", {"default": 0.0, "min": -1e9, "max": 1e9})}}

    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "make"
    CATEGORY = "Testing/Stubs"

    def make(self, value: float) -> tuple[float]:
        record("StubFloat")
        return (value,)


class StubString:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "make"
    CATEGORY = "Testing/Stubs"

    def make(self, value: str) -> tuple[str]:
        record("StubString")
        return (value,)


class StubImage:
    """An IMAGE-like StubTensor [batch, height, width, 3] of one colour."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "content": (list(_FILLS),),
                "height": ("INT", {"default": 4, "min": 1, "max": 64}),
                "width": ("INT", {"default": 4, "min": 1, "max": 64}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 8}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"
    CATEGORY = "Testing/Stubs"

    def make(self, content: str, height: int, width: int, batch_size: int) -> tuple[StubTensor]:
        record("StubImage")
        return (StubTensor.full((batch_size, height, width, 3), _FILLS[content]),)


class StubLatent:
    """A LATENT-like dict holding a StubTensor."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"size": ("INT", {"default": 2, "min": 1, "max": 16})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "make"
    CATEGORY = "Testing/Stubs"

    def make(self, size: int) -> tuple[dict[str, Any]]:
        record("StubLatent")
        return ({"samples": StubTensor.full((1, 4, size, size), 0.0)},)


NODE_CLASS_MAPPINGS = {
    "StubInt": StubInt,
    "StubFloat": StubFloat,
    "StubString": StubString,
    "StubImage": StubImage,
    "StubLatent": StubLatent,
}
