"""An update whose new version has keel.verity= on its command line: hostd checks the
written slot's data and hash tree against that root hash before it installs any boot
file, and refuses a bundle whose tree does not give it (issue 15)."""

from __future__ import annotations

from pathlib import Path

import pytest

from composer.build.verity import append_hash_tree
from hostd.formats import verity
from hostd.updater import Refused
from tests.unit.conftest import flip
from tests.unit.hostd.hosts import Host, entries

ROOT_SIZE = 300 * verity.BLOCK


def with_tree(root: Path) -> str:
    return append_hash_tree(root, "docker-host", "2.0.0").kernel_argument()


def with_bad_tree(root: Path) -> str:
    """A tree built right, then one leaf hash changed: a build gone wrong, still signed."""
    argument = with_tree(root)
    made = verity.from_cmdline([argument])
    assert made is not None
    flip(root, (made.hash_start_block + 1) * verity.BLOCK + 5)
    return argument


def with_other_root_hash(root: Path) -> str:
    made = verity.from_cmdline([with_tree(root)])
    assert made is not None
    return verity.Verity("ab" * 32, made.salt, made.data_blocks).kernel_argument()


def test_a_verified_slot_is_installed_with_its_root_hash(host: Host) -> None:
    host.publish("2.0.0", root_size=ROOT_SIZE, verity=with_tree)
    assert host.updater.update()["result"] == "installed"
    entry = (host.root / "esp/loader/entries/keel-2.0.0-b+3.conf").read_text()
    expected = verity.from_cmdline(entry.split())
    assert expected is not None and expected.data_blocks == 300
    verity.check(host.root / "dev/root-b", expected)  # what the initrd will open


@pytest.mark.parametrize(
    ("make", "reason"),
    [(with_bad_tree, "stored hash tree does not match"), (with_other_root_hash, "not the signed")],
)
def test_a_slot_that_fails_its_root_hash_gets_no_boot_files(
    host: Host, make: object, reason: str
) -> None:
    host.publish("2.0.0", root_size=ROOT_SIZE, verity=make)
    with pytest.raises(Refused, match=f"slot b fails its dm-verity check: .*{reason}"):
        host.updater.update()
    assert entries(host) == ["keel-1.0.0-a.conf"]
    assert not (host.root / "esp/keel/b").exists()
    status = host.updater.status()
    assert status["phase"] == "idle"
    assert status["last_result"]["result"] == "refused"
    assert "dm-verity" in status["last_result"]["reason"]
