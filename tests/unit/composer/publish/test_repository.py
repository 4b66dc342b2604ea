"""keel publish + keel serve, checked with the client hosts use (python-tuf ngclient)
over HTTP on loopback: real keys, real signatures, small fake bundles."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api import exceptions
from tuf.api.metadata import Metadata, Targets, Timestamp
from tuf.ngclient import Updater

from composer.build import bundle
from composer.core.errors import KeelError
from composer.publish import keys, repository, serve
from tests.unit.composer.build.test_bundle import bundle_of, fake_build


@pytest.fixture
def repo(tmp_path: Path, key_dir: Path) -> Path:
    """A repository with demo 1.0.0 and 1.1.0 published."""
    for version in ("1.0.0", "1.1.0"):
        repository.publish(tmp_path / "repo", fake_build(tmp_path / "builds", version), key_dir)
    return tmp_path / "repo"


@pytest.fixture
def url(repo: Path) -> Iterator[str]:
    with serve.serving(repo) as served:
        yield served


def keel(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "composer.cli", *args], capture_output=True, text=True, timeout=60
    )


def client(url: str, trust_root: Path, state: Path) -> Updater:
    """An updater set up the way hostd sets one up: the baked root.json as bootstrap."""
    (state / "metadata").mkdir(parents=True, exist_ok=True)
    return Updater(
        metadata_dir=str(state / "metadata"),
        metadata_base_url=f"{url}metadata/",
        target_dir=str(state / "downloads"),
        target_base_url=f"{url}targets/",
        bootstrap=trust_root.read_bytes(),
    )


def newest_target(updater: Updater, metadata_dir: Path) -> str:
    """What hostd does to find the newest version: refresh, then read the verified
    targets metadata ngclient keeps in its metadata folder."""
    updater.refresh()
    targets = Metadata[Targets].from_file(str(metadata_dir / "targets.json")).signed
    # Only bundles carry custom.keel (block indexes have custom.keel_index).
    bundles = {path: t.custom["keel"] for path, t in targets.targets.items() if "keel" in t.custom}
    mine = {
        path: keel["version"]
        for path, keel in bundles.items()
        if keel["name"] == "demo" and keel["architecture"] == "x86-64"
    }
    return max(mine, key=lambda path: repository.version_key(mine[path]))


def test_client_downloads_and_verifies_newest_bundle(
    url: str, key_dir: Path, tmp_path: Path
) -> None:
    updater = client(url, key_dir / "root.json", tmp_path / "host")
    path = newest_target(updater, tmp_path / "host/metadata")
    assert path == "demo/x86-64/demo-1.1.0-x86-64.keelbundle"
    info = updater.get_targetinfo(path)
    assert info is not None
    assert info.custom == {
        "keel": {
            "name": "demo",
            "version": "1.1.0",
            "architecture": "x86-64",
            "kernel_version": "6.1.0-test-amd64",
            "index": "demo/x86-64/demo-1.1.0-x86-64.keelindex",
        }
    }
    downloaded = Path(updater.download_target(info))
    assert downloaded.read_bytes() == bundle_of(tmp_path / "builds/demo/1.1.0").read_bytes()
    assert bundle.verify_bundle(downloaded).version == "1.1.0"
    # Earlier versions stay listed (a host on 1.0.0 may still need to find its own).
    assert updater.get_targetinfo("demo/x86-64/demo-1.0.0-x86-64.keelbundle") is not None


def test_repository_layout_uses_consistent_snapshots(repo: Path) -> None:
    names = sorted(p.name for p in (repo / "metadata").iterdir())
    assert names == [
        "1.root.json",
        "1.snapshot.json",
        "1.targets.json",
        "2.snapshot.json",
        "2.targets.json",
        "root.json",
        "timestamp.json",
    ]
    stored = sorted(p.name for p in (repo / "targets/demo/x86-64").iterdir())
    assert len(stored) == 4  # two bundles, two block indexes
    for name in stored:
        sha256, _, file_name = name.partition(".")
        assert len(sha256) == 64
        assert file_name.startswith("demo-1.")
    assert sorted(name.split(".", 1)[1] for name in stored) == [
        "demo-1.0.0-x86-64.keelbundle",
        "demo-1.0.0-x86-64.keelindex",
        "demo-1.1.0-x86-64.keelbundle",
        "demo-1.1.0-x86-64.keelindex",
    ]
    timestamp = json.loads((repo / "metadata/timestamp.json").read_text())["signed"]
    assert timestamp["version"] == 2
    assert timestamp["meta"]["snapshot.json"]["version"] == 2


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_tampered_bundle_is_refused(
    repo: Path, url: str, key_dir: Path, tmp_path: Path, damage: str
) -> None:
    (stored,) = (repo / "targets/demo/x86-64").glob("*demo-1.1.0-x86-64.keelbundle")
    data = bytearray(stored.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        del data[len(data) // 2 :]
    stored.write_bytes(bytes(data))
    updater = client(url, key_dir / "root.json", tmp_path / "host")
    info = updater.get_targetinfo("demo/x86-64/demo-1.1.0-x86-64.keelbundle")
    assert info is not None
    with pytest.raises((exceptions.RepositoryError, exceptions.DownloadError)):
        updater.download_target(info)
    assert not list((tmp_path / "host/downloads").glob("*"))


def test_expired_timestamp_is_refused(repo: Path, url: str, key_dir: Path, tmp_path: Path) -> None:
    repository.publish(
        repo,
        fake_build(tmp_path / "builds", "1.2.0"),
        key_dir,
        expiries={"timestamp": timedelta(0)},
    )
    updater = client(url, key_dir / "root.json", tmp_path / "host")
    with pytest.raises(exceptions.ExpiredMetadataError):
        updater.refresh()


def test_metadata_signed_by_other_keys_is_refused(url: str, tmp_path: Path) -> None:
    other = keys.generate_keys(tmp_path / "other").root_metadata
    updater = client(url, other, tmp_path / "host")
    with pytest.raises(exceptions.UnsignedMetadataError):
        updater.refresh()


def test_publishing_with_other_keys_is_refused(repo: Path, tmp_path: Path) -> None:
    keys.generate_keys(tmp_path / "other")
    before = sorted(p.name for p in (repo / "metadata").iterdir())
    with pytest.raises(KeelError, match=r"not a .* key of this repository"):
        repository.publish(repo, fake_build(tmp_path / "builds", "2.0.0"), tmp_path / "other")
    assert sorted(p.name for p in (repo / "metadata").iterdir()) == before


def test_older_or_same_version_is_refused_unless_forced(
    repo: Path, key_dir: Path, tmp_path: Path
) -> None:
    older = fake_build(tmp_path / "older", "1.0.5")
    with pytest.raises(KeelError, match=r"1\.0\.5 \(x86-64\) is not newer than 1\.1\.0"):
        repository.publish(repo, older, key_dir)
    with pytest.raises(KeelError, match="is not newer"):
        repository.publish(repo, bundle_of(tmp_path / "builds/demo/1.1.0"), key_dir)
    published = repository.publish(repo, older, key_dir, force=True)
    assert published.targets_version == 3


def test_other_image_name_has_its_own_version_line(
    repo: Path, key_dir: Path, tmp_path: Path
) -> None:
    other = fake_build(tmp_path / "builds", "0.1.0", name="other")
    published = repository.publish(repo, other, key_dir)
    assert published.target_path == "other/x86-64/other-0.1.0-x86-64.keelbundle"


def test_root_can_be_re_signed_with_new_expiry(
    repo: Path, url: str, key_dir: Path, tmp_path: Path
) -> None:
    repository.publish(
        repo,
        fake_build(tmp_path / "builds", "1.2.0"),
        key_dir,
        expiries={"root": timedelta(days=730)},
    )
    assert (repo / "metadata/2.root.json").is_file()
    # A host that baked version 1 follows the chain to version 2.
    updater = client(url, key_dir / "root.json", tmp_path / "host")
    updater.refresh()
    cached = Metadata.from_file(str(tmp_path / "host/metadata/root.json"))
    assert cached.signed.version == 2


def test_re_signing_without_a_bundle_renews_expired_metadata(
    repo: Path, url: str, key_dir: Path, tmp_path: Path
) -> None:
    repository.publish(repo, None, key_dir, expiries={"timestamp": timedelta(0)})
    with pytest.raises(exceptions.ExpiredMetadataError):
        client(url, key_dir / "root.json", tmp_path / "expired").refresh()
    published = repository.publish(repo, None, key_dir)
    assert published.target_path is None
    assert published.timestamp_version == 4
    updater = client(url, key_dir / "root.json", tmp_path / "host")
    assert newest_target(updater, tmp_path / "host/metadata").endswith(
        "demo-1.1.0-x86-64.keelbundle"
    )


def take_root_key_offline(key_dir: Path, offline: Path) -> Path:
    """Move root.pem out of the keys folder, as keys.py advises operators to."""
    offline.mkdir()
    return (key_dir / "root.pem").rename(offline / "root.pem")


def test_publishing_and_re_signing_do_not_need_the_root_key(key_dir: Path, tmp_path: Path) -> None:
    take_root_key_offline(key_dir, tmp_path / "offline")
    for version in ("1.0.0", "1.1.0"):
        repository.publish(tmp_path / "repo", fake_build(tmp_path / "builds", version), key_dir)
    published = repository.publish(tmp_path / "repo", None, key_dir)
    assert published.target_path is None
    assert published.timestamp_version == 3
    assert not (key_dir / "root.pem").exists()
    # Hosts verify the result from the root their image baked.
    with serve.serving(tmp_path / "repo") as url:
        updater = client(url, key_dir / "root.json", tmp_path / "host")
        path = newest_target(updater, tmp_path / "host/metadata")
        assert path == "demo/x86-64/demo-1.1.0-x86-64.keelbundle"
        info = updater.get_targetinfo(path)
        assert info is not None
        assert bundle.verify_bundle(Path(updater.download_target(info))).version == "1.1.0"


@pytest.mark.parametrize(
    ("operation", "needed_for"),
    [
        ("renew root", "renewing root metadata (--expires root=...)"),
        ("rotate root", "rotating the root key"),
        ("rotate targets", "rotating the targets key"),
    ],
)
def test_operations_that_sign_root_say_they_need_the_root_key(
    repo: Path, key_dir: Path, tmp_path: Path, operation: str, needed_for: str
) -> None:
    root_key = take_root_key_offline(key_dir, tmp_path / "offline")
    before = {p: p.read_bytes() for p in [*repo.rglob("*"), *key_dir.rglob("*")] if p.is_file()}
    with pytest.raises(KeelError) as caught:
        if operation == "renew root":
            new_build = fake_build(tmp_path / "builds", "1.2.0")
            repository.publish(repo, new_build, key_dir, expiries={"root": timedelta(days=730)})
        else:
            repository.rotate_key(repo, key_dir, operation.split()[1])
    assert caught.value.message == (
        f"{needed_for} needs the root key, and {key_dir / 'root.pem'} does not exist"
    )
    assert "bring the offline root key back" in (caught.value.hint or "")
    # Refused before anything was written: no metadata, bundle or pending key.
    after = {p: p.read_bytes() for p in [*repo.rglob("*"), *key_dir.rglob("*")] if p.is_file()}
    assert after == before
    # With the root key back, the same operation works.
    root_key.rename(key_dir / "root.pem")
    if operation == "renew root":
        repository.publish(repo, None, key_dir, expiries={"root": timedelta(days=730)})
    else:
        repository.rotate_key(repo, key_dir, operation.split()[1])
    assert keys.load_root(repo / "metadata/root.json").signed.version == 2


def test_keel_publish_without_the_root_key_and_what_it_says_when_root_needs_it(
    key_dir: Path, tmp_path: Path
) -> None:
    take_root_key_offline(key_dir, tmp_path / "offline")
    build = fake_build(tmp_path / "builds", "1.0.0")
    common = ["--repo", str(tmp_path / "repo"), "--keys", str(key_dir)]
    published = keel("publish", str(build), *common)
    assert published.returncode == 0, published.stderr
    assert published.stdout.startswith("published demo/x86-64/demo-1.0.0-x86-64.keelbundle")
    assert keel("publish", *common).returncode == 0
    renewed = keel("publish", *common, "--expires", "root=365d")
    assert renewed.returncode != 0
    assert (
        f"renewing root metadata (--expires root=...) needs the root key, and "
        f"{key_dir / 'root.pem'} does not exist"
    ) in renewed.stderr
    rotated = keel("rotate-key", "snapshot", *common)
    assert rotated.returncode != 0
    assert "rotating the snapshot key needs the root key" in rotated.stderr


def test_re_signing_needs_an_existing_repository(key_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(KeelError, match="not an update repository yet"):
        repository.publish(tmp_path / "empty", None, key_dir)


def test_damaged_bundle_is_not_published(key_dir: Path, tmp_path: Path) -> None:
    path = bundle_of(fake_build(tmp_path / "builds"))
    path.write_bytes(path.read_bytes()[:-20000])
    with pytest.raises(KeelError):
        repository.publish(tmp_path / "repo", path, key_dir)
    assert not (tmp_path / "repo/metadata/timestamp.json").exists()


def test_serve_answers_on_loopback_only(repo: Path) -> None:
    with serve.serving(repo) as served:
        assert served.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{served}metadata/timestamp.json") as response:
            assert json.load(response)["signed"]["_type"] == "timestamp"
    with pytest.raises(KeelError, match="loopback only"):
        serve.make_server(repo, bind="0.0.0.0")


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("1.0.0", "1.0.1"),
        ("1.9.0", "1.10.0"),
        ("1.2", "1.2.1"),
        ("2.0-rc1", "2.0"),
        ("2.0-rc1", "2.0-rc2"),
        ("2.0-rc.2", "2.0-rc.10"),
        ("9", "10.0"),
    ],
)
def test_versions_compare_numerically_part_by_part(older: str, newer: str) -> None:
    assert repository.version_key(older) < repository.version_key(newer)


def test_equal_versions_compare_equal() -> None:
    assert repository.version_key("1.2") == repository.version_key("1.2.0")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", timedelta(days=90)),
        ("12h", timedelta(hours=12)),
        ("0s", timedelta(0)),
        ("-1h", timedelta(hours=-1)),
        ("2w", timedelta(weeks=2)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert repository.parse_duration(text) == expected


def test_bad_expiry_is_refused() -> None:
    with pytest.raises(KeelError, match="ROLE=DURATION"):
        repository.parse_expiry("bundle=1d")
    with pytest.raises(KeelError, match="not a duration"):
        repository.parse_expiry("timestamp=1 day")


@pytest.mark.parametrize("role", keys.ROLES)
def test_rotated_key_is_followed_by_a_host_that_trusts_the_old_root(
    role: str, repo: Path, url: str, key_dir: Path, tmp_path: Path
) -> None:
    host = client(url, key_dir / "root.json", tmp_path / "host")
    assert newest_target(host, tmp_path / "host/metadata").endswith("1.1.0-x86-64.keelbundle")
    baked = (key_dir / "root.json").read_bytes()
    old_key = (key_dir / f"{role}.pem").read_bytes()

    rotated = repository.rotate_key(repo, key_dir, role)

    root = keys.load_root(repo / "metadata/root.json").signed
    assert rotated.root_version == root.version == 2
    assert root.roles[role].keyids == [rotated.new_keyid]
    assert rotated.old_keyid not in root.keys  # no role trusts it any more
    assert rotated.retired_key.read_bytes() == old_key
    assert (key_dir / f"{role}.pem").read_bytes() != old_key
    assert not keys.pending_key_path(key_dir, role).exists()
    assert (key_dir / "root.json").read_bytes() == (repo / "metadata/2.root.json").read_bytes()
    # The keys folder keeps working: the next version is signed with the new key.
    repository.publish(repo, fake_build(tmp_path / "builds", "1.2.0"), key_dir)
    # Hosts bootstrap from the root their image baked (hostd does): one that already
    # refreshed before the rotation, and a fresh one; both follow to root v2.
    (tmp_path / "baked.json").write_bytes(baked)
    for state in (tmp_path / "host", tmp_path / "new-host"):
        updater = client(url, tmp_path / "baked.json", state)
        path = newest_target(updater, state / "metadata")
        assert path == "demo/x86-64/demo-1.2.0-x86-64.keelbundle"
        assert Metadata.from_file(str(state / "metadata/root.json")).signed.version == 2


def test_metadata_signed_with_a_retired_key_is_refused(
    repo: Path, url: str, key_dir: Path, tmp_path: Path
) -> None:
    retired = repository.rotate_key(repo, key_dir, "timestamp").retired_key
    # Someone who kept the old timestamp key signs a newer timestamp with it.
    private = load_pem_private_key(retired.read_bytes(), password=None)
    assert isinstance(private, Ed25519PrivateKey)
    thief = CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))
    timestamp = Metadata[Timestamp].from_file(str(repo / "metadata/timestamp.json"))
    timestamp.signed.version += 1
    timestamp.sign(thief)
    timestamp.to_file(str(repo / "metadata/timestamp.json"))
    host = client(url, key_dir / "root.json", tmp_path / "host")
    with pytest.raises(exceptions.UnsignedMetadataError):
        host.refresh()
    # And publishing refuses the retired key as a signer.
    (tmp_path / "thief").mkdir()
    (tmp_path / "thief/timestamp.pem").write_bytes(retired.read_bytes())
    root = keys.load_root(key_dir / "root.json").signed
    with pytest.raises(KeelError, match="is not a timestamp key of this repository"):
        keys.load_signer(tmp_path / "thief", "timestamp", root)


def test_an_interrupted_rotation_is_finished_or_undone(key_dir: Path, tmp_path: Path) -> None:
    root = keys.load_root(key_dir / "root.json")
    before = (key_dir / "targets.pem").read_bytes()
    # Stopped before the new root was published: the new key was never trusted.
    keys.new_pending_signer(key_dir, "targets")
    assert keys.settle_rotation(key_dir, root.signed) == []
    assert not keys.pending_key_path(key_dir, "targets").exists()
    assert (key_dir / "targets.pem").read_bytes() == before
    # Stopped after the new root was published: the swap is finished.
    signer = keys.new_pending_signer(key_dir, "targets")
    old_keyid = next(iter(root.signed.roles["targets"].keyids))
    root.signed.revoke_key(old_keyid, "targets")
    root.signed.add_key(signer.public_key, "targets")
    assert keys.settle_rotation(key_dir, root.signed) == ["targets"]
    assert keys.load_signer(key_dir, "targets", root.signed).public_key == signer.public_key
    assert (key_dir / f"retired/targets-{old_keyid[:16]}.pem").read_bytes() == before
