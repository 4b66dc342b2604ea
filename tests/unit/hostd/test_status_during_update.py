"""`keelctl status` answers at once while an update holds the update lock (issue 12,
item 3), with the update's phase and progress."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from hostd import api, cli, slots
from tests.unit.hostd.hosts import Host, bounded


def test_status_answers_at_once_during_an_update(
    host: Host, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    host.publish("2.0.0")
    written, go_on = threading.Event(), threading.Event()
    read_back = slots.read_back_sha256

    def slow_read_back(device: Path, size: int, also: Callable[[bytes], None] | None) -> str:
        # The slot is written, the update holds the lock and reads the slot back.
        written.set()
        go_on.wait(60)
        return read_back(device, size, also)

    monkeypatch.setattr(slots, "read_back_sha256", slow_read_back)
    server = api.serve(host.updater, tmp_path / "hostd.sock")
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    updating = threading.Thread(target=host.updater.update, daemon=True)
    updating.start()
    try:
        assert written.wait(30)
        status = bounded(host.updater.status, 5)
        over_api = bounded(
            lambda: cli.call("GET", "/v1/status", socket_path=tmp_path / "hostd.sock"), 5
        )
    finally:
        go_on.set()
        updating.join(60)
        server.shutdown()
        server.server_close()
    assert status["phase"] == over_api["phase"] == "writing-slot"
    assert status["target_version"] == "2.0.0"
    progress = status["progress"]
    assert progress["total"] > 0 and progress["done"] == progress["total"]
    assert "update:   writing-slot 2.0.0 100%" in cli.show_status(over_api)
    # The update went on and finished normally.
    assert host.updater.status()["phase"] == "installed"
