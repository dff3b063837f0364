"""Test utilities shared by the test packages (random-weight checkpoints, ...)."""
