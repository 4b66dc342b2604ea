"""keel prune: the newest versions stay with every chunk they need, the rest goes, and
the metadata is re-signed so clients keep refreshing (python-tuf's client checks)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from tuf.api.metadata import Targets

from composer.core.errors import KeelError
from composer.publish import indexes, keys, prune, repository, serve
from hostd.formats import blockindex
from tests.unit.composer.publish.builds import BASE, block, build
from tests.unit.composer.publish.test_repository import client, keel, newest_target

# Each version shares most blocks with the one before and adds one of its own.
VERSIONS = {
    "1.0.0": BASE,
    "1.1.0": [*BASE, 101],
    "1.2.0": [*BASE[1:], 101, 102],
}


@pytest.fixture
def repo(tmp_path: Path, key_dir: Path) -> Path:
    """demo 1.0.0, 1.1.0 and 1.2.0, and other 0.1.0, published in that order."""
    for version, labels in VERSIONS.items():
        repository.publish(tmp_path / "repo", build(tmp_path / "builds", version, labels), key_dir)
    other = build(tmp_path / "builds", "0.1.0", [500, 501], name="other")
    repository.publish(tmp_path / "repo", other, key_dir)
    return tmp_path / "repo"


def signed_targets(repo: Path) -> Targets:
    current = repository.Repository(repo).current()
    assert current is not None
    return current[2].signed


def every_file(repo: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}


def chunks_needed(repo: Path) -> set[Path]:
    """The chunk files the indexes in the signed metadata name."""
    needed = set()
    store = repository.Repository(repo)
    for target in signed_targets(repo).targets.values():
        if indexes.indexed_version(target) is not None:
            data = indexes.read_stored(store, target)
            assert data is not None
            for blocks in blockindex.decode(data).files:
                needed |= {repo / blockindex.chunk_path(d) for d in blocks.hashes}
    return needed


def stored_targets(repo: Path) -> set[Path]:
    return {p for p in (repo / "targets").rglob("*") if p.is_file()}


def test_prune_keeps_the_newest_versions_and_exactly_their_chunks(
    repo: Path, key_dir: Path
) -> None:
    chunks_before = set((repo / "chunks").rglob("*.z"))
    pruned = prune.prune(repo, key_dir, keep=2)
    assert [str(v) for v in pruned.removed] == ["demo 1.0.0 (x86-64)"]
    assert [str(v) for v in pruned.kept] == [
        "demo 1.1.0 (x86-64)",
        "demo 1.2.0 (x86-64)",
        "other 0.1.0 (x86-64)",
    ]
    assert pruned.targets == [
        "demo/x86-64/demo-1.0.0-x86-64.keelbundle",
        "demo/x86-64/demo-1.0.0-x86-64.keelindex",
    ]
    assert sorted(signed_targets(repo).targets) == [
        "demo/x86-64/demo-1.1.0-x86-64.keelbundle",
        "demo/x86-64/demo-1.1.0-x86-64.keelindex",
        "demo/x86-64/demo-1.2.0-x86-64.keelbundle",
        "demo/x86-64/demo-1.2.0-x86-64.keelindex",
        "other/x86-64/other-0.1.0-x86-64.keelbundle",
        "other/x86-64/other-0.1.0-x86-64.keelindex",
    ]
    needed = chunks_needed(repo)
    chunks_after = set((repo / "chunks").rglob("*.z"))
    assert chunks_after == needed
    # Only 1.0.0's own kernel image block was not shared with a kept version.
    assert len(chunks_before - chunks_after) == 1
    assert pruned.chunks == 1
    store = repository.Repository(repo)
    assert stored_targets(repo) == {
        store.stored_target(t) for t in signed_targets(repo).targets.values()
    }
    assert pruned.bytes_freed > 0 and len(pruned.files) == 3  # bundle, index, chunk
    assert not any(path.exists() for path in pruned.files)


def test_keeping_one_leaves_the_newest_of_each_image(repo: Path, key_dir: Path) -> None:
    pruned = prune.prune(repo, key_dir, keep=1)
    assert [str(v) for v in pruned.removed] == ["demo 1.0.0 (x86-64)", "demo 1.1.0 (x86-64)"]
    assert [str(v) for v in pruned.kept] == ["demo 1.2.0 (x86-64)", "other 0.1.0 (x86-64)"]
    assert set((repo / "chunks").rglob("*.z")) == chunks_needed(repo)
    # Block 0 of the root is in no kept version; block 1 is in 1.2.0.
    assert not (repo / blockindex.chunk_path(hashlib.sha256(block(0)).digest())).exists()
    assert (repo / blockindex.chunk_path(hashlib.sha256(block(1)).digest())).exists()


def test_clients_refresh_the_re_signed_metadata(repo: Path, key_dir: Path, tmp_path: Path) -> None:
    with serve.serving(repo) as url:
        before = client(url, key_dir / "root.json", tmp_path / "host")
        assert newest_target(before, tmp_path / "host/metadata").endswith("1.2.0-x86-64.keelbundle")
        pruned = prune.prune(repo, key_dir, keep=1)
        assert pruned.targets_version == 5
        # A host that had refreshed before, and a new one, both accept the new state.
        for state in (tmp_path / "host", tmp_path / "new-host"):
            updater = client(url, key_dir / "root.json", state)
            assert newest_target(updater, state / "metadata").endswith("1.2.0-x86-64.keelbundle")
            assert updater.get_targetinfo("demo/x86-64/demo-1.0.0-x86-64.keelbundle") is None
            index = updater.get_targetinfo("demo/x86-64/demo-1.2.0-x86-64.keelindex")
            assert index is not None
            blockindex.decode(Path(updater.download_target(index)).read_bytes())


def test_a_dry_run_changes_nothing(repo: Path, key_dir: Path) -> None:
    before = every_file(repo)
    pruned = prune.prune(repo, key_dir, keep=1, dry_run=True)
    assert every_file(repo) == before
    assert [str(v) for v in pruned.removed] == ["demo 1.0.0 (x86-64)", "demo 1.1.0 (x86-64)"]
    assert pruned.targets_version is None
    # It names what a real run deletes.
    real = prune.prune(repo, key_dir, keep=1)
    assert sorted(pruned.files) == sorted(real.files)
    assert pruned.bytes_freed == real.bytes_freed > 0


def test_pruning_again_changes_nothing(repo: Path, key_dir: Path) -> None:
    prune.prune(repo, key_dir, keep=1)
    before = every_file(repo)
    again = prune.prune(repo, key_dir, keep=1)
    assert (again.removed, again.targets, again.files, again.targets_version) == ([], [], [], None)
    assert every_file(repo) == before


def test_a_prune_stopped_after_signing_is_finished_by_the_next(
    repo: Path, key_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def power_cut(*_: object) -> list[Path]:
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(prune, "_garbage", power_cut)
        with pytest.raises(KeyboardInterrupt):
            prune.prune(repo, key_dir, keep=1)
    # Signed without the old versions; their files are still there.
    assert len(signed_targets(repo).targets) == 4
    assert len(stored_targets(repo)) == 8
    finished = prune.prune(repo, key_dir, keep=1)
    assert finished.removed == [] and finished.targets_version is None
    assert len(finished.files) > 4
    assert len(stored_targets(repo)) == 4
    assert set((repo / "chunks").rglob("*.z")) == chunks_needed(repo)


def test_leftovers_of_an_interrupted_publish_are_deleted(repo: Path, key_dir: Path) -> None:
    leftovers = [
        repo / "chunks/ab" / f".{'ab' * 32}.z.4242",  # a chunk being written
        repo / "chunks/cd" / f"{'cd' * 32}.z",  # a chunk of a version never signed
        repo / "targets/demo/x86-64/.demo-9.0.0-x86-64.keelbundle.tmp",
    ]
    for path in leftovers:
        path.write_bytes(b"left")
    kept = every_file(repo).keys() - set(leftovers)
    pruned = prune.prune(repo, key_dir, keep=3)
    assert pruned.removed == []
    assert sorted(pruned.files) == sorted(leftovers)
    assert every_file(repo).keys() == kept


def test_a_version_that_cannot_be_ordered_is_kept(
    repo: Path, key_dir: Path, tmp_path: Path
) -> None:
    odd = build(tmp_path / "builds", "3.0.0+build1", [*BASE, 300])
    repository.publish(repo, odd, key_dir, force=True)
    pruned = prune.prune(repo, key_dir, keep=1)
    assert [str(v) for v in pruned.unordered] == ["demo 3.0.0+build1 (x86-64)"]
    assert "demo/x86-64/demo-3.0.0+build1-x86-64.keelindex" in signed_targets(repo).targets
    assert set((repo / "chunks").rglob("*.z")) == chunks_needed(repo)


def test_a_damaged_kept_index_stops_the_prune_before_any_change(repo: Path, key_dir: Path) -> None:
    target = signed_targets(repo).targets["demo/x86-64/demo-1.2.0-x86-64.keelindex"]
    stored = repository.Repository(repo).stored_target(target)
    stored.write_bytes(stored.read_bytes()[:-32])
    before = every_file(repo)
    with pytest.raises(KeelError) as caught:
        prune.prune(repo, key_dir, keep=1)
    assert "demo-1.2.0-x86-64.keelindex" in caught.value.message
    assert "--force" in (caught.value.hint or "")
    assert every_file(repo) == before


@pytest.mark.parametrize("keep", [0, -1])
def test_keeping_fewer_than_one_is_refused(repo: Path, key_dir: Path, keep: int) -> None:
    with pytest.raises(KeelError, match="would leave no version") as caught:
        prune.prune(repo, key_dir, keep=keep)
    assert caught.value.hint


def test_a_folder_that_is_no_repository_is_refused(key_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(KeelError, match="is not an update repository") as caught:
        prune.prune(tmp_path / "empty", key_dir, keep=1)
    assert "--repo" in (caught.value.hint or "")
    assert list((tmp_path / "empty").iterdir()) == []


def test_other_keys_are_refused_before_anything_changes(repo: Path, tmp_path: Path) -> None:
    keys.generate_keys(tmp_path / "other")
    before = every_file(repo)
    with pytest.raises(KeelError, match=r"not a .* key of this repository"):
        prune.prune(repo, tmp_path / "other", keep=1)
    assert every_file(repo) == before


def test_keel_prune_prints_what_goes(repo: Path, key_dir: Path) -> None:
    common = ["--repo", str(repo), "--keys", str(key_dir), "--keep", "1"]
    dry = keel("prune", *common, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[:2] == [
        "would go: demo 1.0.0 (x86-64)",
        "would go: demo 1.1.0 (x86-64)",
    ]
    # Block 0 of the root, and the two versions' own kernel image blocks.
    assert "2 versions would go, 4 target files and 3 chunks would be deleted" in dry.stdout
    done = keel("prune", *common, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["removed"] == ["demo 1.0.0 (x86-64)", "demo 1.1.0 (x86-64)"]
    assert (result["chunks"], len(result["files"]), result["targets_version"]) == (3, 7, 5)
    again = keel("prune", *common)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("0 versions removed, 0 target files and 0 chunks deleted")
    assert again.stdout.rstrip().endswith("; 2 versions kept")
    refused = keel("prune", "--repo", str(repo), "--keys", str(key_dir), "--keep", "0")
    assert refused.returncode == 1
    assert "--keep 0 would leave no version" in refused.stderr
