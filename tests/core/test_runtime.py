from __future__ import annotations

import threading

from core.runtime import NodeRuntime, install_services, reset_current, services, set_current


def test_installed_services_are_seen_outside_nodes_and_from_other_threads() -> None:
    install_services({"input_dir": "/in"})
    try:
        assert services()["input_dir"] == "/in"
        seen = {}
        thread = threading.Thread(target=lambda: seen.update(services()))
        thread.start()
        thread.join()
        assert seen == {"input_dir": "/in"}
    finally:
        install_services(None)
    assert dict(services()) == {}


def test_a_running_node_sees_its_own_services_first() -> None:
    install_services({"input_dir": "/installed"})
    token = set_current(NodeRuntime(node_id="1", class_type="X", services={"input_dir": "/mine"}))
    try:
        assert services()["input_dir"] == "/mine"
    finally:
        reset_current(token)
        install_services(None)
