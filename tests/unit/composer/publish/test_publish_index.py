"""keel publish with deltas: each version's block index is a TUF target of its own, its
chunks are in the store before any metadata names them, and python-tuf's client (what
hostd uses) verifies the index like a bundle."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from tuf.api import exceptions
from tuf.api.metadata import Metadata, Targets

from composer.publish import chunkstore, indexes, repository, serve
from hostd.formats import blockindex
from tests.unit.composer.publish.builds import BASE, build
from tests.unit.composer.publish.test_repository import client, keel

INDEX_1 = "demo/x86-64/demo-1.0.0-x86-64.keelindex"
BUNDLE_1 = "demo/x86-64/demo-1.0.0-x86-64.keelbundle"


def signed_targets(repo: Path) -> Targets:
    current = repository.Repository(repo).current()
    assert current is not None
    return current[2].signed


def chunk_files(repo: Path) -> set[Path]:
    return set((repo / "chunks").rglob("*.z"))


def test_the_index_is_a_target_beside_the_bundle(key_dir: Path, tmp_path: Path) -> None:
    built = build(tmp_path / "builds", "1.0.0")
    published = repository.publish(tmp_path / "repo", built, key_dir)
    targets = signed_targets(tmp_path / "repo").targets
    assert sorted(targets) == [BUNDLE_1, INDEX_1]
    index_target = targets[INDEX_1]
    # No custom.keel: a hostd that predates deltas takes those targets for bundles.
    assert index_target.custom == {
        "keel_index": {"name": "demo", "version": "1.0.0", "architecture": "x86-64"}
    }
    assert targets[BUNDLE_1].custom["keel"]["index"] == INDEX_1
    # Stored like a bundle: named by its sha256 (consistent snapshots).
    assert published.index is not None
    stored = published.index.stored_at
    digest = hashlib.sha256(stored.read_bytes()).hexdigest()
    assert stored == tmp_path / "repo/targets/demo/x86-64" / f"{digest}.demo-1.0.0-x86-64.keelindex"
    assert index_target.hashes == {"sha256": digest}
    assert index_target.length == stored.stat().st_size
    assert published.index.target_path == INDEX_1
    assert published.index.new_chunks == len(chunk_files(tmp_path / "repo")) > 0


def test_a_client_downloads_and_verifies_the_index(key_dir: Path, tmp_path: Path) -> None:
    built = build(tmp_path / "builds", "1.0.0")
    repository.publish(tmp_path / "repo", built, key_dir)
    with serve.serving(tmp_path / "repo") as url:
        updater = client(url, key_dir / "root.json", tmp_path / "host")
        updater.refresh()
        bundle_info = updater.get_targetinfo(BUNDLE_1)
        assert bundle_info is not None
        info = updater.get_targetinfo(bundle_info.custom["keel"]["index"])
        assert info is not None
        index = blockindex.decode(Path(updater.download_target(info)).read_bytes())
    assert (index.info.name, index.info.version) == ("demo", "1.0.0")
    assert index.file("root").sha256 == bundle_info_sha256(built, "root.erofs")


def bundle_info_sha256(built: Path, name: str) -> str:
    return hashlib.sha256((built / "payload" / name).read_bytes()).hexdigest()


def test_a_tampered_index_is_refused_by_the_client(key_dir: Path, tmp_path: Path) -> None:
    published = repository.publish(tmp_path / "repo", build(tmp_path / "builds", "1.0.0"), key_dir)
    assert published.index is not None
    data = bytearray(published.index.stored_at.read_bytes())
    data[-1] ^= 1  # one block hash changed
    published.index.stored_at.write_bytes(bytes(data))
    with serve.serving(tmp_path / "repo") as url:
        updater = client(url, key_dir / "root.json", tmp_path / "host")
        updater.refresh()
        info = updater.get_targetinfo(INDEX_1)
        assert info is not None
        with pytest.raises((exceptions.RepositoryError, exceptions.DownloadError)):
            updater.download_target(info)
    assert not list((tmp_path / "host/downloads").glob("*"))


def test_every_chunk_an_index_names_is_stored_and_holds_its_block(
    key_dir: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repository.publish(repo, build(tmp_path / "builds", "1.0.0"), key_dir)
    repository.publish(repo, build(tmp_path / "builds", "1.1.0", [*BASE, 77]), key_dir)
    for path, target in signed_targets(repo).targets.items():
        if indexes.indexed_version(target) is None:
            continue
        data = indexes.read_stored(repository.Repository(repo), target)
        assert data is not None, path
        for blocks in blockindex.decode(data).files:
            for number, digest in enumerate(blocks.hashes):
                chunk = (repo / blockindex.chunk_path(digest)).read_bytes()
                blockindex.decompress_chunk(chunk, digest, blocks.block_size(number))


def test_a_second_version_stores_only_its_new_chunks(key_dir: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    first = repository.publish(repo, build(tmp_path / "builds", "1.0.0"), key_dir)
    before = chunk_files(repo)
    second = repository.publish(repo, build(tmp_path / "builds", "1.1.0", [*BASE, 77]), key_dir)
    assert first.index is not None and second.index is not None
    # Block 77 of the root, and the kernel image's last block (it names the version);
    # the root's short last block moved, but is found by its content.
    assert second.index.new_chunks == 2
    assert len(chunk_files(repo) - before) == 2
    assert before <= chunk_files(repo)


def test_chunks_are_synced_before_any_metadata_is_written(
    key_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    monkeypatch.setattr(chunkstore.os, "sync", lambda: events.append("sync"))
    write = repository.Repository.write

    def recording_write(self: repository.Repository, metadata: Metadata[Any], **kw: bool) -> bytes:
        events.append(metadata.signed.type)
        return write(self, metadata, **kw)

    monkeypatch.setattr(repository.Repository, "write", recording_write)
    repository.publish(tmp_path / "repo", build(tmp_path / "builds", "1.0.0"), key_dir)
    assert events == ["sync", "targets", "snapshot", "timestamp"]


def test_republishing_the_same_bundle_reuses_its_index(
    key_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    built = build(tmp_path / "builds", "1.0.0")
    first = repository.publish(repo, built, key_dir)

    def no_chunking(*_: object) -> None:
        raise AssertionError("the index was computed again")

    monkeypatch.setattr(chunkstore, "chunk_bundle", no_chunking)
    again = repository.publish(repo, built, key_dir, force=True)
    assert first.index is not None and again.index is not None
    assert again.index.reused and not first.index.reused
    assert (again.index.new_chunks, again.index.blocks) == (0, first.index.blocks)
    assert again.index.stored_at == first.index.stored_at
    assert signed_targets(repo).targets[INDEX_1].hashes == {
        "sha256": again.index.stored_at.name.split(".")[0]
    }


@pytest.mark.parametrize("damage", ["index changed", "index missing", "chunk missing"])
def test_a_damaged_index_or_chunk_is_made_again_on_republishing(
    key_dir: Path, tmp_path: Path, damage: str
) -> None:
    repo = tmp_path / "repo"
    built = build(tmp_path / "builds", "1.0.0")
    first = repository.publish(repo, built, key_dir)
    assert first.index is not None
    good = first.index.stored_at.read_bytes()
    some_chunk = sorted(chunk_files(repo))[3]
    if damage == "index changed":
        first.index.stored_at.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    elif damage == "index missing":
        first.index.stored_at.unlink()
    else:
        some_chunk.unlink()
    again = repository.publish(repo, built, key_dir, force=True)
    assert again.index is not None and not again.index.reused
    assert again.index.stored_at.read_bytes() == good
    assert some_chunk.is_file()


def test_republishing_the_version_with_another_bundle_makes_a_new_index(
    key_dir: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    first = repository.publish(repo, build(tmp_path / "builds", "1.0.0"), key_dir)
    other = build(tmp_path / "other", "1.0.0", [*BASE, 555])
    again = repository.publish(repo, other, key_dir, force=True)
    assert first.index is not None and again.index is not None
    assert not again.index.reused and again.index.new_chunks > 0
    assert again.index.stored_at != first.index.stored_at
    target = signed_targets(repo).targets[INDEX_1]
    assert target.hashes["sha256"] == again.index.stored_at.name.split(".")[0]


def test_keel_publish_says_what_it_wrote(key_dir: Path, tmp_path: Path) -> None:
    built = build(tmp_path / "builds", "1.0.0")
    common = ["--repo", str(tmp_path / "repo"), "--keys", str(key_dir)]
    published = keel("publish", str(built), *common)
    assert published.returncode == 0, published.stderr
    lines = published.stdout.splitlines()
    assert lines[0].startswith(f"published {BUNDLE_1}")
    # 40 root blocks and a short one, and 3 blocks of the kernel image.
    assert lines[1].startswith(f"index {INDEX_1}: 44 blocks, 44 new chunks written (")
    assert "chunking root.erofs.zst: 100%" in published.stderr
    again = keel("publish", str(built), *common, "--force", "--json")
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert result["index"]["target"] == INDEX_1
    assert result["index"]["reused"] is True
    assert (result["index"]["blocks"], result["index"]["new_chunks"]) == (44, 0)
    assert "chunking" not in again.stderr  # --json: no progress
