"""Fixture: fails while importing."""

raise RuntimeError("broken_pack cannot find its model files")
