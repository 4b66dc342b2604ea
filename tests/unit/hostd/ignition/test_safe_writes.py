"""Writes that cannot be redirected (issue 13): links planted in the tree, made by the
config itself, or raced into a temporary name are never followed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from hostd.ignition import safefs
from hostd.ignition.apply import apply_config
from hostd.ignition.config import ConfigError, parse_config

needs_shadow = pytest.mark.skipif(
    shutil.which("useradd") is None or os.geteuid() != 0,
    reason="needs shadow's useradd and root (it writes the tree's /etc/passwd)",
)
UNIT = "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\nops:x:1000:1000::/home/ops:/bin/bash\n"
    )
    (etc / "group").write_text("root:x:0:\nops:x:1000:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    for folder in ("var/home/ops", "var/roothome", "efi"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "home").symlink_to("var/home")
    (tmp_path / "root").symlink_to("var/roothome")
    return tmp_path


def config(**sections: Any) -> bytes:
    return json.dumps({"ignition": {"version": "3.4.0"}, **sections}).encode()


def keys_for(name: str) -> bytes:
    return config(passwd={"users": [{"name": name, "sshAuthorizedKeys": ["ssh-ed25519 AAAA"]}]})


def test_authorized_keys_linked_to_shadow_is_refused(root: Path) -> None:
    ssh = root / "var/home/ops/.ssh"
    ssh.mkdir()
    (ssh / "authorized_keys").symlink_to(root / "etc/shadow")
    before = (root / "etc/shadow").stat()
    with pytest.raises(ConfigError, match="symbolic link"):
        apply_config(root, parse_config(keys_for("ops")))
    after = (root / "etc/shadow").stat()
    assert (after.st_uid, after.st_mode, after.st_size) == (
        before.st_uid, before.st_mode, before.st_size)  # fmt: skip


def test_ssh_directory_that_is_a_link_is_refused(root: Path) -> None:
    (root / "var/home/ops/.ssh").symlink_to(root / "etc")
    with pytest.raises(ConfigError, match=r"\.ssh is a symbolic link"):
        apply_config(root, parse_config(keys_for("ops")))
    assert not (root / "etc/authorized_keys").exists()


def test_keys_go_through_the_top_level_home_link(root: Path) -> None:
    apply_config(root, parse_config(keys_for("ops")))
    assert (root / "var/home/ops/.ssh/authorized_keys").read_text() == "ssh-ed25519 AAAA\n"


def test_a_link_in_a_parent_directory_is_not_followed(root: Path) -> None:
    (root / "etc/app").symlink_to(root / "efi")
    raw = config(storage={"files": [{"path": "/etc/app/x", "contents": {"inline": "1"}}]})
    with pytest.raises(ConfigError, match="symbolic link"):
        apply_config(root, parse_config(raw))
    assert list((root / "efi").iterdir()) == []


def test_a_config_link_followed_by_a_dropin_is_refused_before_writing(root: Path) -> None:
    raw = config(
        storage={"links": [{"path": "/etc/systemd/system/a.service.d", "target": "/efi"}]},
        systemd={"units": [{"name": "a.service", "dropins": [{"name": "x.conf",
                                                              "contents": "y"}]}]},
    )  # fmt: skip
    with pytest.raises(ConfigError, match="never followed"):
        parse_config(raw)


def test_wants_directory_that_is_a_link_is_refused(root: Path) -> None:
    system = root / "etc/systemd/system"
    system.mkdir(parents=True)
    (system / "multi-user.target.wants").symlink_to(root / "efi")
    raw = config(systemd={"units": [{"name": "a.service", "enabled": True, "contents": UNIT}]})
    with pytest.raises(ConfigError, match="symbolic link"):
        apply_config(root, parse_config(raw))
    assert not (system / "a.service").exists()  # nothing half applied
    assert list((root / "efi").iterdir()) == []


def test_an_existing_link_at_the_path_is_replaced_not_followed(root: Path) -> None:
    (root / "etc/motd").symlink_to(root / "etc/shadow")
    shadow = (root / "etc/shadow").read_text()
    raw = config(storage={"files": [{"path": "/etc/motd", "overwrite": True,
                                     "contents": {"inline": "hi"}}]})  # fmt: skip
    apply_config(root, parse_config(raw))
    assert not (root / "etc/motd").is_symlink()
    assert (root / "etc/motd").read_text() == "hi"
    assert (root / "etc/shadow").read_text() == shadow


def test_a_link_at_the_temporary_name_is_never_written_through(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = iter([".planted", ".fresh"])
    monkeypatch.setattr(safefs, "temp_name", lambda name: next(names))
    (root / "etc/.planted").symlink_to(root / "etc/shadow")
    shadow = (root / "etc/shadow").read_text()
    with safefs.Root(root) as fs:
        fs.write_file("/etc/new", b"data", 0o640)
    assert (root / "etc/new").read_bytes() == b"data"
    assert (root / "etc/shadow").read_text() == shadow
    assert (root / "etc/.planted").is_symlink()


def test_owner_change_does_not_follow_a_link(root: Path) -> None:
    (root / "etc/l").symlink_to(root / "etc/shadow")
    raw = config(storage={"links": [{"path": "/etc/l", "target": str(root / "etc/shadow"),
                                     "user": {"id": 1000}}]})  # fmt: skip
    apply_config(root, parse_config(raw))
    assert (root / "etc/shadow").stat().st_uid == 0
    assert (root / "etc/l").lstat().st_uid == 1000


def test_a_fifo_is_not_opened_for_reading(root: Path) -> None:
    os.mkfifo(root / "etc/fifo")
    raw = config(storage={"files": [{"path": "/etc/fifo", "append": [{"inline": "x"}]}]})
    with pytest.raises(ConfigError, match="not a file"):
        apply_config(root, parse_config(raw))
