"""`keel doctor`: what is missing, and the Debian package (or reinstall) that brings it."""

from __future__ import annotations

import pytest

from composer.tools import doctor


@pytest.fixture
def absent(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Commands and file names to report as absent; everything else is present."""
    names: set[str] = set()
    monkeypatch.setattr(
        doctor.shutil, "which", lambda command: None if command in names else f"/usr/bin/{command}"
    )
    monkeypatch.setattr(doctor.Path, "exists", lambda path: path.name not in names)
    return names


def test_all_present(absent: set[str]) -> None:
    text, status = doctor.report()
    assert status == 0
    assert text.startswith("all ")


def test_secure_boot_tools_are_reported_with_their_packages(absent: set[str]) -> None:
    absent.update({"sbsign", "objcopy", "OVMF_CODE_4M.secboot.fd"})
    text, status = doctor.report()
    assert status == 1
    lines = text.splitlines()
    assert lines[0] == "missing 3 host tool(s):"
    for what, package in [
        ("sbsign", "sbsigntool"),
        ("objcopy", "binutils"),
        ("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "ovmf"),
    ]:
        (line,) = [line for line in lines if line.split()[0] == what]
        assert f"apt-get install {package} " in line
    assert "keel run --secure-boot" in text
    assert (
        lines[-1]
        == "install them all: apt-get install --no-install-recommends binutils ovmf sbsigntool"
    )
    assert "virt-fw-vars" not in text  # importable: it comes with Keel, not apt


def test_virt_fw_vars_is_mentioned_only_when_its_import_fails(
    absent: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(doctor.importlib.util, "find_spec", lambda name: None)
    text, status = doctor.report()
    assert status == 1
    assert "virt-fw-vars" in text and "make setup" in text
    assert "apt-get" not in text  # no Debian package to install for it
