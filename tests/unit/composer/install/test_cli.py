"""`keel install`'s arguments, and its result line."""

from __future__ import annotations

from pathlib import Path

import pytest

from composer.cli import main, make_parser
from tests.unit.composer.install.conftest import MIB, needs_tools


def parse(*argv: str) -> object:
    return make_parser().parse_args(["install", *argv])


def test_to_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("build/x/1")
    assert "--to" in capsys.readouterr().err


@pytest.mark.parametrize("size", ["0", "lots", "-5G"])
def test_size_must_be_a_positive_size(size: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--to", "x.raw", "--size", size)
    assert "--size" in capsys.readouterr().err


def test_size_takes_the_definitions_units() -> None:
    args = parse("--to", "x.raw", "--size", "20G")
    assert args.size == 20 * 1024**3  # type: ignore[attr-defined]
    assert parse("--to", "x.raw", "--size", "512MiB").size == 512 * MIB  # type: ignore[attr-defined]


def test_a_missing_config_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["install", str(tmp_path), "--to", str(tmp_path / "x"), "--config", "no.bu"]) == 1
    assert "config file not found: no.bu" in capsys.readouterr().err


def test_a_folder_that_is_no_build_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["install", str(tmp_path), "--to", str(tmp_path / "x")]) == 1
    assert "has no disk.raw" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@needs_tools
def test_install_says_what_it_wrote(
    build_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "x.raw"
    assert main(["install", str(build_folder), "--to", str(target), "--size", "48M", "-q"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"installed t 1.0 to {target} (0.0 GiB): ")
    assert "verified esp, root-a, var" in out
