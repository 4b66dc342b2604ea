"""Every supported Ignition field applied into a temporary root (issue 13)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from hostd.ignition.apply import apply_config
from hostd.ignition.config import ConfigError, parse_config

needs_shadow = pytest.mark.skipif(
    shutil.which("useradd") is None or os.geteuid() != 0,
    reason="needs shadow's useradd and root (it writes the tree's /etc/passwd)",
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\nold:x:900:900::/home/old:/bin/sh\n"
    )
    (etc / "group").write_text("root:x:0:\ndocker:x:120:\nold:x:900:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\nold:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\ndocker:!::\nold:!::\n")
    for folder in ("var/home", "var/roothome"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "home").symlink_to("var/home")
    (tmp_path / "root").symlink_to("var/roothome")
    return tmp_path


def config(version: str = "3.5.0", **sections: Any) -> bytes:
    return json.dumps({"ignition": {"version": version, "timeouts": {"httpTotal": 5}},
                       **sections}).encode()  # fmt: skip


@needs_shadow
def test_users_and_groups_with_every_field(root: Path) -> None:
    parsed = parse_config(config(passwd={
        "groups": [{"name": "app", "gid": 2000}, {"name": "sys", "system": True},
                   {"name": "old", "shouldExist": False}],
        "users": [
            {"name": "svc", "uid": 2001, "primaryGroup": "app", "groups": ["docker"],
             "gecos": "Service", "homeDir": "/var/lib/svc", "shell": "/bin/sh",
             "passwordHash": "$6$x$y", "noLogInit": True,
             "sshAuthorizedKeys": ["ssh-ed25519 AAAA svc"]},
            {"name": "nohome", "noCreateHome": True, "noUserGroup": True, "system": True},
            {"name": "old", "shouldExist": False},
        ],
    }))  # fmt: skip
    apply_config(root, parsed)
    passwd = (root / "etc/passwd").read_text()
    assert "svc:x:2001:2000:Service:/var/lib/svc:/bin/sh" in passwd
    assert "old:" not in passwd
    assert "app:x:2000:" in (root / "etc/group").read_text()
    assert "docker:x:120:svc" in (root / "etc/group").read_text()
    assert "svc:$6$x$y:" in (root / "etc/shadow").read_text()
    keys = root / "var/lib/svc/.ssh/authorized_keys"
    assert keys.read_text() == "ssh-ed25519 AAAA svc\n"
    assert keys.stat().st_uid == 2001
    nohome = next(line for line in passwd.splitlines() if line.startswith("nohome:"))
    assert not (root / nohome.split(":")[5].lstrip("/")).exists()
    log = apply_config(root, parsed)
    assert all(line.startswith("unchanged") for line in log), log


def test_a_taken_uid_is_refused_before_anything(root: Path) -> None:
    parsed = parse_config(config(
        passwd={"users": [{"name": "new", "uid": 900}]},
        storage={"files": [{"path": "/etc/first", "contents": {"source": "data:,1"}}]},
    ))  # fmt: skip
    with pytest.raises(ConfigError, match="uid 900 is taken by old"):
        apply_config(root, parsed)
    assert not (root / "etc/first").exists()


def test_gzip_verification_owners_and_hard_links(root: Path) -> None:
    data = b"hello\n" * 100
    packed = "data:;base64," + base64.b64encode(gzip.compress(data)).decode()
    digest = "sha512-" + hashlib.sha512(data).hexdigest()  # of the decompressed data
    parsed = parse_config(config(storage={
        "files": [
            {"path": "/etc/z", "mode": 0o640, "user": {"id": 900}, "group": {"name": "docker"},
             "contents": {"source": packed, "compression": "gzip",
                          "verification": {"hash": digest}}},
            {"path": "/etc/plain", "contents": {"source": "data:,x", "compression": ""},
             "append": [{"source": "data:,y", "compression": None,
                         "verification": {"hash": "sha256-"
                                          + hashlib.sha256(b"y").hexdigest()}}]},
        ],
        "directories": [{"path": "/var/d", "user": {"name": "old"}, "group": {"id": 120}}],
        "links": [{"path": "/etc/h", "target": "/etc/z", "hard": True},
                  {"path": "/etc/s", "target": "z", "user": {"name": "old"}}],
    }))  # fmt: skip
    apply_config(root, parsed)
    z = (root / "etc/z").stat()
    assert (root / "etc/z").read_bytes() == data
    assert (z.st_uid, z.st_gid, z.st_mode & 0o777) == (900, 120, 0o640)
    assert (root / "etc/plain").read_bytes() == b"xy"
    assert ((root / "var/d").stat().st_uid, (root / "var/d").stat().st_gid) == (900, 120)
    assert os.path.samefile(root / "etc/h", root / "etc/z")
    assert os.readlink(root / "etc/s") == "z"
    assert (root / "etc/s").lstat().st_uid == 900
