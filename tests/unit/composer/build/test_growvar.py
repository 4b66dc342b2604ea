"""The build puts var's repart definition into the image (composer/build/growvar.py),
and the base overlay runs the grow unit early on every boot."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from composer.build import growvar
from composer.core.paths import OVERLAYS_DIR
from hostd.formats.growth import VAR_DEFINITION, definition_cap

UNIT = OVERLAYS_DIR / "base/usr/lib/systemd/system/keel-grow-var.service"


def unit_settings(text: str) -> dict[str, list[str]]:
    """Every Key=value of a unit file (keys may repeat, as Before= does)."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("#", "[")):
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def built(tmp_path: Path, var_max: int) -> Path:
    ctx = SimpleNamespace(
        definition=SimpleNamespace(partitions=SimpleNamespace(var_max=var_max)), tree=tmp_path
    )
    growvar.step(ctx)  # type: ignore[arg-type]
    return tmp_path / VAR_DEFINITION


def test_the_definitions_cap_is_in_the_image(tmp_path: Path) -> None:
    written = built(tmp_path, 50 * 1024**3)
    assert definition_cap(written.read_text()) == 50 * 1024**3
    assert written.stat().st_mode & 0o777 == 0o644


def test_without_a_cap_var_fills_the_disk(tmp_path: Path) -> None:
    assert definition_cap(built(tmp_path, 0).read_text()) == 0


def test_the_definition_is_not_where_the_stock_repart_service_looks() -> None:
    # systemd-repart.service scans /usr/lib/repart.d, /etc/repart.d, ...: only the grow
    # unit, after its checks, may run repart with this definition.
    assert not VAR_DEFINITION.startswith(("usr/lib/repart.d", "etc/", "run/"))


def test_the_grow_unit_runs_early_on_every_boot_without_an_ordering_cycle() -> None:
    unit = unit_settings(UNIT.read_text())
    assert unit["DefaultDependencies"] == ["no"]
    before = " ".join(unit["Before"]).split()
    # Everything that writes much to /var waits for it; sshd does not (it is ordered
    # after keel-provision.service, so that one must not wait either).
    assert {"keel-hostd.service", "docker.service", "containerd.service"} <= set(before)
    assert not {"keel-provision.service", "ssh.service", "sysinit.target"} & set(before)
    # /var is mounted by the initrd: nothing to wait for, and no After= that early
    # boot's own units could close into a cycle.
    assert "After" not in unit
    # -S: no site module, as every hostd boot unit (its start costs seconds under TCG).
    assert unit["ExecStart"] == ["/usr/bin/python3 -S -m hostd.growvar"]
    assert unit["WantedBy"] == ["sysinit.target"]
    link = OVERLAYS_DIR / "base/etc/systemd/system/sysinit.target.wants/keel-grow-var.service"
    assert link.is_symlink()
    assert str(link.readlink()) == "/usr/lib/systemd/system/keel-grow-var.service"
