"""FleetLock on real guests (issue 17): two hosts booted in QEMU from the same 1.0.0
image, group with one slot, against etcd and `keel fleetlock serve` on the build
machine's loopback (guests reach it, and the TUF repository, as 10.0.2.2 through
QEMU's user network):

  1. both install 2.0.0, then ask for the slot: one reboots, the other waits; it
     reboots only after the first passed its health gate and gave the slot back in
     steady state (the server's log of holders with times, etcd's semaphore, and each
     guest's kernel start on the build machine's clock). Prints the time between the
     two reboots.
  2. 3.0.0 fails its health gate on the host that took the slot: it rolls back and
     keeps the slot, so the other host, with 3.0.0 installed, does not reboot. After
     `keel publish --halt 3.0.0` and `keel fleetlock release`, it drops its pending
     install and stays on 2.0.0.

  In the first, while the first host holds the slot and reboots, the FleetLock server
  is killed and another instance started on the same port: the slot and the order
  survive, because the state lives in etcd.

hostd's timer ticks every minute, so each wait for a lock, a release or a rollback is
up to a minute on top of the boots: about 13 minutes for both scenarios on a 2-core
build machine under TCG, three builds included (about 10 when test_update.py built
them already: the images are shared, built once a session by conftest.py's
update_images). Needs etcd (etcd-server)."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from composer.core.paths import PROJECT_ROOT, vm_root
from composer.fleet.etcd import Etcd
from composer.fleet.localetcd import running_etcd
from composer.fleet.semaphore import Semaphores
from composer.publish import repository, serve
from composer.testing import KeelVM
from composer.vm import runner
from hostd.fleetlock import app_specific_id
from tests.integration import guests
from tests.integration.guests import BOOT_ID, UpdateImages, keel

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed (etcd-server)"),
]

VERSIONS = {"1.0.0": "up-v1", "2.0.0": "up-v2", "3.0.0": "up-v3-unhealthy"}
GROUP = "keel-vms"
GUEST_GATEWAY = "10.0.2.2"
UPDATE_TIMEOUT = 900
HOSTD_TICK = 60.0
S = TypeVar("S")
T = TypeVar("T")


@dataclass(frozen=True)
class Change:
    """One line of the server's log: a slot taken or given back, and the holders after."""

    at: float
    what: str  # lock, unlock
    new: bool  # False: "already held" / "not held"
    node: str
    holders: tuple[str, ...]


def changes(log: Path) -> list[Change]:
    pattern = re.compile(
        r"keel fleetlock: (\S+) (lock|unlock)( \((?:already|not) held\))? "
        r"group=\S+ id=(\S+) holders=(\S+)"
    )
    found = []
    for line in log.read_text().splitlines():
        match = pattern.search(line)
        if match:
            at = datetime.strptime(match[1], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            holders = () if match[5] == "-" else tuple(match[5].split(","))
            found.append(Change(at.timestamp(), match[2], not match[3], match[4], holders))
    return found


def both(action: Callable[[S], T], hosts: list[S]) -> list[T]:
    """action on every host at once (threads); re-raises the first failure."""
    results: list[Any] = [None] * len(hosts)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = action(hosts[index])
        except BaseException as error:  # handed to the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(hosts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def sh(vm: KeelVM, command: str, timeout: float = 120) -> str:
    return vm.run(command, check=True, timeout=timeout).stdout


def keelctl_json(vm: KeelVM, args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(sh(vm, f"keelctl {args} --json", UPDATE_TIMEOUT))
    return result


def status(vm: KeelVM) -> dict[str, Any]:
    return keelctl_json(vm, "status")


def kernel_start(vm: KeelVM) -> float:
    """When the guest's kernel started, on the build machine's clock (time.time())."""
    before = time.time()
    uptime = float(sh(vm, "cat /proc/uptime").split()[0])
    return (before + time.time()) / 2 - uptime


class Fleet:
    """The session's keys, builds, repository, etcd, FleetLock server and two hosts."""

    def __init__(self, work: Path, images: UpdateImages) -> None:
        self.work = work
        self.images = images
        self.keys = images.copy_keys(work / "keys")
        self.repo = work / "repo"
        self.server_log = work / "fleetlock.log"
        self.etcd_url = ""
        self.lock_url = ""  # as the guests reach it
        self.repo_url = ""
        self.hosts: list[KeelVM] = []
        self.server: subprocess.Popen[str] | None = None
        self.server_port = 0

    def start_server(self) -> None:
        """`keel fleetlock serve` on the same port every time (the guests know it)."""
        self.server, self.server_port = start_fleetlock(
            self.etcd_url, self.server_log, self.server_port
        )

    def kill_server(self) -> None:
        assert self.server is not None
        self.server.kill()
        self.server.wait(10)
        self.server = None

    def publish(self, version: str) -> None:
        repository.publish(self.repo, self.images.path(VERSIONS[version]), self.keys, force=True)

    def node(self, vm: KeelVM) -> str:
        """The id the host sends to the server (its machine-id hashed for Keel)."""
        return app_specific_id(sh(vm, "cat /etc/machine-id"))

    def holders(self) -> tuple[str, ...]:
        semaphore, _ = Semaphores(Etcd(self.etcd_url)).read(GROUP)
        return tuple(semaphore.holders)

    def wait_for_holders(self, expected: tuple[str, ...], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.holders() != expected:
            assert time.monotonic() < deadline, (
                f"holders {self.holders()}, not {expected} after {timeout:.0f}s:\n"
                + self.server_log.read_text()[-3000:]
            )
            time.sleep(1)

    def set_policy(self, vm: KeelVM, reboot: str) -> None:
        """This repository, no scheduled checks (every update here is one the test
        starts), the window always open, and the given reboot strategy."""
        policy = {
            "repository": self.repo_url,
            "reboot": reboot,
            "check_interval": "never",
            "window": {"start": "00:00", "duration": "24h"},
            "fleet_lock": {"base_url": self.lock_url, "group": GROUP},
        }
        sh(vm, f"mkdir -p /etc/keel && echo '{json.dumps(policy)}' > /etc/keel/update.json")


def start_fleetlock(etcd_url: str, log: Path, port: int = 0) -> tuple[subprocess.Popen[str], int]:
    with log.open("a") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "composer.cli", "fleetlock", "serve", "--etcd", etcd_url,
             "--bind", "127.0.0.1", "--port", str(port), "--slots", "1"],
            stdout=subprocess.PIPE, stderr=handle, text=True, cwd=PROJECT_ROOT,
        )  # fmt: skip
    assert process.stdout is not None
    url = process.stdout.readline().strip()  # the first line, as `keel serve`
    match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/?", url)
    if match is None:
        process.kill()
        process.wait(10)
        pytest.fail(f"keel fleetlock serve printed {url!r}:\n{log.read_text()}")
    return process, int(match[1])


@pytest.fixture(scope="module")
def fleet(update_images: UpdateImages) -> Iterator[Fleet]:
    # Not tmp_path_factory: other pytest sessions prune its folders (see test_update.py).
    fleet = Fleet(Path(tempfile.mkdtemp(prefix="keel-fleet-vms-")), update_images)
    for version, definition in VERSIONS.items():
        started = time.monotonic()
        update_images.build(definition)
        print(f"\nbuilt {version} in {time.monotonic() - started:.0f}s")
    fleet.publish("1.0.0")
    with running_etcd(fleet.work / "etcd") as etcd_url, serve.serving(fleet.repo) as url:
        fleet.etcd_url = etcd_url
        fleet.repo_url = url.replace("127.0.0.1", GUEST_GATEWAY).replace("localhost", GUEST_GATEWAY)
        try:
            fleet.start_server()
            fleet.lock_url = f"http://{GUEST_GATEWAY}:{fleet.server_port}"
            started = time.monotonic()
            # One after the other, from this thread: QEMU dies with the thread that
            # started it (die_with_parent is PR_SET_PDEATHSIG), and two guests booting
            # at once on two cores take as long as one after the other.
            for name in "ab":
                fleet.hosts.append(
                    KeelVM.start(
                        runner.RunOptions(
                            image=update_images.path(VERSIONS["1.0.0"]),
                            name=f"fleet-{secrets.token_hex(3)}-{name}",
                            die_with_parent=True,
                        ),
                        vm_root(),
                    )
                )
            both(guests.wait_for_hostd, fleet.hosts)
            print(f"two hosts up in {time.monotonic() - started:.0f}s")
            for vm in fleet.hosts:
                fleet.set_policy(vm, "manual")
            yield fleet
        finally:
            for vm in fleet.hosts:
                try:
                    vm.stop()
                finally:
                    vm.kill()
                shutil.rmtree(vm.vm_dir.path, ignore_errors=True)
            if fleet.server is not None:
                fleet.kill_server()
            print(f"fleetlock server log:\n{fleet.server_log.read_text()}")
            shutil.rmtree(fleet.work, ignore_errors=True)


def install(fleet: Fleet, version: str) -> None:
    """Publish version and install it on both hosts at once, without rebooting; then
    switch both to the fleet_lock strategy."""
    for vm in fleet.hosts:
        fleet.set_policy(vm, "manual")
    fleet.publish(version)
    for result in both(lambda vm: keelctl_json(vm, "update"), fleet.hosts):
        assert result == {**result, "result": "installed", "version": version}, result
        assert not result["rebooting"]
    for vm in fleet.hosts:
        fleet.set_policy(vm, "fleet_lock")


def test_one_slot_serialises_the_two_reboots(fleet: Fleet) -> None:
    install(fleet, "2.0.0")
    nodes = [fleet.node(vm) for vm in fleet.hosts]
    assert nodes[0] != nodes[1]
    old_boots = [vm.boot_id() for vm in fleet.hosts]
    # Both ask for the slot at once (an installed update, asked again: only the
    # reboot strategy decides); exactly one gets it and reboots.
    answers = both(lambda vm: keelctl_json(vm, "update"), fleet.hosts)
    assert [a["result"] for a in answers] == ["already installed"] * 2, answers
    rebooting = [a["rebooting"] for a in answers]
    assert sorted(rebooting) == [False, True], answers
    first, second = (0, 1) if rebooting[0] else (1, 0)
    a, b = fleet.hosts[first], fleet.hosts[second]
    lock_b = status(b)["fleet"]["lock"]
    assert not lock_b["held"] and lock_b["last_answer"]["kind"] == "failed_lock", lock_b

    # The server dies while a holds the slot and reboots; another instance takes its
    # place on the same port and finds the holder in etcd, so b still waits for a.
    fleet.kill_server()
    fleet.start_server()
    assert fleet.holders() == (nodes[first],)

    guests.wait_for_version(a, "2.0.0", old_boots[first], UPDATE_TIMEOUT)
    started_a = kernel_start(a)
    # a came up in 2.0.0 and passed its gate; b, refused, has not moved (unless a gave
    # the slot back already and b took it: then the times below tell).
    if not any(c.what == "lock" and c.node == nodes[second] for c in changes(fleet.server_log)):
        assert b.boot_id() == old_boots[second]
    guests.wait_for_version(b, "2.0.0", old_boots[second], UPDATE_TIMEOUT)
    started_b = kernel_start(b)
    # b gives its slot back too, once its own gate passed (a tick after hostd starts).
    fleet.wait_for_holders((), 3 * HOSTD_TICK)

    log = changes(fleet.server_log)
    assert all(len(c.holders) <= 1 for c in log), log
    taken = [c for c in log if c.what == "lock" and c.new]
    assert [c.node for c in taken] == [nodes[first], nodes[second]], log
    released_a = next(c for c in log if c.what == "unlock" and c.new and c.node == nodes[first])
    released_b = next(c for c in log if c.what == "unlock" and c.new and c.node == nodes[second])
    assert taken[0].at < started_a < released_a.at  # a rebooted with the slot
    assert released_a.at < taken[1].at < started_b < released_b.at  # b only after a gave it back
    for vm in fleet.hosts:
        state = status(vm)
        assert state["last_result"]["result"] == "succeeded", state
        assert not state["fleet"]["lock"]["held"], state
    print(
        f"\nreboot serialisation (1 slot, 2 hosts): {started_b - started_a:.1f}s between the "
        f"two kernel starts; slot held by the first {released_a.at - taken[0].at:.1f}s "
        f"(reboot, health gate, next tick), taken by the second "
        f"{taken[1].at - released_a.at:.1f}s after it was given back, "
        f"{taken[1].at - taken[0].at:.1f}s between the two grants"
    )


def test_a_failed_version_stops_the_group_until_halted_and_released(fleet: Fleet) -> None:
    install(fleet, "3.0.0")
    nodes = [fleet.node(vm) for vm in fleet.hosts]
    old_boots = [vm.boot_id() for vm in fleet.hosts]
    answers = both(lambda vm: keelctl_json(vm, "update"), fleet.hosts)
    rebooting = [a["rebooting"] for a in answers]
    assert sorted(rebooting) == [False, True], answers
    first, second = (0, 1) if rebooting[0] else (1, 0)
    a, b = fleet.hosts[first], fleet.hosts[second]

    # a boots 3.0.0, fails its gate, rolls back to 2.0.0 and keeps the slot.
    guests.wait_for_version(a, "2.0.0", old_boots[first], UPDATE_TIMEOUT)
    state = status(a)
    assert state["last_result"]["result"] == "rolled-back", state
    assert state["last_result"]["version"] == "3.0.0", state
    deadline = time.monotonic() + 3 * HOSTD_TICK
    while status(a)["fleet"]["lock"]["held_after_failure"] != "3.0.0":
        assert time.monotonic() < deadline, status(a)["fleet"]
        time.sleep(5)
    assert fleet.holders() == (nodes[first],)
    # b still waits with 3.0.0 installed, on the same boot.
    assert b.boot_id() == old_boots[second]
    state = status(b)
    assert (state["phase"], state["booted"]["version"]) == ("installed", "2.0.0"), state

    keel("publish", "--repo", str(fleet.repo), "--keys", str(fleet.keys), "--halt", "3.0.0")
    keel("fleetlock", "release", "--etcd", fleet.etcd_url, GROUP, nodes[first])
    # b's next check (here the operator's; hostd's timer would look before rebooting)
    # drops the halted version instead of booting it.
    assert keelctl_json(b, "update")["result"] == "up-to-date"
    state = status(b)
    assert state["phase"] == "idle", state
    assert state["last_result"] == {**state["last_result"], "result": "halted"}, state
    # If b's timer took the free slot before that check, it found 3.0.0 halted, did
    # not reboot, and gives the slot back on its next tick.
    fleet.wait_for_holders((), 2 * HOSTD_TICK)
    assert sh(b, f"cat {BOOT_ID}").strip() == old_boots[second]
    assert status(b)["booted"]["version"] == "2.0.0"
