"""keelctl's own options (the verbs are covered with the API in test_api.py)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from hostd import cli


def test_version_is_the_installed_package(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"keelctl {metadata.version('keel')}\n"


def _without_metadata(name: str) -> str:
    raise metadata.PackageNotFoundError(name)


def test_in_an_image_the_version_is_the_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An image carries hostd without package metadata, and os-release names the image.
    monkeypatch.setattr(metadata, "version", _without_metadata)
    os_release = tmp_path / "os-release"
    os_release.write_text(
        'PRETTY_NAME="Debian GNU/Linux 12"\nIMAGE_ID=docker-host\nIMAGE_VERSION="2.0.0"\n'
    )
    assert cli.version(os_release) == "from image docker-host 2.0.0"
    assert cli.version(tmp_path / "missing") == "(version unknown)"
