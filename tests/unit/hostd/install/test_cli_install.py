"""`keelctl install` on the command line: what it refuses before anything is written."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from hostd import cli
from hostd.install import installer

VALID = {"ignition": {"version": "3.4.0"}, "passwd": {"users": [{"name": "core"}]}}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """install() stands in for the real one: it records its arguments and asks the
    question the real one asks."""
    seen: list[dict[str, Any]] = []

    def fake_install(target: str, config: bytes | None, confirm: Any, say: Any) -> None:
        seen.append({"target": target, "config": config})
        if not confirm("This erases everything on /dev/vdb."):
            raise cli.InstallError("nothing was written")
        raise cli.InstallError("stopped here by the test")

    monkeypatch.setattr(installer, "install", fake_install)
    monkeypatch.setattr(cli.os, "geteuid", lambda: 0)
    return seen


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = cli.main(argv)
    return status, capsys.readouterr().err


def test_needs_root(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli.os, "geteuid", lambda: 1000)
    status, err = run(["install", "/dev/vdb", "--yes"], capsys)
    assert status == 1 and "run it as root" in err


def test_a_butane_config_is_refused_with_the_way_to_translate_it(
    calls: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "host.bu"
    config.write_text("variant: fcos\nversion: 1.5.0\n")
    status, err = run(["install", "/dev/vdb", "--config", str(config), "--yes"], capsys)
    assert status == 1 and str(config) in err and "keel butane" in err
    assert calls == []  # refused before the install started


def test_an_invalid_ignition_config_names_the_problem(
    calls: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "host.ign"
    config.write_text(json.dumps({"ignition": {"version": "9.9.9"}}))
    status, err = run(["install", "/dev/vdb", "--config", str(config), "--yes"], capsys)
    assert status == 1 and "ignition.version" in err and "keel butane" not in err
    assert calls == []


def test_a_missing_config_file(
    calls: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = run(["install", "/dev/vdb", "--config", str(tmp_path / "no.ign")], capsys)
    assert status == 1 and "cannot read" in err and calls == []


def test_a_valid_config_reaches_the_install_as_its_bytes(
    calls: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "host.ign"
    config.write_text(json.dumps(VALID))
    status, err = run(["install", "/dev/vdb", "--config", str(config), "--yes"], capsys)
    assert calls == [{"target": "/dev/vdb", "config": config.read_bytes()}]
    assert status == 1 and "stopped here by the test" in err


def test_without_yes_and_without_a_terminal_nothing_is_written(
    calls: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(cli.sys, "stdin", io.StringIO("yes\n"))  # not a terminal
    status, err = run(["install", "/dev/vdb"], capsys)
    assert status == 1 and "Add --yes" in err and "nothing was written" in err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("no\n", "nothing was written"), ("yes\n", "stopped here by the test")],
)
def test_at_a_terminal_only_yes_goes_on(
    answer: str,
    expected: str,
    calls: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(cli.sys, "stdin", Terminal(answer))
    status, err = run(["install", "/dev/vdb"], capsys)
    assert status == 1 and expected in err
