"""Reboot coordination through a FleetLock server (the `fleet_lock` reboot strategy).

The protocol is the one Zincati speaks, so airlock and `keel fleetlock serve` both
answer it (docs/fleet.md):

  POST {base}/v1/pre-reboot     take a slot in the group's semaphore before rebooting
  POST {base}/v1/steady-state   give it back once the new version is known good
  header  fleet-lock-protocol: true
  body    {"client_params": {"id": ID, "group": GROUP}}

200 is success, anything else a failure (the body may say why as {"kind", "value"}).
ID is an app-specific hash of /etc/machine-id, never the machine-id itself: HMAC-SHA256
keyed by the machine-id's 16 bytes over Keel's own app id, cut to 16 bytes and marked
as a version 4 UUID, which is what systemd's sd_id128_get_machine_app_specific() does.

hostd is root and talks to the network here, so every answer is read under bounds: a
connect and read timeout, a deadline for the whole request, at most MAX_ANSWER bytes,
http(s) only and no redirects (http.client never follows one).

The lock is taken for one version and held across its reboot. It is given back only
when the booted version passed its health gate. A host that rolled back keeps it
(on_failure "hold"): the rest of the group then does not reboot into the version
that failed here, until an operator releases the slot on the server or a newer
version is installed; on_failure "release" gives it back at once."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hostd.files import write_atomically

log = logging.getLogger("keel.hostd")

MACHINE_ID = Path("/etc/machine-id")
# Keel's application id for sd_id128_get_machine_app_specific(); fixed forever, since
# changing it changes every host's id (and strands the slots they hold).
APP_ID = bytes.fromhex("c2f23c8a6a1f45a888074825cebeb1bc")
# Zincati's group grammar; airlock refuses anything else.
GROUP = re.compile(r"^[a-zA-Z0-9.-]+$")
PRE_REBOOT = "/v1/pre-reboot"
STEADY_STATE = "/v1/steady-state"
HEADER = "fleet-lock-protocol"
ON_FAILURE = ("hold", "release")
STATE_FILE = "fleetlock.json"

# Bounds on one request.
TIMEOUT = 10.0  # connect, and each read
DEADLINE = 30.0  # the whole answer
MAX_ANSWER = 16 * 1024
# Between failed attempts: BACKOFF_BASE doubled each time, at most BACKOFF_MAX, with
# up to a quarter more at random, so a fleet that lost its server does not come back
# in step.
BACKOFF_BASE = 15.0
BACKOFF_MAX = 15 * 60.0


class FleetLockError(Exception):
    pass


def app_specific_id(machine_id: str, app_id: bytes = APP_ID) -> str:
    """The machine-id (32 hex digits) hashed for one application, as sd-id128 does it;
    written as 32 lower-case hex digits, the way Zincati sends its id."""
    try:
        key = bytes.fromhex(machine_id.strip())
    except ValueError:
        raise FleetLockError(f"machine-id {machine_id.strip()!r} is not 32 hex digits") from None
    if len(key) != 16 or len(app_id) != 16:
        raise FleetLockError("a machine-id and an app id are 128 bits each")
    digest = bytearray(hmac.new(key, app_id, hashlib.sha256).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x40  # UUID version 4
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return digest.hex()


def node_id(machine_id: Path = MACHINE_ID) -> str:
    try:
        return app_specific_id(machine_id.read_text())
    except OSError as error:
        raise FleetLockError(f"cannot read {machine_id}: {error}") from None


@dataclass(frozen=True)
class FleetLockConfig:
    base_url: str = ""
    group: str = "default"
    on_failure: str = "hold"


def check_config(config: FleetLockConfig) -> None:
    """Raises ValueError with the problem (policy.py turns it into a PolicyError)."""
    parts = urlsplit(config.base_url)
    try:
        parts.port  # noqa: B018 (raises for a port that is no number)
    except ValueError:
        raise ValueError(f"fleet_lock.base_url {config.base_url!r} has a bad port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"fleet_lock.base_url {config.base_url!r} is not an http(s) URL")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("fleet_lock.base_url may not carry a query, fragment or credentials")
    if not GROUP.match(config.group) or len(config.group) > 253:
        raise ValueError(f"fleet_lock.group {config.group!r} must match {GROUP.pattern}")
    if config.on_failure not in ON_FAILURE:
        raise ValueError(f"fleet_lock.on_failure is {config.on_failure!r}; one of hold, release")


def request_body(node: str, group: str) -> bytes:
    return json.dumps({"client_params": {"id": node, "group": group}}).encode()


@dataclass(frozen=True)
class Answer:
    """One answer of the server (or why there was none), as status shows it."""

    endpoint: str
    status: int  # 0: no HTTP answer (connection refused, timeout, ...)
    kind: str
    value: str
    at: float

    @property
    def ok(self) -> bool:
        return self.status == 200


def post(
    base_url: str, endpoint: str, body: bytes, *, now: Callable[[], float] = time.time
) -> Answer:
    """One POST, bounded in time and size; never raises for network trouble."""
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/") + endpoint
    connection: http.client.HTTPConnection
    try:
        if parts.scheme == "https":
            connection = http.client.HTTPSConnection(
                parts.hostname or "", parts.port, timeout=TIMEOUT
            )
        elif parts.scheme == "http":
            connection = http.client.HTTPConnection(
                parts.hostname or "", parts.port, timeout=TIMEOUT
            )
        else:
            raise ValueError("not an http(s) URL")
    except ValueError as error:
        return Answer(endpoint, 0, "client_error", f"{base_url}: {error}"[:500], now())
    started = time.monotonic()
    # Each read has TIMEOUT, but a server sending a byte now and then passes every
    # one of them (headers included): past DEADLINE the socket is shut, which ends
    # whatever read is waiting.
    watchdog = threading.Timer(DEADLINE, _shut, args=(connection,))
    watchdog.daemon = True
    watchdog.start()
    try:
        connection.request(
            "POST",
            path,
            body=body,
            headers={HEADER: "true", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        raw = _read_bounded(response, started)
    except (OSError, http.client.HTTPException, FleetLockError) as error:
        return Answer(endpoint, 0, "client_error", f"{type(error).__name__}: {error}"[:500], now())
    finally:
        watchdog.cancel()
        connection.close()
    kind, value = "", ""
    if response.status != 200:
        kind, value = _error_details(raw, response.status)
    return Answer(endpoint, response.status, kind, value, now())


def _shut(connection: http.client.HTTPConnection) -> None:
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _read_bounded(response: http.client.HTTPResponse, started: float) -> bytes:
    received = b""
    while block := response.read1(MAX_ANSWER + 1 - len(received)):
        received += block
        if len(received) > MAX_ANSWER:
            raise FleetLockError(f"the answer is longer than {MAX_ANSWER} bytes")
        if time.monotonic() - started > DEADLINE:
            raise FleetLockError(f"the answer took longer than {DEADLINE:.0f} s")
    if time.monotonic() - started > DEADLINE:  # the watchdog ended it: cut short
        raise FleetLockError(f"the answer took longer than {DEADLINE:.0f} s")
    return received


def _error_details(raw: bytes, status: int) -> tuple[str, str]:
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if isinstance(data, dict):
        kind, value = data.get("kind"), data.get("value")
        if isinstance(kind, str) and isinstance(value, str):
            return kind[:100], value[:500]
    return "http_error", f"HTTP {status}"


class Backoff:
    """When the next attempt may go out after failures: exponential, capped, jittered."""

    def __init__(
        self,
        base: float = BACKOFF_BASE,
        cap: float = BACKOFF_MAX,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.base, self.cap, self.jitter = base, cap, jitter
        self.failures = 0
        self.next_at = 0.0

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def failed(self, now: float) -> float:
        """Record a failure at now; returns the delay before the next attempt."""
        # Capped before doubling further, so a long outage cannot overflow the float.
        delay: float = min(self.cap, self.base * 2.0 ** min(self.failures, 60))
        delay += delay * 0.25 * self.jitter()
        self.failures += 1
        self.next_at = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.next_at = 0.0


@dataclass(frozen=True)
class LockState:
    """What this host knows of its slot, persisted beside the update state."""

    held: bool = False
    version: str = ""  # the version the slot was taken for
    # The version that rolled back here while holding the slot (on_failure "hold").
    held_after_failure: str = ""
    last_answer: Answer | None = None
    group: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LockState:
        answer = data.get("last_answer")
        return cls(
            held=bool(data.get("held", False)),
            version=str(data.get("version", "")),
            held_after_failure=str(data.get("held_after_failure", "")),
            last_answer=Answer(**answer) if isinstance(answer, dict) else None,
            group=str(data.get("group", "")),
        )


Poster = Callable[[str, str, bytes], Answer]


@dataclass
class FleetLock:
    """The client side of one host: take the slot before a reboot, give it back in
    steady state. Every request that fails waits out the backoff; the agent's timer
    calls again, so nothing here sleeps while hostd's update lock is held."""

    state_dir: Path
    node: Callable[[], str] = node_id
    poster: Poster = field(default=lambda base, endpoint, body: post(base, endpoint, body))
    clock: Callable[[], float] = time.monotonic
    backoff: Backoff = field(default_factory=Backoff)
    # Whether this hostd has told the server it is in steady state since it started
    # (Zincati's initialization step: a slot held from before a crash is given back).
    announced: bool = False

    @property
    def path(self) -> Path:
        return self.state_dir / STATE_FILE

    def load(self) -> LockState:
        try:
            return LockState.from_json(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return LockState()
        except (ValueError, TypeError) as error:
            log.error(
                "fleet lock state %s unreadable (%s); assuming no slot held", self.path, error
            )
            return LockState()

    def save(self, state: LockState) -> None:
        write_atomically(self.path, json.dumps(state.to_json(), indent=2).encode() + b"\n")

    def _ask(self, config: FleetLockConfig, endpoint: str, state: LockState) -> LockState | None:
        """One request if the backoff allows; the new state (answer recorded) or None."""
        if not self.backoff.due(self.clock()):
            return None
        answer = self.poster(config.base_url, endpoint, request_body(self.node(), config.group))
        if answer.ok:
            self.backoff.succeeded()
        else:
            delay = self.backoff.failed(self.clock())
            log.warning(
                "fleet lock %s: %s %s %s; next attempt in %.0f s",
                endpoint, answer.status or "no answer", answer.kind, answer.value, delay,
            )  # fmt: skip
        return replace(state, last_answer=answer, group=config.group)

    def acquire(self, config: FleetLockConfig, version: str) -> bool:
        """Take a slot to reboot into version; True when the server granted it."""
        state = self.load()
        if state.held and state.version == version and not state.held_after_failure:
            return True
        asked = self._ask(config, PRE_REBOOT, state)
        if asked is None:
            return False
        if asked.last_answer is not None and asked.last_answer.ok:
            log.info("fleet lock: slot taken in group %s to reboot into %s", config.group, version)
            asked = replace(asked, held=True, version=version, held_after_failure="")
        self.save(asked)
        return asked.held and asked.version == version and not asked.held_after_failure

    def release(self, config: FleetLockConfig) -> bool:
        state = self.load()
        asked = self._ask(config, STEADY_STATE, state)
        if asked is None:
            return False
        released = asked.last_answer is not None and asked.last_answer.ok
        if released:
            if state.held:
                log.info("fleet lock: slot given back in group %s", config.group)
            asked = replace(asked, held=False, version="", held_after_failure="")
            self.announced = True
        self.save(asked)
        return released

    def settle(
        self,
        config: FleetLockConfig,
        *,
        healthy: bool,
        pending_version: str,
        rolled_back: str,
    ) -> None:
        """After the update state was reconciled with what booted, on every tick.

        healthy: the booted version passed its health gate (its entry is blessed).
        pending_version: a version installed and waiting for its reboot, if any.
        rolled_back: the version the last update result says rolled back, if any."""
        state = self.load()
        if state.held and rolled_back and rolled_back == state.version:
            if config.on_failure == "hold":
                if state.held_after_failure != rolled_back:
                    log.warning(
                        "fleet lock: %s rolled back; keeping the slot in group %s so the "
                        "group stops (release it on the server to go on)",
                        rolled_back, config.group,
                    )  # fmt: skip
                    self.save(replace(state, held_after_failure=rolled_back))
                return
        elif state.held_after_failure:
            return
        if not healthy:
            return  # steady state is a boot that passed its gate
        if state.held and pending_version and pending_version == state.version:
            return  # taken for a reboot that has not happened yet
        if state.held or not self.announced:
            self.release(config)

    def status(self) -> dict[str, Any]:
        state = self.load()
        return {
            "held": state.held,
            "version": state.version or None,
            "group": state.group or None,
            "held_after_failure": state.held_after_failure or None,
            "last_answer": asdict(state.last_answer) if state.last_answer else None,
            "next_attempt_in": max(0.0, round(self.backoff.next_at - self.clock(), 1)),
        }
