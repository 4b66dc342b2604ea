"""Assembling a file from local blocks and fetched chunks (hostd/delta.py,
hostd/chunkfetch.py), on plain files and a file:// chunk store."""

from __future__ import annotations

import hashlib
import io
import os
import struct
from pathlib import Path

import pytest

from composer.build.verity import append_hash_tree
from hostd import delta
from hostd.chunkfetch import ChunkFetcher, FetchError
from hostd.formats import blockindex, verity
from hostd.formats.blockindex import BLOCK, FileBlocks
from tests.unit.conftest import flip


def blocks_of(*labels: int) -> bytes:
    """A file of 4 KiB blocks, each filled from a label: equal labels, equal blocks."""
    return b"".join(
        hashlib.sha256(label.to_bytes(4, "little")).digest() * (BLOCK // 32) for label in labels
    )


def file_blocks(data: bytes, role: str = "root") -> FileBlocks:
    digests = tuple(blockindex.block_hashes(io.BytesIO(data), len(data)))
    return FileBlocks(role, len(data), hashlib.sha256(data).hexdigest(), digests)


def store(repo: Path, data: bytes) -> None:
    """Every block of data as a chunk under repo (what keel publish writes)."""
    for start in range(0, len(data), BLOCK):
        block = data[start : start + BLOCK]
        path = repo / blockindex.chunk_path(hashlib.sha256(block).digest())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blockindex.compress_chunk(block))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "repo").mkdir()
    return tmp_path / "repo"


def test_blocks_found_anywhere_locally_are_copied_and_only_the_rest_fetched(
    tmp_path: Path, repo: Path
) -> None:
    old = tmp_path / "old"
    old.write_bytes(blocks_of(1, 2, 3, 4))
    new = blocks_of(4, 9, 2, 9, 1)  # moved blocks, one new block twice
    store(repo, new)
    target = tmp_path / "target"
    target.write_bytes(b"\0" * len(new))
    local = delta.LocalBlocks()
    local.scan(old, old.stat().st_size)
    fetcher = ChunkFetcher(f"file://{repo}")
    stats = delta.assemble(target, file_blocks(new), local, fetcher)
    assert target.read_bytes() == new
    assert (stats.copied, stats.fetched) == (3, 1)
    assert stats.downloaded == len(blockindex.compress_chunk(blocks_of(9)))


def test_blocks_already_in_place_are_kept_and_moved_ones_stashed_first(
    tmp_path: Path, repo: Path
) -> None:
    """A retry after a power cut: the target holds part of the new file already, and a
    block the new file needs at another place would be covered by a write."""
    new = blocks_of(5, 6, 7, 8)
    target = tmp_path / "target"
    target.write_bytes(blocks_of(6, 6, 0, 8))  # 6 in place and needed at 0; 8 in place
    local = delta.LocalBlocks()
    in_place = local.scan(target, len(new))
    store(repo, blocks_of(5, 7))
    stats = delta.assemble(
        target, file_blocks(new), local, ChunkFetcher(f"file://{repo}"), in_place=in_place
    )
    assert target.read_bytes() == new
    assert (stats.in_place, stats.copied, stats.fetched) == (2, 0, 2)


def test_a_local_block_that_changed_since_the_scan_is_fetched(tmp_path: Path, repo: Path) -> None:
    old = tmp_path / "old"
    old.write_bytes(blocks_of(1, 2))
    local = delta.LocalBlocks()
    local.scan(old, old.stat().st_size)
    old.write_bytes(blocks_of(1, 3))  # block 2 is not there any more
    new = blocks_of(2, 1)
    store(repo, new)
    target = tmp_path / "target"
    target.touch()
    stats = delta.assemble(target, file_blocks(new), local, ChunkFetcher(f"file://{repo}"))
    assert target.read_bytes() == new
    assert (stats.copied, stats.fetched) == (1, 1)


def test_a_tampered_or_missing_chunk_stops_the_delta_before_it_is_written(
    tmp_path: Path, repo: Path
) -> None:
    new = blocks_of(1, 2)
    store(repo, new)
    wrong = blockindex.compress_chunk(blocks_of(3))
    (repo / blockindex.chunk_path(hashlib.sha256(blocks_of(2)).digest())).write_bytes(wrong)
    target = tmp_path / "target"
    target.write_bytes(b"\0" * len(new))
    with pytest.raises(FetchError, match="does not match its sha256"):
        delta.assemble(
            target, file_blocks(new), delta.LocalBlocks(), ChunkFetcher(f"file://{repo}")
        )
    assert blocks_of(3) not in target.read_bytes()
    (repo / blockindex.chunk_path(hashlib.sha256(blocks_of(2)).digest())).unlink()
    with pytest.raises(FetchError, match="not found"):
        delta.assemble(
            target, file_blocks(new), delta.LocalBlocks(), ChunkFetcher(f"file://{repo}")
        )


def test_a_chunk_behind_a_link_is_refused(tmp_path: Path, repo: Path) -> None:
    new = blocks_of(1)
    store(repo, new)
    chunk = repo / blockindex.chunk_path(hashlib.sha256(new).digest())
    (tmp_path / "elsewhere").write_bytes(chunk.read_bytes())
    chunk.unlink()
    chunk.symlink_to(tmp_path / "elsewhere")
    target = tmp_path / "target"
    target.touch()
    with pytest.raises(FetchError, match="cannot read"):
        delta.assemble(
            target, file_blocks(new), delta.LocalBlocks(), ChunkFetcher(f"file://{repo}")
        )


def erofs_like(data_blocks: int) -> bytes:
    """Blocks whose first one carries an erofs superblock saying how many there are."""
    data = bytearray(blocks_of(*range(1, data_blocks + 1)))
    struct.pack_into("<IIIB", data, 1024, 0xE0F5E1E2, 0, 0, 12)
    struct.pack_into("<I", data, 1024 + 0x24, data_blocks)
    return bytes(data)


def test_the_image_extent_covers_erofs_and_its_verity_tree(tmp_path: Path) -> None:
    image = tmp_path / "image"
    image.write_bytes(erofs_like(300))
    assert delta.image_extent(image) == 300 * BLOCK
    made = append_hash_tree(image, "docker-host", "2.0.0")
    assert delta.image_extent(image) == made.image_size
    with image.open("ab") as handle:
        handle.write(b"\0" * BLOCK * 10)  # the rest of a partition
    assert delta.image_extent(image) == made.image_size
    (tmp_path / "blank").write_bytes(b"\0" * BLOCK * 4)
    assert delta.image_extent(tmp_path / "blank") == 0


def test_the_verity_tree_is_computed_from_the_written_data(tmp_path: Path) -> None:
    image = tmp_path / "image"
    image.write_bytes(erofs_like(300))
    made = append_hash_tree(image, "docker-host", "2.0.0")
    good = image.read_bytes()
    slot = tmp_path / "slot"
    # The data and superblock as a delta writes them; the tree left as junk.
    slot.write_bytes(
        good[: made.hash_start_block * BLOCK]
        + os.urandom(len(good) - made.hash_start_block * BLOCK)
    )
    delta.write_verity_tree(slot, made)
    assert slot.read_bytes() == good
    verity.check(slot, made)
    # Data that does not give the signed root hash: nothing is passed as good.
    flip(slot, 7 * BLOCK)
    with pytest.raises(delta.DeltaError, match="root hash"):
        delta.write_verity_tree(slot, made)
