"""The aiohttp server: app factory, routes, handlers, websocket hub.

`from server import PromptServer` works as in ComfyUI, for custom node packages (see
server/extensions.py); it is loaded on first use, so importing this package stays cheap.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "PromptServer":
        from server.extensions import PromptServer

        return PromptServer
    raise AttributeError(f"module 'server' has no attribute {name!r}")
