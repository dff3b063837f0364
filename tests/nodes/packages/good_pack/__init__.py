"""Fixture: a well-formed package with both node forms, a relative import and a web folder."""

from .helpers import SHOUT_SUFFIX, GoodShout
from .sub.declared import GoodDeclared

NODE_CLASS_MAPPINGS = {"GoodShout": GoodShout}
NODE_DISPLAY_NAME_MAPPINGS = {"GoodShout": "Good Shout"}
NODES = [GoodDeclared]
WEB_DIRECTORY = "js"

__all__ = ["SHOUT_SUFFIX"]
