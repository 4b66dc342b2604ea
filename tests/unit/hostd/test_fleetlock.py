"""The FleetLock client: the id, what goes over the wire, retries, and the strategy as
the updater runs it (window, lock, steady state, rollback)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hostd import cli, fleetlock
from hostd.fleet import Coordinator
from hostd.fleetlock import Answer, Backoff, FleetLock, FleetLockConfig, app_specific_id
from hostd.policy import Policy, PolicyError, Window, policy_from
from tests.unit.hostd.hosts import Host, boot

# Reference values printed by systemd itself, not by this code: with /etc/machine-id
# bind-mounted over by a file holding MACHINE_ID, `systemd-id128 machine-id
# --app-specific=APP` (systemd 252, which calls sd_id128_get_machine_app_specific).
SYSTEMD_VECTORS = [
    (
        "0123456789abcdef0123456789abcdef",
        "c2f23c8a6a1f45a888074825cebeb1bc",  # Keel's app id
        "9e6708d5b8df4d14a793e251e4555c3a",
    ),
    (
        "f00dfeedcafebeef0011223344556677",
        "de35106b6ec24688b63afddaa156679b",  # Zincati's app id
        "c784d4ea11414416aa6fc3af4e4efa04",
    ),
]


@pytest.mark.parametrize(("machine_id", "app", "expected"), SYSTEMD_VECTORS)
def test_the_id_is_what_systemd_derives_for_the_app(
    machine_id: str, app: str, expected: str
) -> None:
    assert app_specific_id(machine_id + "\n", bytes.fromhex(app)) == expected


def test_the_id_is_a_v4_uuid_and_not_the_machine_id(tmp_path: Path) -> None:
    (tmp_path / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    node = fleetlock.node_id(tmp_path / "machine-id")
    assert node == "9e6708d5b8df4d14a793e251e4555c3a"  # Keel's app id is APP_ID
    assert node[12] == "4" and node[16] in "89ab"
    assert "0123456789abcdef" not in node
    with pytest.raises(fleetlock.FleetLockError, match="not 32 hex digits"):
        app_specific_id("uninitialized")


# --- the wire ---------------------------------------------------------------------


class Recorder:
    """A local HTTP server that records requests and answers what a test sets."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.body = b""
        self.headers: dict[str, str] = {}
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                recorder.requests.append({
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": self.rfile.read(length),
                })  # fmt: skip
                self.send_response(recorder.status)
                for name, value in recorder.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(recorder.body)))
                self.end_headers()
                self.wfile.write(recorder.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/fleet/"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    thread = threading.Thread(target=rec.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()


@pytest.mark.parametrize("endpoint", [fleetlock.PRE_REBOOT, fleetlock.STEADY_STATE])
def test_requests_are_zincatis(recorder: Recorder, endpoint: str) -> None:
    answer = fleetlock.post(recorder.url, endpoint, fleetlock.request_body("abc123", "workers"))
    assert answer.ok and answer.status == 200
    (request,) = recorder.requests
    assert request["path"] == "/fleet" + endpoint
    assert request["headers"]["fleet-lock-protocol"] == "true"
    assert json.loads(request["body"]) == {"client_params": {"id": "abc123", "group": "workers"}}


def test_an_error_answer_keeps_kind_and_value(recorder: Recorder) -> None:
    recorder.status = 500
    recorder.body = b'{"kind": "failed_lock", "value": "all 1 semaphore slots currently locked"}'
    answer = fleetlock.post(recorder.url, fleetlock.PRE_REBOOT, b"{}")
    assert (answer.status, answer.kind) == (500, "failed_lock")
    assert answer.value == "all 1 semaphore slots currently locked" and not answer.ok
    recorder.body = b"<html>bad gateway</html>"
    recorder.status = 502
    answer = fleetlock.post(recorder.url, fleetlock.PRE_REBOOT, b"{}")
    assert (answer.status, answer.kind, answer.value) == (502, "http_error", "HTTP 502")


def test_a_redirect_is_a_failure_and_not_followed(recorder: Recorder) -> None:
    recorder.status = 307
    recorder.headers = {"Location": "file:///etc/shadow"}
    answer = fleetlock.post(recorder.url, fleetlock.PRE_REBOOT, b"{}")
    assert answer.status == 307 and not answer.ok
    assert len(recorder.requests) == 1


def test_a_huge_answer_is_cut_off(recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder.status = 500
    recorder.body = b"x" * (fleetlock.MAX_ANSWER * 4)
    answer = fleetlock.post(recorder.url, fleetlock.PRE_REBOOT, b"{}")
    assert answer.status == 0 and "longer than" in answer.value


def test_a_server_that_trickles_is_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """A byte every 0.2 s passes every read timeout; the deadline ends it."""
    monkeypatch.setattr(fleetlock, "TIMEOUT", 1.0)
    monkeypatch.setattr(fleetlock, "DEADLINE", 1.0)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def trickle() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 100:
                if stop.is_set():
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(0.2)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    started = time.monotonic()
    answer = fleetlock.post(f"http://127.0.0.1:{listener.getsockname()[1]}/", "/v1/x", b"{}")
    took = time.monotonic() - started
    stop.set()
    listener.close()
    assert answer.status == 0 and not answer.ok
    assert took < 3


def test_no_server_is_an_answer_too() -> None:
    answer = fleetlock.post("http://127.0.0.1:1/", fleetlock.PRE_REBOOT, b"{}")
    assert answer.status == 0 and answer.kind == "client_error" and not answer.ok


@pytest.mark.parametrize(
    "url",
    [
        "ftp://lock.example/",
        "file:///tmp/x",
        "http://user:pw@lock.example/",
        "lock.example",
        "http://lock.example:http/",
        "http://lock.example/?next=file:///",
    ],
)
def test_only_plain_http_urls_are_accepted(url: str) -> None:
    with pytest.raises(PolicyError, match="base_url"):
        policy_from({"reboot": "fleet_lock", "fleet_lock": {"base_url": url}})


def test_group_and_on_failure_are_checked() -> None:
    with pytest.raises(PolicyError, match="group"):
        policy_from(
            {"reboot": "fleet_lock", "fleet_lock": {"base_url": "http://l/", "group": "a b"}}
        )
    with pytest.raises(PolicyError, match="on_failure"):
        policy_from(
            {"reboot": "fleet_lock", "fleet_lock": {"base_url": "http://l/", "on_failure": "x"}}
        )


def test_the_host_file_overrides_fleet_lock_key_by_key(tmp_path: Path) -> None:
    (tmp_path / "image.json").write_text(json.dumps({
        "reboot": "fleet_lock", "fleet_lock": {"base_url": "http://lock:3333/", "group": "web"},
    }))  # fmt: skip
    (tmp_path / "host.json").write_text(json.dumps({"fleet_lock": {"on_failure": "release"}}))
    from hostd.policy import load_policy

    policy = load_policy(tmp_path / "image.json", tmp_path / "host.json")
    assert policy.fleet_lock == FleetLockConfig("http://lock:3333/", "web", "release")


# --- retries ------------------------------------------------------------------------


class FakeServer:
    """A poster that answers from a script, and a clock the test moves."""

    def __init__(self, answers: list[int]) -> None:
        self.answers = answers
        self.calls: list[tuple[float, str, dict[str, Any]]] = []
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    def __call__(self, base: str, endpoint: str, body: bytes) -> Answer:
        self.calls.append((self.now, endpoint, json.loads(body)))
        status = self.answers.pop(0) if self.answers else 200
        kind = "" if status == 200 else "failed_lock"
        return Answer(endpoint, status, kind, "full" if status != 200 else "", self.now)


CONFIG = FleetLockConfig("http://lock.test:3333/", "workers", "hold")


def fake_lock(tmp_path: Path, server: FakeServer) -> FleetLock:
    return FleetLock(
        tmp_path,
        node=lambda: "node-1",
        poster=server,
        clock=server.clock,
        backoff=Backoff(base=10, cap=80, jitter=lambda: 0.0),
    )


def test_failures_back_off_exponentially_up_to_a_cap(tmp_path: Path) -> None:
    server = FakeServer([500] * 6)
    lock = fake_lock(tmp_path, server)
    # The agent's timer calls every 5 s here; only calls past the backoff go out.
    for _ in range(100):
        lock.acquire(CONFIG, "2.0.0")
        server.now += 5
    times = [t - 1000 for t, _, _ in server.calls]
    assert times[:7] == [0, 10, 30, 70, 150, 230, 310]  # waits 10, 20, 40, 80, 80, 80
    assert lock.load().held  # the 7th attempt got a 200
    assert len(server.calls) == 7  # and a held lock asks no more


def test_jitter_spreads_retries_by_at_most_a_quarter() -> None:
    backoff = Backoff(base=100, cap=1000, jitter=lambda: 1.0)
    assert backoff.failed(0) == 125
    assert backoff.failed(0) == 250
    backoff.succeeded()
    assert backoff.due(0) and backoff.failed(0) == 125


def test_a_granted_lock_is_recorded_with_the_answer(tmp_path: Path) -> None:
    server = FakeServer([200])
    lock = fake_lock(tmp_path, server)
    assert lock.acquire(CONFIG, "2.0.0")
    (_, endpoint, body) = server.calls[0]
    assert endpoint == "/v1/pre-reboot"
    assert body == {"client_params": {"id": "node-1", "group": "workers"}}
    status = lock.status()
    assert status["held"] and status["version"] == "2.0.0" and status["group"] == "workers"
    assert status["last_answer"]["status"] == 200


# --- the window and the lock ------------------------------------------------------------


def fleet_policy(on_failure: str = "hold", **window: Any) -> Policy:
    return Policy(
        reboot="fleet_lock",
        window=Window(**window) if window else Window(start="00:00", duration="24h"),
        fleet_lock=FleetLockConfig("http://lock.test:3333/", "workers", on_failure),
    )


def test_the_lock_is_asked_for_only_inside_the_window(tmp_path: Path) -> None:
    server = FakeServer([])
    coordinator = Coordinator(tmp_path, node=lambda: "node-1")
    coordinator.lock = fake_lock(tmp_path, server)
    policy = fleet_policy(days=("Sat",), start="02:00", duration="2h")
    saturday = datetime(2026, 12, 5, 1, 30)
    assert not coordinator.may_reboot(policy, "2.0.0", saturday)
    assert server.calls == []
    assert coordinator.may_reboot(policy, "2.0.0", saturday.replace(hour=2, minute=30))
    assert [c[1] for c in server.calls] == ["/v1/pre-reboot"]
    assert not coordinator.may_reboot(policy, "2.0.0", datetime(2026, 12, 6, 2, 30))  # Sunday


def test_a_full_group_keeps_the_host_from_rebooting(tmp_path: Path) -> None:
    server = FakeServer([500])
    coordinator = Coordinator(tmp_path, node=lambda: "node-1")
    coordinator.lock = fake_lock(tmp_path, server)
    assert not coordinator.may_reboot(fleet_policy(), "2.0.0", datetime(2026, 12, 5, 3, 0))
    answer = coordinator.status()["lock"]["last_answer"]
    assert (answer["status"], answer["kind"]) == (500, "failed_lock")


# --- the strategy end to end in the updater ------------------------------------------------


def with_fleet(host: Host, server: FakeServer, policy: Policy) -> None:
    """The host's updater with policy and the fake server (again after every boot())."""
    host.updater.paths.policy = lambda: Policy(
        repository=f"file://{host.repo}",
        reboot=policy.reboot,
        window=policy.window,
        fleet_lock=policy.fleet_lock,
    )
    host.updater.fleet.lock = fake_lock(host.root / "state", server)


def bless(host: Host, version: str, slot: str) -> None:
    entries = host.root / "esp/loader/entries"
    (entries / f"keel-{version}-{slot}+3.conf").rename(entries / f"keel-{version}-{slot}.conf")


def test_lock_reboot_health_gate_then_release(host: Host) -> None:
    server = FakeServer([500, 200])
    policy = fleet_policy()
    with_fleet(host, server, policy)
    host.publish("2.0.0")
    result = host.updater.update()
    assert result["rebooting"] is False  # the group was full
    assert host.reboots == []
    assert host.updater.status()["fleet"]["lock"]["last_answer"]["kind"] == "failed_lock"
    server.now += 3600
    assert host.updater.reboot_if_due()
    assert host.reboots == ["reboot"]
    assert [c[1] for c in server.calls] == ["/v1/pre-reboot", "/v1/pre-reboot"]

    boot(host, "b", "2.0.0")
    with_fleet(host, server, policy)
    host.updater.reconcile()
    host.updater.fleet.settle(host.updater)  # trial: the gate has not passed yet
    assert len(server.calls) == 2 and host.updater.fleet.lock.load().held

    bless(host, "2.0.0", "b")
    host.updater.reconcile()
    host.updater.fleet.settle(host.updater)
    assert [c[1] for c in server.calls][-1] == "/v1/steady-state"
    assert not host.updater.fleet.lock.load().held
    host.updater.fleet.settle(host.updater)  # steady: no more requests
    assert len(server.calls) == 3


def roll_back(host: Host, server: FakeServer, policy: Policy) -> None:
    host.publish("2.0.0")
    host.updater.update()
    assert host.updater.reboot_if_due()
    entries = host.root / "esp/loader/entries"
    (entries / "keel-2.0.0-b+3.conf").rename(entries / "keel-2.0.0-b+0-3.conf")
    boot(host, "a", "1.0.0")
    with_fleet(host, server, policy)
    host.updater.reconcile()
    host.updater.fleet.settle(host.updater)


def test_a_rolled_back_host_keeps_its_slot(host: Host) -> None:
    server = FakeServer([])
    policy = fleet_policy("hold")
    with_fleet(host, server, policy)
    roll_back(host, server, policy)
    assert [c[1] for c in server.calls] == ["/v1/pre-reboot"]
    lock = host.updater.status()["fleet"]["lock"]
    assert lock["held"] and lock["held_after_failure"] == "2.0.0"
    text = cli.show_status(host.updater.status())
    assert "lock:     held for 2.0.0 in group workers (kept: 2.0.0 rolled back)" in text
    assert "last answer to /v1/pre-reboot" in text and "200 OK" in text
    # The host restarts: still no steady-state.
    with_fleet(host, server, policy)
    host.updater.fleet.settle(host.updater)
    assert len(server.calls) == 1


def test_a_rolled_back_host_releases_with_on_failure_release(host: Host) -> None:
    server = FakeServer([])
    policy = fleet_policy("release")
    with_fleet(host, server, policy)
    roll_back(host, server, policy)
    assert [c[1] for c in server.calls] == ["/v1/pre-reboot", "/v1/steady-state"]
    assert not host.updater.fleet.lock.load().held


def test_a_started_host_announces_steady_state_once(host: Host) -> None:
    server = FakeServer([])
    with_fleet(host, server, fleet_policy())
    host.updater.fleet.settle(host.updater)
    host.updater.fleet.settle(host.updater)
    assert [c[1] for c in server.calls] == ["/v1/steady-state"]
