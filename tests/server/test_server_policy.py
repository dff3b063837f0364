"""Security rules that need no server: which listen addresses count as loopback, the body cap."""

from __future__ import annotations

from server.security import SecurityPolicy, is_loopback_host


def test_policy_for_listen() -> None:
    assert SecurityPolicy.for_listen("127.0.0.1", None, 100).loopback_only
    assert SecurityPolicy.for_listen("127.0.0.1,::1", None, 100).loopback_only
    assert not SecurityPolicy.for_listen("0.0.0.0,::", None, 100).loopback_only
    assert not SecurityPolicy.for_listen("127.0.0.1,192.168.1.5", None, 100).loopback_only
    assert SecurityPolicy.for_listen("localhost", None, 2).max_body_bytes == 2 * 1024 * 1024


def test_loopback_names() -> None:
    for host in ("localhost", "LOCALHOST.", "127.0.0.1", "127.1.2.3", "::1", "[::1]"):
        assert is_loopback_host(host), host
    for host in ("evil.example", "localhost.evil.example", "0.0.0.0", "10.0.0.1", ""):
        assert not is_loopback_host(host), host
