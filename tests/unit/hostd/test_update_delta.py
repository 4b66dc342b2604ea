"""Updates by delta through the updater (hostd/updater.py + hostd/delta.py), on the
file-backed test host: a real repository with block indexes and chunks (keel publish),
slots as files. The booted slot holds 1.0.0's image; new versions share most of it."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest

import hostd.chunkfetch
from composer.build.verity import append_hash_tree
from hostd.formats import blockindex, verity
from hostd.formats.blockindex import BLOCK
from hostd.policy import Policy
from hostd.updater import Refused
from tests.unit.hostd.hosts import SLOT_SIZE, Host, boot

DATA_BLOCKS = 200


def image(changed: dict[int, int] | None = None) -> bytes:
    """An erofs-like image of DATA_BLOCKS blocks (its superblock says how many), each
    block made from its number (incompressible, as compressed data is); changed:
    block -> another label."""
    labels = {number: number for number in range(DATA_BLOCKS)} | (changed or {})
    data = bytearray(
        b"".join(
            hashlib.shake_256(labels[n].to_bytes(4, "little")).digest(BLOCK)
            for n in range(DATA_BLOCKS)
        )
    )
    struct.pack_into("<IIIB", data, 1024, 0xE0F5E1E2, 0, 0, 12)
    struct.pack_into("<I", data, 1024 + 0x24, DATA_BLOCKS)
    return bytes(data)


def boot_image(host: Host, slot: str, data: bytes) -> None:
    with (host.root / f"dev/root-{slot}").open("r+b") as handle:
        handle.write(data)


def transfer(host: Host) -> dict[str, Any]:
    result: dict[str, Any] = host.updater.status()["last_transfer"]
    return result


def events(host: Host, name: str) -> list[dict[str, Any]]:
    return [event for event in host.updater.history() if event["event"] == name]


def chunk_of(host: Host, block: bytes) -> Path:
    return host.repo / blockindex.chunk_path(hashlib.sha256(block).digest())


def index_of(host: Host, version: str) -> blockindex.BlockIndex:
    return blockindex.decode(next(host.repo.glob(f"targets/**/*{version}*.keelindex")).read_bytes())


@pytest.fixture
def on_v1(host: Host) -> Host:
    """The booted slot a holds 1.0.0's image (as published: the repository has it);
    the policy takes deltas, as a host's does by default."""
    host.updater.paths.policy = lambda: Policy(repository=f"file://{host.repo}")
    boot_image(host, "a", image())
    host.publish("1.0.0", root=image())
    return host


def test_a_version_sharing_most_blocks_comes_by_delta(on_v1: Host) -> None:
    host = on_v1
    new = image({5: 1000, 150: 1001})
    bundle = host.publish("2.0.0", root=new)
    assert host.updater.update()["result"] == "installed"
    assert (host.root / "dev/root-b").read_bytes()[: len(new)] == new
    moved = transfer(host)
    assert moved["mode"] == "delta"
    assert moved["full"] == bundle.stat().st_size
    # Two new root blocks and the kernel image's one block; the rest from slot a.
    assert moved["fetched_blocks"] == 3
    assert moved["reused_blocks"] == DATA_BLOCKS - 2
    assert moved["downloaded"] < moved["full"] // 4
    # What came over the wire: the index and the three chunks, nothing else.
    index = next(host.repo.glob("targets/**/*2.0.0*.keelindex")).stat().st_size
    uki = index_of(host, "2.0.0").file("uki").hashes[0]
    chunks = [new[5 * BLOCK : 6 * BLOCK], new[150 * BLOCK : 151 * BLOCK]]
    sizes = [chunk_of(host, block).stat().st_size for block in chunks]
    sizes.append((host.repo / blockindex.chunk_path(uki)).stat().st_size)
    assert moved["downloaded"] == index + sum(sizes)
    installed = events(host, "installed")[-1]
    assert installed["mode"] == "delta" and installed["downloaded"] == moved["downloaded"]


def test_the_verity_tree_is_computed_not_fetched(on_v1: Host) -> None:
    host = on_v1

    def with_tree(root: Path) -> str:
        return append_hash_tree(root, "docker-host", "2.0.0").kernel_argument()

    host.publish("2.0.0", root=image({7: 2000}), verity=with_tree)
    host.updater.update()
    moved = transfer(host)
    assert moved["mode"] == "delta" and moved["computed_blocks"] > 0
    assert moved["fetched_blocks"] == 3  # block 7, the verity superblock, the UKI
    entry = next((host.root / "esp/loader/entries").glob("keel-2.0.0-b*")).read_text()
    expected = verity.from_cmdline(entry.split())
    assert expected is not None
    verity.check(host.root / "dev/root-b", expected)


def test_a_missing_chunk_falls_back_to_the_full_bundle(on_v1: Host) -> None:
    host = on_v1
    new = image({9: 3000})
    host.publish("2.0.0", root=new)
    chunk_of(host, new[9 * BLOCK : 10 * BLOCK]).unlink()
    assert host.updater.update()["result"] == "installed"
    assert transfer(host)["mode"] == "full"
    assert "not found" in events(host, "delta-failed")[-1]["reason"]
    assert (host.root / "dev/root-b").read_bytes()[: len(new)] == new


def test_a_tampered_chunk_is_never_written_and_the_bundle_is_taken(on_v1: Host) -> None:
    host = on_v1
    new = image({9: 3000})
    host.publish("2.0.0", root=new)
    evil = b"\x66" * BLOCK
    chunk_of(host, new[9 * BLOCK : 10 * BLOCK]).write_bytes(blockindex.compress_chunk(evil))
    host.updater.update()
    assert "does not match its sha256" in events(host, "delta-failed")[-1]["reason"]
    assert evil not in (host.root / "dev/root-b").read_bytes()
    assert transfer(host)["mode"] == "full"


def test_a_tampered_index_is_refused_by_its_signed_hash(on_v1: Host) -> None:
    host = on_v1
    host.publish("2.0.0", root=image({9: 3000}))
    stored = next(host.repo.glob("targets/**/*.keelindex"))
    if "2.0.0" not in stored.name:
        stored = next(host.repo.glob("targets/**/*2.0.0*.keelindex"))
    raw = bytearray(stored.read_bytes())
    raw[-1] ^= 1
    stored.write_bytes(bytes(raw))
    host.updater.update()
    reason = events(host, "delta-failed")[-1]["reason"]
    assert "does not match the signed targets metadata" in reason and ".keelindex" in reason
    assert transfer(host)["mode"] == "full"


def test_the_policy_can_turn_deltas_off(on_v1: Host) -> None:
    host = on_v1
    host.updater.paths.policy = lambda: Policy(repository=f"file://{host.repo}", delta=False)
    host.publish("2.0.0", root=image({9: 3000}))
    host.updater.update()
    assert transfer(host)["mode"] == "full"
    assert not events(host, "delta-failed")


class PowerCut(BaseException):
    """The power goes while the slot is written."""


def test_a_retry_after_a_power_cut_keeps_the_blocks_already_written(
    on_v1: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = on_v1
    new = image({n: 5000 + n for n in range(100, 140)})  # 40 new blocks
    host.publish("2.0.0", root=new)
    real = hostd.chunkfetch.ChunkFetcher._get
    calls = {"n": 0}

    def cut_midway(self: Any, path: str) -> bytes:
        calls["n"] += 1
        if calls["n"] > 20:
            raise PowerCut
        return real(self, path)

    monkeypatch.setattr(hostd.chunkfetch.ChunkFetcher, "_get", cut_midway)
    with pytest.raises(PowerCut):
        host.updater.update()
    monkeypatch.undo()
    boot(host, "a", "1.0.0")  # hostd after the reboot
    assert host.updater.status()["last_result"]["result"] == "interrupted"
    host.updater.update()
    moved = transfer(host)
    assert moved["mode"] == "delta"
    assert moved["kept_blocks"] >= 15, moved  # fetched before the cut, not again
    # The index the cut attempt verified was kept and checked again, not fetched.
    assert moved["downloaded"] <= moved["fetched_blocks"] * blockindex.MAX_CHUNK
    assert moved["fetched_blocks"] <= 40 - 15 + 1
    assert (host.root / "dev/root-b").read_bytes()[: len(new)] == new


def test_a_root_too_big_for_the_slot_is_refused_from_the_index(on_v1: Host) -> None:
    host = on_v1
    host.publish("2.0.0", root=image() + b"\0" * SLOT_SIZE)
    with pytest.raises(Refused, match="does not fit slot b"):
        host.updater.update()
    assert not events(host, "delta-failed")
    status = json.dumps(host.updater.status())
    assert "does not fit" in status
