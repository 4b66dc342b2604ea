"""Butane -> Ignition translation (composer/provisioning/butane.py)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from composer.core.errors import KeelError
from composer.provisioning.butane import (
    ButaneError,
    ignition_from_file,
    looks_like_butane,
    translate,
)
from hostd.ignition.config import parse_config
from hostd.ignition.dataurl import decode_data_url

BUTANE = """\
variant: fcos
version: 1.5.0
passwd:
  users:
    - name: ops
      ssh_authorized_keys:
        - ssh-ed25519 AAAA ops@example
      groups: [docker]
      password_hash: "$6$salt$hash"
storage:
  directories:
    - path: /var/lib/app
      mode: 0750
  files:
    - path: /etc/app/config.toml
      mode: 0640
      contents:
        inline: |
          name = "demo"
    - path: /etc/app/local.txt
      contents:
        local: files/local.txt
  links:
    - path: /etc/app/current
      target: /etc/app/config.toml
systemd:
  units:
    - name: hello.service
      enabled: true
      contents: |
        [Service]
        ExecStart=/bin/echo hello
        [Install]
        WantedBy=multi-user.target
      dropins:
        - name: env.conf
          contents: "[Service]\\nEnvironment=A=1\\n"
"""


def test_fcos_config_translates_like_butane(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files/local.txt").write_text("from a file\n")
    out = json.loads(translate(BUTANE, files_dir=tmp_path))
    assert out["ignition"] == {"version": "3.4.0"}
    user = out["passwd"]["users"][0]
    assert user == {
        "name": "ops",
        "sshAuthorizedKeys": ["ssh-ed25519 AAAA ops@example"],
        "groups": ["docker"],
        "passwordHash": "$6$salt$hash",
    }
    files = {f["path"]: f for f in out["storage"]["files"]}
    config = files["/etc/app/config.toml"]
    assert config["mode"] == 0o640  # YAML octal -> the decimal Ignition wants
    assert decode_data_url(config["contents"]["source"]) == b'name = "demo"\n'
    assert decode_data_url(files["/etc/app/local.txt"]["contents"]["source"]) == b"from a file\n"
    assert out["storage"]["directories"] == [{"path": "/var/lib/app", "mode": 0o750}]
    assert out["storage"]["links"] == [
        {"path": "/etc/app/current", "target": "/etc/app/config.toml"}
    ]
    unit = out["systemd"]["units"][0]
    assert unit["enabled"] is True
    assert unit["dropins"] == [{"name": "env.conf", "contents": "[Service]\nEnvironment=A=1\n"}]
    parse_config(json.dumps(out).encode())  # what the host accepts


@pytest.mark.parametrize(
    ("variant", "version", "ignition"),
    [("fcos", "1.0.0", "3.0.0"), ("fcos", "1.3.0", "3.2.0"), ("fcos", "1.4.0", "3.3.0"),
     ("flatcar", "1.0.0", "3.3.0"), ("flatcar", "1.1.0", "3.4.0"), ("keel", "1.0.0", "3.4.0")],
)  # fmt: skip
def test_variant_versions_map_to_ignition_specs(variant: str, version: str, ignition: str) -> None:
    out = json.loads(translate(f"variant: {variant}\nversion: {version}\n"))
    assert out == {"ignition": {"version": ignition}}


def test_unknown_variant_version_is_refused() -> None:
    # Issue 13: fcos 1.6.0 is supported now; 1.7.0 (Ignition 3.6.0) is the newer one.
    with pytest.raises(ButaneError, match=r"fcos' version '1\.7\.0' is not supported"):
        translate("variant: fcos\nversion: 1.7.0\n")


def test_unsupported_field_is_named_with_its_line() -> None:
    text = textwrap.dedent("""\
        variant: fcos
        version: 1.5.0
        storage:
          files:
            - path: /etc/a
              contents:
                checksum: sha512-00
        """)  # compression is a Butane field since issue 13; checksum is none
    with pytest.raises(
        ButaneError,
        match=r"x\.bu:7: unsupported Butane field 'storage\.files\.0\.contents\.checksum'",
    ):
        translate(text, name="x.bu")


def test_local_contents_stay_inside_the_files_dir(tmp_path: Path) -> None:
    text = "variant: keel\nversion: 1.0.0\nstorage:\n  files:\n    - path: /etc/a\n      contents:\n        local: ../secret\n"  # noqa: E501
    with pytest.raises(ButaneError, match="outside the files directory"):
        translate(text, files_dir=tmp_path)
    with pytest.raises(ButaneError, match="needs a files directory"):
        translate(text)


def test_read_only_paths_are_refused_at_translation() -> None:
    text = "variant: keel\nversion: 1.0.0\nstorage:\n  directories:\n    - path: /usr/lib/x\n"
    with pytest.raises(ButaneError, match="read-only"):
        translate(text)


def test_detection_and_files(tmp_path: Path) -> None:
    assert looks_like_butane(b"variant: fcos\nversion: 1.5.0\n")
    assert not looks_like_butane(b'{"ignition": {"version": "3.4.0"}}')
    bu = tmp_path / "c.bu"
    bu.write_text("variant: flatcar\nversion: 1.1.0\n")
    assert json.loads(ignition_from_file(bu))["ignition"]["version"] == "3.4.0"
    ign = tmp_path / "c.ign"
    ign.write_text('{"ignition": {"version": "3.4.0"}, "bogus": 1}')
    with pytest.raises(KeelError, match="unsupported field 'bogus'"):
        ignition_from_file(ign)
