"""The block index format and its chunks (hostd/formats/blockindex.py)."""

from __future__ import annotations

import hashlib
import io
import json
import zlib

import pytest

from hostd.formats import blockindex
from hostd.formats.blockindex import BLOCK, BlockIndexError


def manifest(root: bytes, uki: bytes, version: str = "2.0.0") -> bytes:
    files = {
        "root": {"member": "root.erofs.zst", "compression": "zstd", "size": len(root),
                 "sha256": hashlib.sha256(root).hexdigest()},
        "uki": {"member": "keel.efi", "compression": None, "size": len(uki),
                "sha256": hashlib.sha256(uki).hexdigest()},
    }  # fmt: skip
    return json.dumps({
        "format": 2, "name": "docker-host", "version": version, "architecture": "x86-64",
        "kernel_version": "6.12.0", "cmdline": ["console=ttyS0"], "files": files,
    }).encode()  # fmt: skip


def hashes(data: bytes) -> list[bytes]:
    return list(blockindex.block_hashes(io.BytesIO(data), len(data)))


ROOT = bytes(range(256)) * 16 + b"\0" * BLOCK * 2  # 3 blocks, the last two alike
UKI = b"MZ" + b"u" * 5000  # a short last block


def index_bytes() -> bytes:
    return blockindex.encode(manifest(ROOT, UKI), {"root": hashes(ROOT), "uki": hashes(UKI)})


def test_the_index_round_trips_and_is_deterministic() -> None:
    raw = index_bytes()
    assert raw == index_bytes()
    index = blockindex.decode(raw)
    assert index.info.version == "2.0.0"
    root, uki = index.file("root"), index.file("uki")
    assert root.hashes == tuple(hashes(ROOT)) and len(root.hashes) == 3
    assert root.hashes[1] == root.hashes[2]
    assert uki.size == 5002 and uki.block_size(1) == 5002 - BLOCK
    assert uki.hashes[1] == hashlib.sha256(UKI[BLOCK:]).digest()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: b"KEELIDX9" + raw[8:], "bad magic"),
        (lambda raw: raw[:-1], "ends inside|after the last"),
        (lambda raw: raw + b"\0" * 32, "after the last block hash"),
        (lambda raw: raw[:8] + b"\xff\xff\xff\x7f" + raw[12:], "header claims"),
        (lambda raw: raw[:12] + b"[" + raw[13:], "not JSON"),
    ],
)
def test_a_damaged_index_is_refused(damage, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BlockIndexError, match=message):
        blockindex.decode(damage(index_bytes()))


def test_an_index_with_the_wrong_number_of_hashes_is_not_written() -> None:
    with pytest.raises(BlockIndexError, match="2 block hashes"):
        blockindex.encode(manifest(ROOT, UKI), {"root": hashes(ROOT)[:2], "uki": hashes(UKI)})


def test_chunks_are_named_by_content_and_checked_when_read() -> None:
    block = ROOT[:BLOCK]
    digest = hashlib.sha256(block).digest()
    assert blockindex.chunk_path(digest) == f"chunks/{digest.hex()[:2]}/{digest.hex()}.z"
    chunk = blockindex.compress_chunk(block)
    assert blockindex.decompress_chunk(chunk, digest, BLOCK) == block
    other = blockindex.compress_chunk(b"\1" * BLOCK)
    with pytest.raises(BlockIndexError, match="does not match its sha256"):
        blockindex.decompress_chunk(other, digest, BLOCK)
    with pytest.raises(BlockIndexError, match="not zlib"):
        blockindex.decompress_chunk(b"garbage", digest, BLOCK)


def test_a_chunk_that_inflates_beyond_its_block_is_refused_unread() -> None:
    bomb = zlib.compress(b"\0" * (64 * BLOCK), 9)  # small on the wire, 256 KiB inflated
    assert len(bomb) < blockindex.MAX_CHUNK
    digest = hashlib.sha256(b"\0" * BLOCK).digest()
    with pytest.raises(BlockIndexError, match="does not inflate to 4096 bytes"):
        blockindex.decompress_chunk(bomb, digest, BLOCK)
    with pytest.raises(BlockIndexError, match="too big"):
        blockindex.decompress_chunk(b"x" * (blockindex.MAX_CHUNK + 1), digest, BLOCK)
