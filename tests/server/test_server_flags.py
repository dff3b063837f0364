"""The server's command-line flags (core/config.py): security, limits, retention, demo model."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import AUTH_TOKEN_ENV, Config


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AUTH_TOKEN_ENV, raising=False)
    config = Config.from_args([], base_dir=Path("/srv/loom"))
    assert config.auth_token is None and config.allowed_hosts == ()
    assert (config.retention, config.max_nodes, config.max_prompt_size_mb) == (10_000, 10_000, 32.0)
    assert (config.max_image_size, config.max_batch_size, config.max_steps) == (8192, 64, 1000)
    assert config.demo_model is False


def test_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AUTH_TOKEN_ENV, raising=False)
    argv = [
        "--auth-token", "t0k", "--allowed-hosts", "Loom.Example.com,b.lan", "--allowed-hosts", "c.lan",
        "--retention", "50", "--demo-model", "--max-nodes", "99", "--max-prompt-size", "2.5",
        "--max-image-size", "0", "--max-batch-size", "8", "--max-steps", "150",
    ]  # fmt: skip
    config = Config.from_args(argv, base_dir=Path("/srv/loom"))
    assert config.auth_token == "t0k"
    assert config.allowed_hosts == ("loom.example.com", "b.lan", "c.lan")
    assert (config.retention, config.demo_model, config.max_nodes, config.max_prompt_size_mb) == (50, True, 99, 2.5)
    assert (config.max_image_size, config.max_batch_size, config.max_steps) == (0, 8, 150)


def test_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUTH_TOKEN_ENV, "from-env")
    assert Config.from_args([]).auth_token == "from-env"
    assert Config.from_args(["--auth-token", "flag-wins"]).auth_token == "flag-wins"


@pytest.mark.parametrize("argv", [["--retention", "0"], ["--max-nodes", "0"], ["--max-steps", "-1"]])
def test_bad_values_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        Config.from_args(argv)
