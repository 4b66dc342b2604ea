import json

import pytest

from hostd.provision import ConfigError, parse_config


def ignition(**sections: object) -> bytes:
    return json.dumps({"ignition": {"version": "3.4.0"}, **sections}).encode()


def test_users_with_keys_groups_and_password_hash_are_parsed() -> None:
    users = parse_config(
        ignition(passwd={"users": [
            {"name": "root", "sshAuthorizedKeys": ["ssh-ed25519 AAAA test"]},
            {"name": "ops", "groups": ["docker"], "passwordHash": "$6$x$y"},
        ]})
    )  # fmt: skip
    assert [u.name for u in users] == ["root", "ops"]
    assert users[0].ssh_keys == ("ssh-ed25519 AAAA test",)
    assert users[1].groups == ("docker",)
    assert users[1].password_hash == "$6$x$y"


def test_unsupported_field_is_refused_by_name_not_ignored() -> None:
    with pytest.raises(ConfigError, match=r"passwd\.users\[\]\.homeDir"):
        parse_config(ignition(passwd={"users": [{"name": "a", "homeDir": "/x"}]}))


@pytest.mark.parametrize("version", [None, "2.2.0", "3.5.0"])
def test_only_spec_v3_versions_up_to_3_4_are_accepted(version: str | None) -> None:
    raw = json.dumps({"ignition": {"version": version}}).encode()
    with pytest.raises(ConfigError, match=r"ignition\.version"):
        parse_config(raw)


def test_invalid_json_says_so() -> None:
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_config(b"{nope")


def test_user_without_name_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"passwd\.users\.0\.name"):
        parse_config(ignition(passwd={"users": [{"sshAuthorizedKeys": ["k"]}]}))
