"""Loom's exception hierarchy. Messages teach the user: say what was wrong and where."""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error Loom raises on purpose."""


class ConfigError(EngineError):
    """A command-line flag, config file or environment value is unusable."""


class GraphError(EngineError):
    """A prompt or workflow is malformed (before any node is checked)."""


class WorkflowError(GraphError):
    """A UI-format workflow cannot be converted to an API prompt."""


class ValidationError(EngineError):
    """A prompt failed validation; `result` holds ComfyUI's error + node_errors payload."""

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class NodeError(EngineError):
    """A node failed while running. Carries where (node id, class) for every consumer of errors."""

    def __init__(self, node_id: str, class_type: str, message: str) -> None:
        super().__init__(f"node {node_id} ({class_type}): {message}")
        self.node_id = node_id
        self.class_type = class_type
        self.detail = message


class DependencyCycleError(EngineError):
    """The graph (possibly after node expansion) contains a cycle."""


class ModelError(EngineError):
    """A model file is missing, unreadable or of an unknown kind."""


class Interrupted(EngineError):
    """The running prompt was interrupted (by /interrupt, Ctrl+C or shutdown)."""
