"""Plain-Python foundations shared by every layer: config, paths, errors, the node contract."""
