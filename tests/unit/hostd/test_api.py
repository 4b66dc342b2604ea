"""keelctl talks to hostd's API over a unix socket; refusals come back as reasons."""

from __future__ import annotations

import json
import os
import select
import socket
import threading
import time
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


def test_a_socket_nobody_answers_on_says_so(tmp_path: Path) -> None:
    # systemd holds the socket while hostd is not up: the connection waits unanswered.
    with (
        _listening_unix_socket(tmp_path / "held.sock"),
        pytest.raises(cli.ApiError, match="did not answer within 1s"),
    ):
        cli.call("GET", "/v1/status", socket_path=tmp_path / "held.sock", timeout=1)


def test_a_connection_closed_unanswered_says_so(tmp_path: Path) -> None:
    # hostd failed to start: systemd gives up on the socket and the connection closes.
    listener = _listening_unix_socket(tmp_path / "given-up.sock")

    def close_unanswered() -> None:
        conn, _ = listener.accept()
        conn.recv(1)  # the request has begun: it closes mid-exchange (the client
        # may still be sending, or already waiting for the answer)
        conn.close()

    thread = threading.Thread(target=close_unanswered, daemon=True)
    thread.start()
    try:
        with pytest.raises(cli.ApiError, match="closed the connection without answering"):
            cli.call("GET", "/v1/status", socket_path=tmp_path / "given-up.sock", timeout=5)
    finally:
        thread.join(5)
        listener.close()


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


# Bounded requests (issue 12, item 8), with raw clients on the socket.


def raw_exchange(path: Path, request: bytes, wait: float = 5.0) -> bytes:
    """Send request and read the answer until hostd closes the connection; a server that
    holds on makes recv time out (TimeoutError), which fails the test."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(wait)
        client.connect(str(path))
        client.sendall(request)
        answer = b""
        while block := client.recv(65536):
            answer += block
    return answer


def status_code(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "READ_TIMEOUT", 0.5, raising=False)
    monkeypatch.setattr(api, "REQUEST_DEADLINE", 1.5, raising=False)


@pytest.mark.parametrize(
    ("length", "status"), [("-1", 400), ("-100000", 400), (str(10**12), 413), ("ten", 400)]
)
def test_a_bad_content_length_is_answered_without_reading(
    socket_path: tuple[Path, FakeUpdater], length: str, status: int
) -> None:
    path, updater = socket_path
    request = f"POST /v1/rollback HTTP/1.1\r\nContent-Length: {length}\r\n\r\n"
    answer = raw_exchange(path, request.encode() + b'{"reboot": false}')
    assert status_code(answer) == status
    assert b'"error"' in answer
    assert updater.calls == []


def test_a_body_over_the_limit_is_refused(socket_path: tuple[Path, FakeUpdater]) -> None:
    path, updater = socket_path
    body = json.dumps({"reboot": False, "pad": "x" * 70_000}).encode()
    request = f"POST /v1/rollback HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n"
    assert status_code(raw_exchange(path, request.encode() + body)) == 413
    assert updater.calls == []


def test_a_client_that_stalls_after_the_headers_times_out(
    short_timeouts: None, socket_path: tuple[Path, FakeUpdater]
) -> None:
    path, updater = socket_path
    request = b'POST /v1/rollback HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"reboot"'
    started = time.monotonic()
    assert status_code(raw_exchange(path, request)) == 408
    assert time.monotonic() - started < 3
    assert updater.calls == []


def test_a_client_that_stalls_in_the_headers_is_disconnected(
    short_timeouts: None, socket_path: tuple[Path, FakeUpdater]
) -> None:
    path, _ = socket_path
    started = time.monotonic()
    assert raw_exchange(path, b"GET /v1/status HTTP/1.1\r\nHost: x\r\n") == b""
    assert time.monotonic() - started < 3


def test_a_client_that_trickles_its_request_is_cut_off(
    short_timeouts: None, socket_path: tuple[Path, FakeUpdater]
) -> None:
    # A byte every 0.1 s passes every read timeout (0.5 s); only a deadline for the
    # whole request (1.5 s) ends it. A request cut short must not be carried out.
    path, updater = socket_path
    rest = b'Content-Type: application/json\r\nContent-Length: 17\r\n\r\n{"reboot": false}'
    started = time.monotonic()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(5)
        client.connect(str(path))
        client.sendall(b"POST /v1/rollback HTTP/1.1\r\n")
        for byte in rest:
            try:
                client.sendall(bytes([byte]))
            except OSError:  # hostd stopped reading
                break
            if select.select([client], [], [], 0.1)[0]:
                break  # hostd answered
        answer = b""
        while block := client.recv(65536):
            answer += block
    assert time.monotonic() - started < 4
    assert status_code(answer) == 408
    assert updater.calls == []


def _listening_unix_socket(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    return listener


def test_hostd_serves_on_the_socket_systemd_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # keel-hostd.socket: systemd binds the socket and passes it as the first fd; hostd
    # must answer on it, not bind a socket of its own over it.
    path = tmp_path / "held-by-systemd.sock"
    # The descriptor is handed over as systemd hands it: hostd's socket owns it alone.
    monkeypatch.setattr(api, "LISTEN_FDS_START", _listening_unix_socket(path).detach())
    environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x"}
    server = api.serve(FakeUpdater(), tmp_path / "unused.sock", environ)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        assert cli.call("GET", "/v1/status", socket_path=path) == {"phase": "idle"}
        assert not (tmp_path / "unused.sock").exists()
        assert environ == {}  # not handed on to the processes hostd starts
    finally:
        server.shutdown()
        server.server_close()


def test_a_socket_passed_to_another_process_is_not_taken(tmp_path: Path) -> None:
    environ = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}
    assert api.passed_socket(environ) is None
    assert environ["LISTEN_FDS"] == "1"


@pytest.mark.parametrize("count", ["0", "2", ""])
def test_anything_but_one_passed_socket_is_an_error(count: str) -> None:
    with pytest.raises(RuntimeError, match="exactly one"):
        api.passed_socket({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": count})


def test_a_passed_socket_of_another_kind_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        monkeypatch.setattr(api, "LISTEN_FDS_START", tcp.fileno())
        with pytest.raises(RuntimeError, match="not a unix stream socket"):
            api.passed_socket({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"})
        assert tcp.fileno() != -1  # still open: the check does not close what it refuses
