"""Loom's example custom node package: one of each kind of node, small and commented.

Copy this folder to start your own package. Loom imports the package (this __init__.py) once at
startup and reads these names from it:

- NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS: ComfyUI V1 node classes (see v1_nodes.py);
  any ComfyUI custom node package already exports these, and they work unchanged.
- NODES: Loom's declarative node classes (see loom_nodes.py).
- WEB_DIRECTORY: a folder of .js files the editor loads (served at /extensions/example_pack/).

A package may export either kind or both, as this one does. Relative imports work as in any
Python package.
"""

from .loom_nodes import ExampleCountWords, ExampleReadTextFile
from .v1_nodes import ExampleRepeatText, ExampleShowText

NODE_CLASS_MAPPINGS = {
    # class_type (the name saved in workflows; keep it stable and unique) -> class
    "ExampleRepeatText": ExampleRepeatText,
    "ExampleShowText": ExampleShowText,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "ExampleRepeatText": "Repeat Text (example)",
    "ExampleShowText": "Show Text (example)",
}

NODES = [ExampleReadTextFile, ExampleCountWords]

WEB_DIRECTORY = "./web"
