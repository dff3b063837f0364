"""Two nodes in ComfyUI's classic (V1) form: class attributes describe the node."""

from __future__ import annotations

from typing import Any


class ExampleRepeatText:
    """A plain V1 node: constants in, one STRING out."""

    CATEGORY = "examples"
    DESCRIPTION = "Repeats a text a number of times."
    RETURN_TYPES = ("STRING",)  # a tuple: mind the trailing comma
    RETURN_NAMES = ("text",)
    FUNCTION = "repeat"  # the method Loom calls

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        # Called often (validation, /object_info): keep it cheap. Key order = widget order.
        return {
            "required": {
                "text": ("STRING", {"multiline": True, "default": "hello"}),
                "times": ("INT", {"default": 2, "min": 1, "max": 100}),
            },
            "optional": {
                "separator": ("STRING", {"default": " "}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, separator: Any = " ") -> bool | str:
        # Only the inputs named here are passed (linked ones arrive as None). Return True or an
        # error message; the editor shows it on the node before anything runs.
        if isinstance(separator, str) and "\n" in separator:
            return "separator must be on one line; use the text itself for line breaks"
        return True

    def repeat(self, text: str, times: int, separator: str = " ") -> tuple[str]:
        # Absent optional inputs are simply not passed: the Python default applies.
        return (separator.join([text] * times),)


class ExampleShowText:
    """A V1 output node: it is a target of the prompt and shows its input in the editor."""

    CATEGORY = "examples"
    RETURN_TYPES = ("STRING",)
    FUNCTION = "show"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"text": ("STRING", {"forceInput": True})}}

    def show(self, text: str) -> dict[str, Any]:
        # "ui" goes to the editor (and to /history); "result" feeds any linked outputs.
        return {"ui": {"text": [text]}, "result": (text,)}
