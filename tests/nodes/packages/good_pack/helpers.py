from __future__ import annotations

SHOUT_SUFFIX = "!"


class GoodShout:
    CATEGORY = "tests"
    RETURN_TYPES = ("STRING",)
    FUNCTION = "shout"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "hi"})}}

    def shout(self, text):
        return (text.upper() + SHOUT_SUFFIX,)
