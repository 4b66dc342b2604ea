"""keelctl talks to hostd's API over a unix socket; refusals come back as reasons."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hostd import api, cli
from hostd.updater import Refused


class FakeUpdater:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def status(self) -> dict[str, Any]:
        return {"phase": "idle"}

    def history(self) -> list[dict[str, Any]]:
        return []

    def check(self) -> dict[str, Any]:
        return {"booted": "1.0.0", "available": "2.0.0", "path": "x"}

    def update(self, bundle: Path | None, metadata: str | None, reboot: bool) -> dict[str, Any]:
        self.calls.append(("update", (bundle, metadata, reboot)))
        raise Refused("the repository's metadata has expired")

    def rollback(self, reboot: bool) -> dict[str, Any]:
        self.calls.append(("rollback", reboot))
        return {"result": "rolled-back", "to": "1.0.0", "rebooting": reboot}


@pytest.fixture
def socket_path(tmp_path: Path) -> Iterator[tuple[Path, FakeUpdater]]:
    updater = FakeUpdater()
    path = tmp_path / "hostd.sock"
    server = api.serve(updater, path)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield path, updater
    server.shutdown()
    server.server_close()


def test_socket_is_root_only(socket_path: tuple[Path, FakeUpdater]) -> None:
    assert socket_path[0].stat().st_mode & 0o777 == 0o600


def test_verbs_round_trip(socket_path: tuple[Path, FakeUpdater]) -> None:
    path, updater = socket_path
    assert cli.call("GET", "/v1/status", socket_path=path) == {"phase": "idle"}
    assert cli.call("POST", "/v1/check", socket_path=path)["available"] == "2.0.0"
    cli.call("POST", "/v1/rollback", {"reboot": False}, socket_path=path)
    assert updater.calls == [("rollback", False)]


def test_a_refusal_is_a_readable_error(socket_path: tuple[Path, FakeUpdater]) -> None:
    path, updater = socket_path
    with pytest.raises(cli.ApiError, match="metadata has expired"):
        cli.call("POST", "/v1/update", {"bundle": "/tmp/b.keelbundle"}, socket_path=path)
    assert updater.calls == [("update", (Path("/tmp/b.keelbundle"), None, False))]


def test_no_daemon_says_so(tmp_path: Path) -> None:
    with pytest.raises(cli.ApiError, match="hostd is not running"):
        cli.call("GET", "/v1/status", socket_path=tmp_path / "missing.sock")


def test_status_text_names_a_failed_version() -> None:
    why = "health check failed: x"
    text = cli.show_status({
        "image": "docker-host", "architecture": "x86-64",
        "booted": {"slot": "a", "version": "1.0.0", "state": "good"},
        "other": {"slot": "b", "version": "3.0.0", "state": "bad", "failed": why},
        "phase": "idle", "progress": {}, "failed_versions": {"3.0.0": why},
        "last_result": {"result": "rolled-back", "version": "3.0.0", "reason": why,
                        "at": 0},
        "policy": {"repository": "", "check_interval": "6h", "reboot": "manual",
                   "window": {"days": [], "start": "02:00", "duration": "2h"}},
    })  # fmt: skip
    assert "other:    slot b: 3.0.0 (bad)" in text
    assert "last:     rolled-back 3.0.0" in text
