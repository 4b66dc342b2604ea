"""Ignition parsing and validation (hostd/ignition/config.py): whole config first,
unsupported fields refused by name, read-only paths refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hostd.ignition.config import ConfigError, parse_config
from hostd.ignition.dataurl import decode_data_url, encode_data_url


def ignition(version: str = "3.4.0", **sections: Any) -> bytes:
    return json.dumps({"ignition": {"version": version}, **sections}).encode()


def test_users_with_keys_groups_and_password_hash_are_parsed() -> None:
    config = parse_config(
        ignition(passwd={"users": [
            {"name": "root", "sshAuthorizedKeys": ["ssh-ed25519 AAAA test"]},
            {"name": "ops", "groups": ["docker"], "passwordHash": "$6$x$y"},
        ]})
    )  # fmt: skip
    assert [u.name for u in config.users] == ["root", "ops"]
    assert config.users[0].ssh_keys == ("ssh-ed25519 AAAA test",)
    assert config.users[1].groups == ("docker",)
    assert config.users[1].password_hash == "$6$x$y"


def test_unsupported_field_is_refused_by_name_not_ignored() -> None:
    # homeDir is supported now (issue 13); a field outside the spec is still named.
    with pytest.raises(ConfigError, match=r"unsupported field 'passwd\.users\[0\]\.homeDirs'"):
        parse_config(ignition(passwd={"users": [{"name": "a", "homeDirs": "/x"}]}))


@pytest.mark.parametrize(
    ("section", "field"),
    [
        # storage.disks and .filesystems are applied since issue 13; RAID is refused.
        ({"storage": {"raid": []}}, "storage.raid"),
        ({"storage": {"files": [{"path": "/etc/a", "contents": {"httpHeaders": [{}]}}]}},
         "storage.files[0].contents.httpHeaders"),
        # kernelArguments is applied since issue 13; LUKS is still refused by name.
        ({"storage": {"luks": []}}, "storage.luks"),
        ({"systemd": {"units": [{"name": "a.service", "bogus": 1}]}}, "systemd.units[0].bogus"),
        ({"ignition": {"version": "3.4.0", "config": {"merge": [{"source": "s3://b/k"}]}}},
         "ignition.config.merge[0].source"),
    ],
)  # fmt: skip
def test_every_unimplemented_field_is_named(section: dict[str, Any], field: str) -> None:
    document = {"ignition": {"version": "3.4.0"}, **section}
    with pytest.raises(ConfigError) as error:
        parse_config(json.dumps(document).encode())
    assert f"'{field}'" in str(error.value)


@pytest.mark.parametrize("version", [None, "2.2.0", "3.6.0"])
def test_only_spec_v3_versions_up_to_3_4_are_accepted(version: str | None) -> None:
    raw = json.dumps({"ignition": {"version": version}}).encode()
    with pytest.raises(ConfigError, match=r"ignition\.version"):
        parse_config(raw)


def test_invalid_json_says_so() -> None:
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_config(b"{nope")


def test_user_without_name_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"passwd\.users\[0\]\.name"):
        parse_config(ignition(passwd={"users": [{"sshAuthorizedKeys": ["k"]}]}))


def test_wrong_types_are_named() -> None:
    with pytest.raises(ConfigError, match=r"'storage\.files\[0\]\.mode' must be an integer"):
        parse_config(ignition(storage={"files": [{"path": "/etc/a", "mode": "0644"}]}))


# /opt and /usr/local are writable since issue 13 (links into /var); /usr/localx and
# /optional only share their prefix.
@pytest.mark.parametrize(
    "path", ["/usr/bin/x", "/usr/lib/app", "/usr/localx", "/optional", "/boot/x", "/", "/etcetera"]
)
def test_writes_to_the_read_only_os_are_refused_with_the_writable_places(path: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(ignition(storage={"directories": [{"path": path}]}))
    assert "read-only" in str(error.value)
    assert "/etc and /var" in str(error.value)


def test_dot_dot_cannot_escape_a_writable_place() -> None:
    with pytest.raises(ConfigError, match=r"\.\."):
        parse_config(ignition(storage={"files": [{"path": "/etc/../usr/x"}]}))


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(
            ignition(
                storage={"files": [{"path": "/usr/a"}], "links": [{"path": "/etc/l"}]},
                systemd={"units": [{"name": "no-suffix"}]},
            )
        )
    message = str(error.value)
    assert "/usr/a" in message
    assert "storage.links[0].target" in message
    assert "no-suffix" in message


def test_inline_contents_only_in_3_4() -> None:
    files = {"files": [{"path": "/etc/a", "contents": {"inline": "hi"}}]}
    assert parse_config(ignition("3.4.0", storage=files)).files[0].contents == b"hi"
    with pytest.raises(ConfigError, match=r"contents\.inline' needs ignition\.version 3\.4\.0"):
        parse_config(ignition("3.3.0", storage=files))


@pytest.mark.parametrize(
    ("url", "data"),
    [
        ("data:,hello%20world%0A", b"hello world\n"),
        ("data:text/plain;charset=utf-8;base64,aGk=", b"hi"),
        ("data:;base64,AAEC", b"\x00\x01\x02"),
        ("data:,", b""),
    ],
)
def test_data_urls_decode(url: str, data: bytes) -> None:
    assert decode_data_url(url) == data


@pytest.mark.parametrize("data", [b"plain text\n%$", b"\xff\x00binary"])
def test_data_urls_round_trip(data: bytes) -> None:
    assert decode_data_url(encode_data_url(data)) == data


def test_remote_sources_are_refused() -> None:
    # http(s) is supported now (fetched at first boot, see test_fetch.py); cloud
    # storage and tftp sources are still refused by field name.
    files = {"files": [{"path": "/etc/a", "contents": {"source": "s3://bucket/a"}}]}
    with pytest.raises(ConfigError, match=r"contents\.source.*only data:"):
        parse_config(ignition(storage=files))


def test_duplicate_paths_and_overwrite_without_contents() -> None:
    storage = {
        "files": [{"path": "/etc/a", "overwrite": True}],
        "directories": [{"path": "/etc/a/"}],
    }
    with pytest.raises(ConfigError) as error:
        parse_config(ignition(storage=storage))
    assert "overwrite" in str(error.value)
    assert "also given by" in str(error.value)
