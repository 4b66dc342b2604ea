"""Merging the VM's SSH key into the provisioning config."""

from __future__ import annotations

import json

from composer.vm.ignition import guest_config

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests keel-vm-t"


def root_keys(data: bytes) -> list[str]:
    users = json.loads(data)["passwd"]["users"]
    (root,) = [u for u in users if u["name"] == "root"]
    keys: list[str] = root["sshAuthorizedKeys"]
    return keys


def test_no_user_config_authorizes_the_vm_key() -> None:
    config = guest_config(None, KEY)
    assert config.has_vm_key
    parsed = json.loads(config.data)
    assert parsed["ignition"]["version"].startswith("3.")
    assert root_keys(config.data) == [KEY]


def test_key_added_to_existing_root_entry() -> None:
    user = {
        "ignition": {"version": "3.3.0"},
        "passwd": {
            "users": [
                {"name": "core", "sshAuthorizedKeys": ["ssh-ed25519 CORE"]},
                {"name": "root", "sshAuthorizedKeys": ["ssh-ed25519 MINE"], "shell": "/bin/sh"},
            ]
        },
        "storage": {"files": [{"path": "/etc/motd", "contents": {"source": "data:,hi"}}]},
    }
    config = guest_config(json.dumps(user).encode(), KEY)
    parsed = json.loads(config.data)
    assert config.has_vm_key
    assert parsed["ignition"]["version"] == "3.3.0"  # the user's version is kept
    assert root_keys(config.data) == ["ssh-ed25519 MINE", KEY]
    assert parsed["passwd"]["users"][0]["sshAuthorizedKeys"] == ["ssh-ed25519 CORE"]
    assert parsed["passwd"]["users"][1]["shell"] == "/bin/sh"
    assert parsed["storage"] == user["storage"]


def test_root_entry_added_when_missing() -> None:
    user = {"ignition": {"version": "3.4.0"}, "passwd": {"users": [{"name": "core"}]}}
    config = guest_config(json.dumps(user).encode(), KEY)
    names = [u["name"] for u in json.loads(config.data)["passwd"]["users"]]
    assert names == ["core", "root"]
    assert root_keys(config.data) == [KEY]


def test_key_not_duplicated() -> None:
    once = guest_config(None, KEY).data
    assert root_keys(guest_config(once, KEY).data) == [KEY]


def test_butane_yaml_is_translated_and_gets_the_vm_key() -> None:
    butane = b"variant: fcos\nversion: 1.5.0\npasswd:\n  users:\n    - name: core\n"
    config = guest_config(butane, KEY)
    assert json.loads(config.data)["ignition"]["version"] == "3.4.0"
    assert [u["name"] for u in json.loads(config.data)["passwd"]["users"]] == ["core", "root"]
    assert config.has_vm_key


def test_json_that_is_not_an_object_passes_through() -> None:
    config = guest_config(b"[1, 2]", KEY)
    assert config.data == b"[1, 2]"
    assert not config.has_vm_key
