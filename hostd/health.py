"""The health gate: decides whether a boot of a not-yet-blessed entry is good.

keel-health.service runs it after multi-user.target, only when systemd-boot started
this boot from an entry with a tries counter (the LoaderBootCountPath EFI variable).
Passing blesses the entry: the counter is removed from its name. Failing records why
on var (so `keelctl status` can say it after the rollback), marks the entry bad
(+0-N, sorted last by systemd-boot) and reboots into the other slot.

This is what systemd-bless-boot does; Debian ships that in the `systemd-boot` package,
which a Keel image does not carry (it only needs `systemd-boot-efi`), and doing the
two renames here keeps the decision and its record in one place.

Checks, retried until a deadline because a fresh boot is still settling:
  - no failed systemd units
  - the Docker engine answers /_ping (when the image has Docker)
  - containers the image declares are running, and healthy if they have a check
  - every executable in /etc/keel/health.d/ exits 0

The Docker check wakes an engine that starts on demand; after a pass the gate puts it
back to sleep unless something runs in it (let_engine_sleep).
"""

from __future__ import annotations

import glob
import http.client
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hostd import slots
from hostd.esp import EspTree, read_efi_string
from hostd.files import write_atomically
from hostd.state import STATE_DIR

log = logging.getLogger("keel.health")

USER_CHECKS = Path("/etc/keel/health.d")
DOCKER_SOCKET = "/run/docker.sock"
DOCKER_UNIT = Path("/usr/lib/systemd/system/docker.service")
ENGINE_UNITS = ("docker.service", "containerd.service")
CONTAINER_DECLARATIONS = ("/usr/lib/keel/containers*.json", "/usr/lib/keel/containers/*.json")
DEADLINE = 60.0
RETRY_EVERY = 5.0
CHECK_TIMEOUT = 60.0
# Units that may be "failed" without the boot being bad: this very check while it
# runs is not failed yet, but a previous attempt in the same boot could be.
IGNORED_UNITS = ("keel-health.service",)


class CheckFailed(Exception):
    pass


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def docker_get(path: str) -> Any:
    connection = UnixHTTPConnection(DOCKER_SOCKET)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise CheckFailed(f"docker GET {path}: HTTP {response.status}")
    return json.loads(body) if body.strip().startswith((b"{", b"[")) else body.decode()


def check_failed_units() -> None:
    out = subprocess.run(
        ["systemctl", "list-units", "--failed", "--plain", "--no-legend", "--no-pager"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    failed = [line.split()[0] for line in out.splitlines() if line.strip()]
    failed = [unit for unit in failed if unit not in IGNORED_UNITS]
    if failed:
        raise CheckFailed(f"failed units: {', '.join(failed)}")


def check_docker() -> None:
    if not DOCKER_UNIT.exists():
        return
    try:
        docker_get("/_ping")
    except (OSError, CheckFailed) as error:
        raise CheckFailed(f"the Docker engine does not answer: {error}") from None


def declared_containers() -> list[str]:
    """Container names the image declares; the file format is read leniently."""
    names: list[str] = []
    for pattern in CONTAINER_DECLARATIONS:
        for path in sorted(glob.glob(pattern)):
            try:
                data = json.loads(Path(path).read_text())
            except (OSError, ValueError):
                continue
            items = data.get("services", []) if isinstance(data, dict) else data
            if isinstance(data, dict) and "name" in data:
                items = [data]
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    names.append(item["name"])
    return names


def check_containers() -> None:
    for name in declared_containers():
        try:
            info = docker_get(f"/containers/{name}/json")
        except (OSError, CheckFailed) as error:
            raise CheckFailed(f"container {name}: {error}") from None
        state = info.get("State", {})
        if not state.get("Running"):
            raise CheckFailed(f"container {name} is not running ({state.get('Status')})")
        health = (state.get("Health") or {}).get("Status")
        if health not in (None, "healthy"):
            raise CheckFailed(f"container {name} is {health}")


def check_user_scripts(folder: Path = USER_CHECKS) -> None:
    if not folder.is_dir():
        return
    for script in sorted(folder.iterdir()):
        if not script.is_file() or not os.access(script, os.X_OK):
            continue
        try:
            result = subprocess.run(
                [str(script)], capture_output=True, text=True, timeout=CHECK_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"{script} did not finish in {CHECK_TIMEOUT:.0f}s") from None
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip().splitlines()
            detail = f": {output[-1]}" if output else ""
            raise CheckFailed(f"{script} exited {result.returncode}{detail}")


CHECKS: tuple[Callable[[], None], ...] = (
    check_failed_units,
    check_docker,
    check_containers,
    check_user_scripts,
)


def run_checks(
    checks: tuple[Callable[[], None], ...] = CHECKS,
    deadline: float = DEADLINE,
    retry_every: float = RETRY_EVERY,
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """None when every check passes before the deadline, else the last failure."""
    give_up = time.monotonic() + deadline
    while True:
        try:
            for check in checks:
                check()
            return None
        except CheckFailed as failure:
            if time.monotonic() + retry_every > give_up:
                return str(failure)
            log.info("health: not yet (%s); retrying", failure)
            sleep(retry_every)


def engine_state() -> str:
    """docker.service's ActiveState: active, activating, inactive, failed, ..."""
    return subprocess.run(
        ["systemctl", "show", "--property=ActiveState", "--value", "docker.service"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


def let_engine_sleep() -> None:
    """Stop the engine that check_docker woke through docker.socket, so the host idles
    as on any other boot (dockerd and containerd hold about 45 MB; issue 18). The
    socket stays and starts it again for the next client. Left running when anything
    runs in it by now: a client that woke it too may be using it."""
    try:
        running = docker_get("/containers/json")
    except (OSError, CheckFailed, ValueError) as error:
        log.info("health: leaving the engine running: cannot list its containers (%s)", error)
        return
    if running:
        log.info("health: leaving the engine running: %d containers run in it", len(running))
        return
    log.info("health: stopping the engine this check started; docker.socket stays")
    subprocess.run(["systemctl", "stop", *ENGINE_UNITS], check=False)


def record(result: str, reason: str, state_dir: Path = STATE_DIR) -> None:
    release = slots.read_release()
    entry_path = read_efi_string("LoaderBootCountPath") or ""
    data = {
        "version": release.version,
        "entry": Path(entry_path.replace("\\", "/")).name,
        "result": result,
        "reason": reason,
        "at": time.time(),
    }
    write_atomically(state_dir / "health.json", json.dumps(data, indent=2).encode() + b"\n")


def other_slot_bootable(esp: EspTree) -> bool:
    """Whether marking this boot bad leads somewhere: a bad entry still boots when it is
    the only one, so without another slot a reboot would only loop."""
    booted = slots.booted_slot()
    entry = esp.slot_entry(slots.other_slot(booted))
    return entry is not None and entry.state != "bad"


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    esp = EspTree()
    entry = esp.counted_boot_entry()
    if entry is None:
        log.info("health: this boot's entry is not counting; nothing to decide")
        return 0
    log.info("health: checking the boot of %s", entry.filename)
    engine_was_asleep = DOCKER_UNIT.exists() and engine_state() in ("inactive", "failed")
    failure = run_checks()
    if failure is None:
        record("passed", "all health checks passed")
        log.info("health: passed; blessed %s", esp.bless(entry))
        if engine_was_asleep:
            let_engine_sleep()
        return 0
    log.error("health: FAILED: %s", failure)
    record("failed", failure)
    if not other_slot_bootable(esp):
        log.error("health: no other slot to fall back to; staying up on this version")
        return 1
    log.error("health: marked %s; rebooting into the previous version", esp.mark_bad(entry))
    subprocess.run(["systemctl", "reboot"], check=False)
    return 1


if __name__ == "__main__":
    sys.exit(main())
