"""Update policy: durations, the maintenance window, host overrides."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from hostd.policy import Policy, PolicyError, Window, load_policy, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("10min", 600), ("6h", 21600), ("1d", 86400)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


def test_a_bad_duration_names_the_format() -> None:
    with pytest.raises(PolicyError, match="30s, 10min"):
        parse_duration("6 hours")


# 2024-01-06 is a Saturday.
SAT_2330 = datetime(2024, 1, 6, 23, 30)
SUN_0130 = datetime(2024, 1, 7, 1, 30)
SUN_0300 = datetime(2024, 1, 7, 3, 0)


def test_window_that_runs_past_midnight() -> None:
    window = Window(days=("Sat",), start="23:00", duration="3h")
    assert window.contains(SAT_2330)
    assert window.contains(SUN_0130)  # opened Saturday, still open
    assert not window.contains(SUN_0300)


def test_window_only_on_its_days() -> None:
    window = Window(days=("Mon",), start="02:00", duration="2h")
    assert not window.contains(datetime(2024, 1, 7, 2, 30))  # Sunday
    assert window.contains(datetime(2024, 1, 8, 2, 30))  # Monday
    assert not window.contains(datetime(2024, 1, 8, 4, 0))  # closed at 04:00


def test_policy_durations_are_the_project_grammar() -> None:
    assert Policy(check_interval="1w").check_seconds() == 7 * 86400
    window = Window(days=("Sat",), start="23:00", duration="90m")
    assert window.contains(SAT_2330)
    assert not window.contains(SUN_0130)


@pytest.mark.parametrize(("reboot", "inside", "expected"), [
    ("immediate", False, True), ("manual", True, False),
    ("window", True, True), ("window", False, False),
])  # fmt: skip
def test_may_reboot(reboot: str, inside: bool, expected: bool) -> None:
    policy = Policy(reboot=reboot, window=Window(days=("Sat",), start="23:00", duration="1h"))
    assert policy.may_reboot(SAT_2330 if inside else SUN_0300) is expected


def test_host_file_overrides_image_keys(tmp_path: Path) -> None:
    image, host = tmp_path / "policy.json", tmp_path / "update.json"
    image.write_text(json.dumps({
        "name": "docker-host", "repository": "https://updates.invalid/", "reboot": "window",
        "window": {"days": ["Sun"], "start": "03:00", "duration": "1h"},
    }))  # fmt: skip
    host.write_text(
        json.dumps({"repository": "http://10.0.2.2:8000", "window": {"start": "04:00"}})
    )
    policy = load_policy(image, host)
    assert policy.repository == "http://10.0.2.2:8000"
    assert policy.name == "docker-host"
    assert policy.window == Window(days=("Sun",), start="04:00", duration="1h")


def test_no_files_means_the_defaults(tmp_path: Path) -> None:
    assert load_policy(tmp_path / "a", tmp_path / "b") == Policy()


def test_an_invalid_override_is_reported_with_its_file(tmp_path: Path) -> None:
    host = tmp_path / "update.json"
    host.write_text(json.dumps({"reboot": "sometimes"}))
    with pytest.raises(PolicyError, match=r"update\.json.*immediate, window, manual"):
        load_policy(tmp_path / "none", host)


def test_never_turns_scheduled_checks_off(tmp_path: Path) -> None:
    host = tmp_path / "update.json"
    host.write_text(json.dumps({"repository": "http://10.0.2.2:8000", "check_interval": "never"}))
    policy = load_policy(tmp_path / "missing.json", host)
    assert policy.check_seconds() is None
    assert Policy(check_interval="6h").check_seconds() == 21600
    host.write_text(json.dumps({"check_interval": "sometimes"}))
    with pytest.raises(PolicyError, match="30s, 10min"):
        load_policy(tmp_path / "missing.json", host)
