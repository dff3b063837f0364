"""What the operating system says about memory, read from /proc (stdlib only: every layer may use it)."""

from __future__ import annotations


def available_ram_bytes() -> int | None:
    """MemAvailable from /proc/meminfo, or None where that file does not exist."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


__all__ = ["available_ram_bytes"]
