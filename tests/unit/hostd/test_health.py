"""The health gate's handling of the on-demand Docker engine it wakes to check."""

import subprocess
from pathlib import Path
from typing import Any

import pytest

from hostd import health


class FakeSystemd:
    def __init__(self, state: str) -> None:
        self.state = state
        self.calls: list[list[str]] = []

    def run(self, argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        if argv[:2] == ["systemctl", "show"]:
            return subprocess.CompletedProcess(argv, 0, stdout=f"{self.state}\n", stderr="")
        if argv[:2] == ["systemctl", "stop"]:
            self.state = "inactive"
        return subprocess.CompletedProcess(argv, 0, stdout="", stderr="")

    @property
    def stopped(self) -> list[list[str]]:
        return [c for c in self.calls if c[:2] == ["systemctl", "stop"]]


class Entry:
    filename = "keel-b+3.conf"


class FakeEsp:
    def __init__(self) -> None:
        self.blessed: list[Any] = []

    def counted_boot_entry(self) -> Entry:
        return Entry()

    def bless(self, entry: Any) -> str:
        self.blessed.append(entry)
        return "keel-b.conf"


@pytest.fixture
def gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    unit = tmp_path / "docker.service"
    unit.write_text("[Service]\n")
    esp = FakeEsp()
    monkeypatch.setattr(health, "DOCKER_UNIT", unit)
    monkeypatch.setattr(health, "EspTree", lambda: esp)
    monkeypatch.setattr(health, "record", lambda result, reason: None)
    monkeypatch.setattr(health, "run_checks", lambda: None)
    return {"esp": esp, "unit": unit}


def use(monkeypatch: pytest.MonkeyPatch, systemd: FakeSystemd, containers: Any) -> None:
    monkeypatch.setattr(health.subprocess, "run", systemd.run)

    def docker_get(path: str) -> Any:
        assert path == "/containers/json"
        if isinstance(containers, Exception):
            raise containers
        return containers

    monkeypatch.setattr(health, "docker_get", docker_get)


def test_an_engine_the_check_woke_is_put_back_to_sleep(
    gate: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    systemd = FakeSystemd("inactive")
    use(monkeypatch, systemd, [])
    assert health.main() == 0
    assert [e.filename for e in gate["esp"].blessed] == ["keel-b+3.conf"]
    assert systemd.stopped == [["systemctl", "stop", "docker.service", "containerd.service"]]


@pytest.mark.parametrize("state", ["active", "activating", "reloading"])
def test_an_engine_already_up_or_starting_before_the_check_is_left_alone(
    gate: dict[str, Any], monkeypatch: pytest.MonkeyPatch, state: str
) -> None:
    systemd = FakeSystemd(state)
    use(monkeypatch, systemd, [])
    assert health.main() == 0
    assert systemd.stopped == []


def test_an_engine_running_containers_by_now_is_left_running(
    gate: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    systemd = FakeSystemd("inactive")
    use(monkeypatch, systemd, [{"Id": "c0ffee", "Names": ["/web"]}])
    assert health.main() == 0
    assert systemd.stopped == []


def test_an_engine_that_cannot_list_its_containers_is_left_running(
    gate: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    systemd = FakeSystemd("inactive")
    use(monkeypatch, systemd, ConnectionRefusedError("no socket"))
    assert health.main() == 0
    assert systemd.stopped == []


def test_an_image_without_docker_never_touches_engine_units(
    gate: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    gate["unit"].unlink()
    systemd = FakeSystemd("inactive")
    use(monkeypatch, systemd, [])
    assert health.main() == 0
    assert systemd.calls == []


def test_a_failed_check_stops_nothing(
    gate: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    systemd = FakeSystemd("inactive")
    use(monkeypatch, systemd, [])
    monkeypatch.setattr(health, "run_checks", lambda: "the Docker engine does not answer")
    monkeypatch.setattr(health, "other_slot_bootable", lambda esp: False)
    assert health.main() == 1
    assert systemd.stopped == []
