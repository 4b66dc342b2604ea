"""Applying Ignition configs into a temporary root (hostd/ignition/apply.py and the
provisioner's run-once state): what is written, idempotence, nothing half-applied."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from hostd.ignition.apply import apply_config
from hostd.ignition.config import ConfigError, parse_config
from hostd.provision import STATE_FILE, provision

needs_shadow = pytest.mark.skipif(
    shutil.which("useradd") is None or os.geteuid() != 0,
    reason="needs shadow's useradd and root (it writes the tree's /etc/passwd)",
)

UNIT = "[Unit]\nDescription=hello\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"  # noqa: E501


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The writable skeleton of a Keel host: accounts, /var/home behind /home."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\ndocker:x:120:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\ndocker:!::\n")
    for folder in ("var/home", "var/roothome", "var/lib/keel", "usr/lib/keel"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "home").symlink_to("var/home")
    (tmp_path / "root").symlink_to("var/roothome")
    return tmp_path


def config(**sections: Any) -> bytes:
    return json.dumps({"ignition": {"version": "3.4.0"}, **sections}).encode()


def test_files_directories_links_and_modes(root: Path) -> None:
    log = apply_config(
        root,
        parse_config(
            config(
                storage={
                    "files": [
                        {"path": "/etc/app/conf", "mode": 0o600,
                         "contents": {"source": "data:,a%3D1%0A"}},
                        {"path": "/etc/motd", "append": [{"source": "data:,hello%0A"}]},
                    ],
                    "directories": [{"path": "/var/lib/app", "mode": 0o750}],
                    "links": [
                        {"path": "/etc/app/current", "target": "/etc/app/conf"},
                        {"path": "/etc/app/hard", "target": "/etc/app/conf", "hard": True},
                    ],
                }
            )
        ),
    )  # fmt: skip
    conf = root / "etc/app/conf"
    assert conf.read_text() == "a=1\n"
    assert conf.stat().st_mode & 0o7777 == 0o600
    assert (root / "etc/app").stat().st_mode & 0o777 == 0o755  # made parent
    assert (root / "etc/motd").read_text() == "hello\n"
    assert (root / "var/lib/app").stat().st_mode & 0o777 == 0o750
    assert os.readlink(root / "etc/app/current") == "/etc/app/conf"
    assert os.path.samefile(root / "etc/app/hard", conf)
    assert any(line.startswith("wrote /etc/app/conf") for line in log)


def test_a_second_run_changes_nothing(root: Path) -> None:
    parsed = parse_config(
        config(
            storage={"files": [{"path": "/etc/motd", "contents": {"inline": "x"},
                                "append": [{"inline": "y"}]},
                               {"path": "/etc/issue", "append": [{"inline": "z\n"}]}]},
            systemd={"units": [{"name": "hello.service", "enabled": True, "contents": UNIT}]},
        )
    )  # fmt: skip
    apply_config(root, parsed)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    log = apply_config(root, parsed)
    assert all(line.startswith("unchanged") for line in log), log
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert (root / "etc/motd").read_text() == "xy"
    assert (root / "etc/issue").read_text() == "z\n"


def test_units_dropins_enable_and_mask(root: Path) -> None:
    vendor = root / "usr/lib/systemd/system"
    vendor.mkdir(parents=True)
    (vendor / "vendor.service").write_text(UNIT)
    apply_config(
        root,
        parse_config(
            config(
                systemd={
                    "units": [
                        {"name": "hello.service", "enabled": True, "contents": UNIT,
                         "dropins": [{"name": "env.conf",
                                      "contents": "[Service]\nEnvironment=A=1\n"}]},
                        {"name": "vendor.service", "enabled": True},
                        {"name": "getty@tty1.service", "mask": True},
                    ]
                }
            )
        ),
    )  # fmt: skip
    local = root / "etc/systemd/system"
    assert (local / "hello.service").read_text() == UNIT
    assert (local / "hello.service.d/env.conf").read_text().endswith("A=1\n")
    wants = local / "multi-user.target.wants"
    assert os.readlink(wants / "hello.service") == "/etc/systemd/system/hello.service"
    assert os.readlink(wants / "vendor.service") == "/usr/lib/systemd/system/vendor.service"
    assert os.readlink(local / "getty@tty1.service") == "/dev/null"


def test_enabling_a_unit_without_install_section_is_refused_before_writing(root: Path) -> None:
    parsed = parse_config(
        config(
            storage={"files": [{"path": "/etc/first", "contents": {"inline": "1"}}]},
            systemd={"units": [{"name": "x.service", "enabled": True, "contents": "[Service]\n"}]},
        )
    )
    with pytest.raises(ConfigError, match=r"x\.service.*\[Install\]"):
        apply_config(root, parsed)
    assert not (root / "etc/first").exists()  # nothing half-applied


def test_an_existing_file_needs_overwrite(root: Path) -> None:
    (root / "etc/hostname").write_text("old\n")
    entry = {"path": "/etc/hostname", "contents": {"inline": "new\n"}}
    with pytest.raises(ConfigError, match="overwrite"):
        apply_config(root, parse_config(config(storage={"files": [entry]})))
    apply_config(root, parse_config(config(storage={"files": [{**entry, "overwrite": True}]})))
    assert (root / "etc/hostname").read_text() == "new\n"


def test_unknown_group_is_refused_before_anything(root: Path) -> None:
    parsed = parse_config(
        config(
            passwd={"users": [{"name": "ops", "groups": ["wheel"]}]},
            storage={"files": [{"path": "/etc/first", "contents": {"inline": "1"}}]},
        )
    )
    with pytest.raises(ConfigError, match="group 'wheel' does not exist"):
        apply_config(root, parsed)
    assert not (root / "etc/first").exists()


@needs_shadow
def test_users_keys_groups_and_owned_files(root: Path) -> None:
    parsed = parse_config(
        config(
            passwd={"users": [
                {"name": "ops", "groups": ["docker"],
                 "sshAuthorizedKeys": ["ssh-ed25519 AAAA ops"]},
                {"name": "root", "sshAuthorizedKeys": ["ssh-ed25519 AAAA root"]},
            ]},
            storage={"files": [{"path": "/etc/ops.conf", "contents": {"inline": "x"},
                                "user": {"name": "ops"}, "group": {"name": "ops"}}]},
        )
    )  # fmt: skip
    apply_config(root, parsed)
    assert "ops:x:1000:1000::/home/ops:/bin/bash" in (root / "etc/passwd").read_text()
    assert "docker:x:120:ops" in (root / "etc/group").read_text()
    keys = root / "var/home/ops/.ssh/authorized_keys"
    assert keys.read_text() == "ssh-ed25519 AAAA ops\n"
    assert keys.stat().st_mode & 0o777 == 0o600
    assert (root / "var/roothome/.ssh/authorized_keys").read_text() == "ssh-ed25519 AAAA root\n"
    assert (root / "etc/ops.conf").stat().st_uid == 1000
    log = apply_config(root, parsed)
    assert all(line.startswith("unchanged") for line in log), log


def test_provision_records_the_result_once_and_failures_apply_nothing(root: Path) -> None:
    baked = root / "usr/lib/keel/provision.ign"
    baked.write_bytes(config(storage={"files": [{"path": "/etc/a", "contents": {"inline": "1"}}]}))
    state = provision(root)
    assert state["result"] == "applied"
    assert state["source"] == "/usr/lib/keel/provision.ign"
    assert json.loads((root / STATE_FILE).read_text())["changes"] == [
        "wrote /etc/a (1 bytes, mode 0644)"
    ]
    baked.write_bytes(
        config(
            storage={"files": [{"path": "/etc/b", "contents": {"inline": "2"}}]},
            passwd={"users": [{"name": "x", "uid": -5}]},
        )
    )
    state = provision(root)
    assert state["result"] == "failed"
    assert "passwd.users[0].uid" in state["error"]
    assert not (root / "etc/b").exists()
    assert json.loads((root / STATE_FILE).read_text())["result"] == "failed"


def test_fw_cfg_config_wins_over_the_baked_one(root: Path) -> None:
    (root / "usr/lib/keel/provision.ign").write_bytes(config())
    fw_cfg = root / "sys/firmware/qemu_fw_cfg/by_name/opt/com.coreos/config/raw"
    fw_cfg.parent.mkdir(parents=True)
    fw_cfg.write_bytes(config())
    assert (
        provision(root)["source"] == "/sys/firmware/qemu_fw_cfg/by_name/opt/com.coreos/config/raw"
    )


def test_no_config_is_recorded(root: Path) -> None:
    assert provision(root)["result"] == "none"


def test_repeated_install_keys_all_count() -> None:
    from hostd.ignition.units import install_targets

    text = "[Install]\nWantedBy=a.target\nWantedBy=b.target c.target\nRequiredBy=d.target\n"
    assert install_targets(text) == [
        (".wants", "a.target"),
        (".wants", "b.target"),
        (".wants", "c.target"),
        (".requires", "d.target"),
    ]
