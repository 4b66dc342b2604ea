"""Taking a bundle in (issue 12, items 1 and 4): a local bundle is read once, never
through a link, and only hostd's private copy is verified and applied; /var must have
room for the bundle before it is taken, and nothing of it stays on /var afterwards."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hostd
from hostd import updater as updater_module
from hostd.formats.bundle import Bundle
from hostd.updater import Refused
from tests.unit.hostd.hosts import Host, boot, bounded, entries, leftovers, make_bundle


def root_sha256(bundle: Path) -> str:
    with Bundle(bundle) as opened:
        return opened.info.root.sha256


def slot_root_sha256(host: Host, slot: str, bundle: Path) -> str:
    """The sha256 of the first root-image-sized bytes of slot (the rest is old data)."""
    with Bundle(bundle) as opened:
        size = opened.info.root.size
    return hashlib.sha256((host.root / f"dev/root-{slot}").read_bytes()[:size]).hexdigest()


def drop_folder(host: Host) -> Path:
    """A folder anybody may write, where an operator put the bundle."""
    folder = host.root / "drop"
    folder.mkdir()
    folder.chmod(0o777)
    return folder


def test_a_bundle_swapped_after_verification_never_reaches_the_slot(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    signed = host.publish("2.0.0")
    offered = drop_folder(host) / signed.name
    shutil.copy(signed, offered)
    # Same name and version, bytes nobody signed: what an attacker puts in its place.
    foreign = make_bundle(host.root / "foreign", "2.0.0")
    assert root_sha256(foreign) != root_sha256(signed)
    real_bundle = updater_module.Bundle

    def swap_then_open(path: Path) -> Bundle:
        # hostd has verified the bundle and opens it to write the slot: the moment
        # inotify tells the attacker, who renames the foreign bundle over the path.
        if foreign.exists():
            os.replace(foreign, offered)
        return real_bundle(path)

    monkeypatch.setattr(updater_module, "Bundle", swap_then_open)
    assert host.updater.update(bundle=offered)["result"] == "installed"
    assert not foreign.exists()  # the swap happened
    assert slot_root_sha256(host, "b", signed) == root_sha256(signed)
    staging = host.root / "state/staging"
    assert staging.stat().st_mode & 0o777 == 0o700
    assert leftovers(host) == []


def test_a_bundle_behind_a_symbolic_link_is_refused(host: Host) -> None:
    signed = host.publish("2.0.0")
    link = drop_folder(host) / "update.keelbundle"
    link.symlink_to(signed)
    before = host.slot_digest("b")
    with pytest.raises(Refused, match="symbolic link"):
        host.updater.update(bundle=link)
    assert host.slot_digest("b") == before
    assert host.updater.status()["last_result"]["result"] == "refused"


def test_a_bundle_that_is_no_regular_file_is_refused_at_once(host: Host) -> None:
    host.publish("2.0.0")
    fifo = drop_folder(host) / "update.keelbundle"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer, for ever
    with pytest.raises(Refused, match="not a regular file"):
        bounded(lambda: host.updater.update(bundle=fifo), 10)


def fake_statvfs(monkeypatch: pytest.MonkeyPatch, folder: Path, free: int) -> None:
    """os.statvfs says folder's file system (/var) has free bytes left."""
    real = os.statvfs

    def statvfs(path: str | os.PathLike[str]) -> os.statvfs_result:
        stats = real(path)
        if not Path(path).resolve().is_relative_to(folder.resolve()):
            return stats
        return os.statvfs_result((
            stats.f_bsize, 1, stats.f_blocks, free, free, stats.f_files, stats.f_ffree,
            stats.f_favail, stats.f_flag, stats.f_namemax,
        ))  # fmt: skip

    monkeypatch.setattr(os, "statvfs", statvfs)


@pytest.mark.parametrize("source", ["download", "local bundle"])
def test_a_bundle_that_does_not_fit_var_is_refused_before_it_is_taken(
    host: Host, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    signed = host.publish("2.0.0")
    fake_statvfs(monkeypatch, host.root / "state", free=signed.stat().st_size // 2)
    before = host.slot_digest("b")
    with pytest.raises(Refused, match="bytes free"):
        host.updater.update(bundle=signed if source == "local bundle" else None)
    assert host.slot_digest("b") == before
    status = host.updater.status()
    assert status["phase"] == "idle"
    assert status["last_result"]["result"] == "refused"
    assert "bytes free" in status["last_result"]["reason"]
    assert leftovers(host) == []
    assert entries(host) == ["keel-1.0.0-a.conf"]


# Runs an update in another process and kills it (SIGKILL: no cleanup runs, as in a
# power cut) once the first block of the download is written.
CUT_DOWNLOAD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from hostd import updater
    from hostd.policy import Policy

    root = Path(sys.argv[1])

    def power_cut(self, done):
        os.kill(os.getpid(), signal.SIGKILL)

    updater.Progress.__call__ = power_cut
    paths = updater.HostPaths(
        state_dir=root / "state", esp=root / "esp", partlabels=root / "dev",
        release=root / "release", trust_root=root / "keys/root.json",
        tuf_cache=root / "state/tuf", booted_slot=lambda: "a", reboot=lambda: None,
        policy=lambda: Policy(repository=f"file://{root}/repo", delta=False),
    )
    updater.Updater(paths).update()
""")


def test_a_download_cut_short_is_removed_by_the_next_attempt(host: Host) -> None:
    host.publish("2.0.0")
    source_root = Path(hostd.__file__).parent.parent
    cut = subprocess.run(
        [sys.executable, "-c", CUT_DOWNLOAD, str(host.root)],
        env={**os.environ, "PYTHONPATH": str(source_root)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cut.returncode == -signal.SIGKILL, cut.stderr
    assert leftovers(host)  # the partial download the cut left
    # Meanwhile the repository moved on; the next attempt (after the reboot) takes
    # another version, and must not leave the old partial file filling /var.
    host.publish("3.0.0")
    boot(host, "a", "1.0.0")
    assert host.updater.update()["result"] == "installed"
    assert leftovers(host) == []


def test_a_failed_download_leaves_nothing_on_var(host: Host) -> None:
    host.publish("2.0.0")
    stored = next(host.repo.glob("targets/**/*.keelbundle"))
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    with pytest.raises(Refused, match="does not match the signed targets metadata"):
        host.updater.update()
    assert leftovers(host) == []


def test_downloads_an_older_hostd_left_in_the_state_dir_are_removed(host: Host) -> None:
    # Before the private folder, hostd downloaded into the state dir itself.
    host.publish("1.0.0")
    state_dir = host.root / "state"
    state_dir.mkdir()
    (state_dir / ".docker-host-2.0.0-x86-64.keelbundle.tmp").write_bytes(b"partial")
    (state_dir / "docker-host-1.5.0-x86-64.keelbundle").write_bytes(b"whole")
    assert host.updater.update() == {"result": "up-to-date", "version": "1.0.0"}
    assert leftovers(host) == []
