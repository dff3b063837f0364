"""Fixture: calls sys.exit() at import, which must not stop Loom."""

import sys

sys.exit(3)
