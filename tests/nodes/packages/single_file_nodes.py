"""Fixture: a package that is a single module."""


class SingleFileEcho:
    CATEGORY = "tests"
    RETURN_TYPES = ("INT",)
    FUNCTION = "echo"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}}

    def echo(self, value):
        return (value,)


NODE_CLASS_MAPPINGS = {"SingleFileEcho": SingleFileEcho}
