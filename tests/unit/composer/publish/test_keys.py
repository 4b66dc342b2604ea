"""keel keygen: role keys, the signed initial root, and baking it into an image."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Root

from composer.build import trust
from composer.core.errors import KeelError
from composer.publish import keys
from tests.unit.conftest import Project


def test_keygen_writes_private_keys_and_signed_root(tmp_path: Path) -> None:
    created = keys.generate_keys(tmp_path / "keys")
    for role in keys.ROLES:
        pem = tmp_path / "keys" / f"{role}.pem"
        assert created.private_keys[role] == pem
        assert pem.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
        assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    root = keys.load_root(created.root_metadata).signed
    assert root.version == 1
    assert root.consistent_snapshot is True
    assert len(root.keys) == 4
    for role in keys.ROLES:
        assert root.roles[role].threshold == 1
        assert len(root.roles[role].keyids) == 1
    lifetime = root.expires - datetime.now(UTC)
    assert timedelta(days=364) < lifetime <= timedelta(days=365)


def test_each_role_has_its_own_key(tmp_path: Path) -> None:
    root = keys.load_root(keys.generate_keys(tmp_path).root_metadata).signed
    keyids = {root.roles[role].keyids[0] for role in keys.ROLES}
    assert len(keyids) == 4
    for role in keys.ROLES:
        signer = keys.load_signer(tmp_path, role, root)
        assert signer.public_key.keyid == root.roles[role].keyids[0]


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    keys.generate_keys(tmp_path)
    before = (tmp_path / "root.pem").read_bytes()
    with pytest.raises(KeelError, match="refusing to overwrite"):
        keys.generate_keys(tmp_path)
    assert (tmp_path / "root.pem").read_bytes() == before


def test_key_of_another_set_is_refused(tmp_path: Path) -> None:
    mine = keys.load_root(keys.generate_keys(tmp_path / "mine").root_metadata).signed
    keys.generate_keys(tmp_path / "theirs")
    with pytest.raises(KeelError, match="not a targets key of this repository"):
        keys.load_signer(tmp_path / "theirs", "targets", mine)
    # A key of the right set but the wrong role is refused too.
    (tmp_path / "mine" / "targets.pem").unlink()
    (tmp_path / "mine" / "targets.pem").write_bytes((tmp_path / "mine/snapshot.pem").read_bytes())
    with pytest.raises(KeelError, match="not a targets key"):
        keys.load_signer(tmp_path / "mine", "targets", mine)


def test_altered_root_is_refused(tmp_path: Path) -> None:
    path = keys.generate_keys(tmp_path).root_metadata
    document = json.loads(path.read_text())
    document["signed"]["expires"] = "2099-01-01T00:00:00Z"
    path.write_text(json.dumps(document))
    with pytest.raises(KeelError, match="not signed by its own root keys"):
        keys.load_root(path)


def _definition(project: Project, root: str) -> str:
    return f"""
        name: demo
        version: "1.0.0"
        partitions: {{esp: 64MiB, root: 256MiB, var: 256MiB}}
        update:
          repository: http://10.0.2.2:8080/
          root: {root}
          reboot: window
          window: {{days: [Sat, Sun], start: "03:00", duration: 1h}}
    """


def test_trust_root_and_policy_are_baked(project: Project, tmp_path: Path) -> None:
    created = keys.generate_keys(project.images / "keys")
    defn = project.load(_definition(project, "keys/root.json"))
    tree = tmp_path / "tree"
    trust.bake_update_trust(defn, tree)
    baked = tree / "usr/lib/keel/update"
    assert (baked / "root.json").read_bytes() == created.root_metadata.read_bytes()
    assert isinstance(Metadata[Root].from_file(str(baked / "root.json")).signed, Root)
    assert json.loads((baked / "policy.json").read_text()) == {
        "name": "demo",
        "architecture": "x86-64",
        "repository": "http://10.0.2.2:8080/",
        "check_interval": "6h",
        "reboot": "window",
        "window": {"days": ["Sat", "Sun"], "start": "03:00", "duration": "1h"},
    }


def test_without_trust_root_only_policy_is_baked(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KEEL_UPDATE_ROOT", raising=False)
    defn = project.load(_definition(project, '""'))
    tree = tmp_path / "tree"
    trust.bake_update_trust(defn, tree)
    assert not (tree / "usr/lib/keel/update/root.json").exists()
    assert json.loads((tree / "usr/lib/keel/update/policy.json").read_text())["name"] == "demo"


def test_invalid_trust_root_fails_the_build(project: Project, tmp_path: Path) -> None:
    (project.images / "root.json").write_text('{"signed": {}, "signatures": []}')
    with pytest.raises(KeelError, match="not TUF metadata"):
        project.load(_definition(project, "root.json"))
