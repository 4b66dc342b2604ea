"""The chunk store: a bundle cut into 4 KiB blocks, each stored once, compressed and
named by its hash, and the index that lists them (composer/publish/chunkstore.py)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from composer.core.errors import KeelError
from composer.core.progress import Progress
from composer.publish import chunkstore
from hostd.formats import blockindex
from tests.unit.composer.publish.builds import BASE, block, blocks_of, build, bundle_file

QUIET = Progress(quiet=True)


def stored(repo: Path) -> dict[str, bytes]:
    """Every file in chunks/'s folders, by its path from chunks/."""
    folder = repo / "chunks"
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.glob("*/*") if p.is_file()}


def payload(build_dir: Path, name: str) -> bytes:
    return (build_dir / "payload" / name).read_bytes()


def test_the_same_bundle_gives_the_same_index_and_chunks(tmp_path: Path) -> None:
    source = bundle_file(build(tmp_path / "builds", "1.0.0"))
    first = chunkstore.chunk_bundle(source, tmp_path / "one", QUIET)
    second = chunkstore.chunk_bundle(source, tmp_path / "two", QUIET)
    assert first.index == second.index
    assert stored(tmp_path / "one") == stored(tmp_path / "two")
    assert first.new_chunks == second.new_chunks == len(stored(tmp_path / "one"))


def test_the_index_lists_every_block_and_each_chunk_holds_its_block(tmp_path: Path) -> None:
    built = build(tmp_path / "builds", "1.0.0")
    chunked = chunkstore.chunk_bundle(bundle_file(built), tmp_path / "repo", QUIET)
    index = blockindex.decode(chunked.index)
    assert index.info.version == "1.0.0"
    for role, name in (("root", "root.erofs"), ("uki", "keel.efi")):
        data = payload(built, name)
        blocks = blocks_of(data)
        assert len(blocks[-1]) < blockindex.BLOCK  # both end in a short block
        found = index.file(role)
        assert found.size == len(data)
        assert list(found.hashes) == [hashlib.sha256(b).digest() for b in blocks]
        for number, digest in enumerate(found.hashes):
            chunk = (tmp_path / "repo" / blockindex.chunk_path(digest)).read_bytes()
            size = found.block_size(number)
            assert blockindex.decompress_chunk(chunk, digest, size) == blocks[number]
    assert chunked.blocks == sum(len(f.hashes) for f in index.files)


def test_the_index_repeats_bundle_json_as_the_bundle_holds_it(tmp_path: Path) -> None:
    source = bundle_file(build(tmp_path / "builds", "1.0.0"))
    with tarfile.open(source) as tar:
        manifest = tar.extractfile("bundle.json").read()  # type: ignore[union-attr]
    chunked = chunkstore.chunk_bundle(source, tmp_path / "repo", QUIET)
    hashes = {f.role: list(f.hashes) for f in blockindex.decode(chunked.index).files}
    assert chunked.index == blockindex.encode(manifest, hashes)


def test_a_block_repeated_in_a_version_is_stored_once(tmp_path: Path) -> None:
    labels = [1, 2, 1, 1, 3, 2]
    source = bundle_file(build(tmp_path / "builds", "1.0.0", labels, tail=b""))
    chunked = chunkstore.chunk_bundle(source, tmp_path / "repo", QUIET)
    # Root: 3 distinct of 6 blocks; kernel image: 3 distinct of 3.
    assert (chunked.blocks, chunked.new_chunks) == (9, 6)
    assert len(stored(tmp_path / "repo")) == 6
    assert chunked.bytes_written == sum(len(data) for data in stored(tmp_path / "repo").values())


def test_a_second_version_writes_only_the_blocks_it_does_not_share(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    one = bundle_file(build(tmp_path / "builds", "1.0.0", BASE))
    changed = [*BASE[:5], 1000, *BASE[6:30], 1001, *BASE[31:], 1002]
    two = bundle_file(build(tmp_path / "builds", "2.0.0", changed))
    chunkstore.chunk_bundle(one, repo, QUIET)
    before = {p: p.stat().st_ino for p in (repo / "chunks").rglob("*.z")}
    second = chunkstore.chunk_bundle(two, repo, QUIET)
    # Three new root blocks, and the kernel image's last (it names the version).
    assert second.new_chunks == 4
    assert second.blocks == len(changed) + 1 + 3
    after = {p: p.stat().st_ino for p in (repo / "chunks").rglob("*.z")}
    assert len(after) == len(before) + 4
    # Chunks already stored were left as they were, not written again.
    assert all(after[path] == inode for path, inode in before.items())
    for label in (1000, 1001, 1002):
        assert (repo / blockindex.chunk_path(hashlib.sha256(block(label)).digest())).is_file()


def test_no_temporary_file_is_left_behind(tmp_path: Path) -> None:
    source = bundle_file(build(tmp_path / "builds", "1.0.0"))
    chunkstore.chunk_bundle(source, tmp_path / "repo", QUIET)
    names = list(stored(tmp_path / "repo"))
    assert names and all(chunkstore.chunk_digest(name.split("/")[1]) for name in names)


def test_chunks_are_synced_once_after_the_last_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "repo/chunks" / chunkstore.UNSYNCED_MARKER
    synced: list[tuple[int, bool]] = []
    monkeypatch.setattr(
        chunkstore.os,
        "sync",
        lambda: synced.append((len(stored(tmp_path / "repo")), marker.exists())),
    )
    source = bundle_file(build(tmp_path / "builds", "1.0.0"))
    chunked = chunkstore.chunk_bundle(source, tmp_path / "repo", QUIET)
    # The marker stood while the chunks were unsynced, and went after the sync.
    assert synced == [(chunked.new_chunks, True)]
    assert not marker.exists()


def test_a_store_left_unsynced_is_checked_and_repaired(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    one = bundle_file(build(tmp_path / "builds", "1.0.0"))
    chunkstore.chunk_bundle(one, repo, QUIET)
    good = stored(repo)
    # What a power cut before the sync can leave: chunks renamed into place whose
    # bytes never reached the disk, and a temporary.
    emptied, garbled = sorted((repo / "chunks").glob("*/*.z"))[:2]
    emptied.write_bytes(b"")
    data = garbled.read_bytes()
    garbled.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    leftover = emptied.with_name(f".{emptied.name}.999")
    leftover.write_bytes(b"partial")
    (repo / "chunks" / chunkstore.UNSYNCED_MARKER).write_bytes(b"")
    chunkstore.chunk_bundle(one, repo, QUIET)
    assert stored(repo) == good
    assert not (repo / "chunks" / chunkstore.UNSYNCED_MARKER).exists()


def test_without_the_marker_the_store_is_trusted_by_name(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    one = bundle_file(build(tmp_path / "builds", "1.0.0"))
    chunkstore.chunk_bundle(one, repo, QUIET)
    some = sorted((repo / "chunks").glob("*/*.z"))[0]
    some.write_bytes(b"")
    chunked = chunkstore.chunk_bundle(one, repo, QUIET)
    assert chunked.new_chunks == 0 and some.read_bytes() == b""  # not read: no cost


def test_a_publish_that_fails_leaves_the_marker(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    with pytest.raises(KeelError):
        chunkstore.chunk_bundle(tmp_path / "missing.keelbundle", repo, QUIET)
    assert (repo / "chunks" / chunkstore.UNSYNCED_MARKER).exists()


def test_progress_is_shown_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = bundle_file(build(tmp_path / "builds", "1.0.0"))
    chunkstore.chunk_bundle(source, tmp_path / "repo", Progress())
    err = capsys.readouterr().err
    assert "chunking root.erofs.zst: 100%" in err
    assert "chunking keel.efi: 100%" in err


def test_a_root_image_zstd_cannot_read_is_an_error(tmp_path: Path) -> None:
    source = bundle_file(build(tmp_path / "builds", "1.0.0"))
    with tarfile.open(source) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    with tarfile.open(source, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members:
            if member.name == "root.erofs.zst":
                data = b"not zstd at all" * 1000
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    with pytest.raises(KeelError, match=r"root\.erofs\.zst"):
        chunkstore.chunk_bundle(source, tmp_path / "repo", QUIET)


@pytest.mark.parametrize(
    ("name", "digest"),
    [
        (f"{'ab' * 32}.z", bytes.fromhex("ab" * 32)),
        (f"{'AB' * 32}.z", None),  # chunk_path writes lower case only
        (f".{'ab' * 32}.z.1234", None),  # a temporary
        (f"{'ab' * 31}.z", None),
        (f"{'ab' * 32}.gz", None),
    ],
)
def test_only_chunk_names_give_a_digest(name: str, digest: bytes | None) -> None:
    assert chunkstore.chunk_digest(name) == digest
