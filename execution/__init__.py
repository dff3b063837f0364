"""Graph validation, caching and execution. Never imports torch or nodes/: the registry is passed in."""
