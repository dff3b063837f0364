"""The aiohttp server: app factory, routes, handlers, websocket hub."""
