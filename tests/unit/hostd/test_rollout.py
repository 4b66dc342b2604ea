"""Phased rollouts and halts: the offset math, and `keel publish --rollout/--halt` as
hosts on files see them."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from composer.core.errors import KeelError
from composer.publish import repository
from hostd import rollout
from hostd.fleet import Coordinator
from hostd.policy import Policy
from tests.unit.hostd.hosts import Host, entries, make_bundle

DAY = 86400


def test_the_offset_is_the_documented_hash() -> None:
    node = "9e6708d5b8df4d14a793e251e4555c3a"
    digest = hashlib.sha256(b"keel-rollout\0" + node.encode()).digest()
    expected = int.from_bytes(digest[:8], "big") * DAY // 2**64
    assert rollout.offset(node, DAY) == expected
    assert rollout.offset(node, DAY) == rollout.offset(node, DAY)  # deterministic
    assert rollout.offset(node, 0) == 0


def test_offsets_are_uniform_over_the_span() -> None:
    nodes = [hashlib.md5(str(i).encode()).hexdigest() for i in range(20000)]
    offsets = [rollout.offset(node, DAY) for node in nodes]
    assert all(0 <= o < DAY for o in offsets)
    buckets = [0] * 20
    for o in offsets:
        buckets[o * 20 // DAY] += 1
    expected = len(nodes) / 20
    chi_square = sum((b - expected) ** 2 / expected for b in buckets)
    # 19 degrees of freedom: 43.8 is the 0.1 % tail; a uniform hash stays far below.
    assert chi_square < 43.8, buckets
    # After a quarter of the span, about a quarter of the fleet may take the version.
    share = sum(o < DAY // 4 for o in offsets) / len(offsets)
    assert 0.23 < share < 0.27


def test_a_target_without_a_readable_rollout_is_open_to_all() -> None:
    assert rollout.waiting({}, "n", 0) is None
    assert rollout.waiting({"rollout": {"start": "soon", "duration": 5}}, "n", 0) is None
    keel = {"rollout": {"start": 1000, "duration": DAY}}
    opens = 1000 + rollout.offset("n", DAY)
    assert rollout.waiting(keel, "n", opens - 10) == 10
    assert rollout.waiting(keel, "n", opens) is None


# --- through keel publish and the updater ---------------------------------------------


def at_rollout(host: Host, node: str, now: float) -> None:
    host.updater.fleet = Coordinator(host.root / "state", node=lambda: node, wall_clock=lambda: now)


def targets_custom(host: Host, version: str) -> dict[str, object]:
    metadata = host.repo / "metadata"
    newest = max(metadata.glob("*.targets.json"), key=lambda p: int(p.name.split(".")[0]))
    targets = json.loads(newest.read_text())["signed"]["targets"]
    (keel,) = [
        t["custom"]["keel"]
        for t in targets.values()
        if t["custom"].get("keel", {}).get("version") == version
    ]
    return keel  # type: ignore[no-any-return]


def recent_hour() -> datetime:
    """A rollout start an hour or so ago: publish signs metadata that expires a day
    after it, and the host checks that expiry against the real clock (a fixed date
    here made the test fail a day after it was written)."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)


def test_publish_rollout_signs_start_and_duration(host: Host) -> None:
    start = recent_hour()
    bundle = make_bundle(host.root / "work", "2.0.0")
    repository.publish(host.repo, bundle, host.keys, rollout=timedelta(hours=24), now=start)
    keel = targets_custom(host, "2.0.0")
    assert keel["rollout"] == {"start": int(start.timestamp()), "duration": DAY}


def test_a_host_takes_the_version_only_after_its_offset(host: Host) -> None:
    start = recent_hour()
    bundle = make_bundle(host.root / "work", "2.0.0")
    repository.publish(host.repo, bundle, host.keys, rollout=timedelta(hours=24), now=start)
    node = "9e6708d5b8df4d14a793e251e4555c3a"
    opens = start.timestamp() + rollout.offset(node, DAY)
    at_rollout(host, node, opens - 1)
    assert host.updater.check()["available"] is None
    assert host.updater.update() == {"result": "up-to-date", "version": "1.0.0"}
    assert "rollout reaches this host at" in host.updater.status()["fleet"]["held_back"]["2.0.0"]
    at_rollout(host, node, opens)
    assert host.updater.check()["available"] == "2.0.0"
    assert host.updater.update()["result"] == "installed"


def test_a_halted_version_is_not_taken(host: Host) -> None:
    host.publish("2.0.0")
    repository.publish(host.repo, None, host.keys, halt_version="2.0.0")
    assert targets_custom(host, "2.0.0")["halted"] is True
    assert host.updater.check()["available"] is None
    assert host.updater.status()["fleet"]["held_back"] == {"2.0.0": "halted by the publisher"}


def test_a_halted_version_installed_but_not_booted_is_dropped(host: Host) -> None:
    host.publish("2.0.0")
    host.updater.update()
    assert entries(host) == ["keel-1.0.0-a.conf", "keel-2.0.0-b+3.conf"]
    repository.publish(host.repo, None, host.keys, halt_version="2.0.0")
    host.updater = type(host.updater)(host.updater.paths)  # a fresh look at the repository
    assert host.updater.update() == {"result": "up-to-date", "version": "1.0.0"}
    assert entries(host) == ["keel-1.0.0-a.conf"]  # the next boot stays on 1.0.0
    status = host.updater.status()
    assert status["phase"] == "idle"
    assert status["last_result"]["result"] == "halted"
    assert not host.updater.reboot_if_due()


def test_a_newer_version_after_a_halt_is_taken(host: Host) -> None:
    host.publish("2.0.0")
    repository.publish(host.repo, None, host.keys, halt_version="2.0.0")
    host.publish("2.0.1")
    assert host.updater.check()["available"] == "2.0.1"


def test_halting_a_version_never_published_is_refused(host: Host, tmp_path: Path) -> None:
    host.publish("2.0.0")
    with pytest.raises(KeelError, match=r"no published target has version 3\.0\.0"):
        repository.publish(host.repo, None, host.keys, halt_version="3.0.0")


def test_rollout_needs_a_positive_span() -> None:
    assert repository.parse_rollout("24h") == timedelta(days=1)
    with pytest.raises(KeelError):
        repository.parse_rollout("0s")


def test_the_publish_command_line(host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    from composer import cli as keel

    bundle = make_bundle(host.root / "work", "2.0.0")
    common = ["--repo", str(host.repo), "--keys", str(host.keys)]
    assert keel.main(["publish", str(bundle), *common, "--rollout", "24h"]) == 0
    assert "rolled out over 24h" in capsys.readouterr().out
    assert targets_custom(host, "2.0.0")["rollout"]["duration"] == DAY  # type: ignore[index]
    assert keel.main(["publish", *common, "--halt", "2.0.0"]) == 0
    assert "re-signed, 2.0.0 halted" in capsys.readouterr().out
    assert keel.main(["publish", *common, "--rollout", "24h"]) == 1
    assert "give the ARTIFACT" in capsys.readouterr().err


def test_a_version_halted_since_the_last_check_is_not_rebooted_into(host: Host) -> None:
    host.publish("2.0.0")
    host.updater.update()
    repository.publish(host.repo, None, host.keys, halt_version="2.0.0")
    host.updater.paths.policy = lambda: Policy(repository=f"file://{host.repo}", reboot="immediate")
    assert not host.updater.reboot_if_due()
    assert host.reboots == []
    assert entries(host) == ["keel-1.0.0-a.conf"]
    assert host.updater.status()["last_result"]["result"] == "halted"


def test_an_unreachable_repository_does_not_hold_the_reboot(host: Host) -> None:
    host.publish("2.0.0")
    host.updater.update()
    host.updater.paths.policy = lambda: Policy(repository="file:///nonexistent", reboot="immediate")
    assert host.updater.reboot_if_due()
    assert host.reboots == ["reboot"]
