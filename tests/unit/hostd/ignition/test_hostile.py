"""Hostile and malformed configs (issue 13): each is a ConfigError, never another
exception, and provision() records a failed state and writes nothing else."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from hostd.ignition.config import SUPPORTED_VERSIONS, ConfigError, parse_config
from hostd.provision import STATE_FILE, main, provision


def doc(version: str = "3.4.0", **sections: Any) -> bytes:
    return json.dumps({"ignition": {"version": version}, **sections}).encode()


def files(*entries: dict[str, Any]) -> bytes:
    return doc(storage={"files": list(entries)})


def _corpus() -> list[tuple[str, bytes]]:
    deep = b'{"ignition": {"version": "3.4.0"}, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return [
        ("deep nesting", deep),
        ("deep objects", b'{"a":' * 5000 + b"1" + b"}" * 5000),
        ("utf-16", doc().decode().encode("utf-16")),
        ("utf-16-le no bom", doc().decode().encode("utf-16-le")),
        ("utf-8 bom", b"\xef\xbb\xbf" + doc()),
        ("invalid utf-8", doc()[:-1] + b'"\xff"}'),
        ("nul byte", doc()[:-1] + b"\x00}"),
        ("huge number", b'{"ignition": {"version": "3.4.0"}, "x": ' + b"9" * 5000 + b"}"),
        (
            "nan",
            b'{"ignition": {"version": "3.4.0"}, "storage": {"files": [{"path": "/etc/a", '
            b'"mode": NaN}]}}',
        ),
        ("duplicate key", b'{"ignition": {"version": "3.4.0"}, "passwd": {}, "passwd": {}}'),
        ("not an object", b"[1, 2]"),
        ("empty", b""),
        ("version a list", b'{"ignition": {"version": ["3.4.0"]}}'),
        ("surrogate path", files({"path": "/etc/\udc80"})),
        ("nul path", files({"path": "/etc/a\u0000b"})),
        ("surrogate unit", doc(systemd={"units": [{"name": "a\ud800.service"}]})),
        ("nul unit", doc(systemd={"units": [{"name": "a\u0000.service"}]})),
        ("surrogate data url", files({"path": "/etc/a", "contents": {"source": "data:,\udc80"}})),
        ("nul data url", files({"path": "/etc/a", "contents": {"source": "data:,\u0000"}})),
        ("surrogate key", b'{"ignition": {"version": "3.4.0"}, "\\ud800": 1}'),
        ("uid -5", doc(passwd={"users": [{"name": "a", "uid": -5}]})),
        ("uid 10**30", doc(passwd={"users": [{"name": "a", "uid": 10**30}]})),
        ("uid 2**32-1", doc(passwd={"users": [{"name": "a", "uid": 2**32 - 1}]})),
        ("gid -1", doc(passwd={"groups": [{"name": "g", "gid": -1}]})),
        ("owner id huge", files({"path": "/etc/a", "user": {"id": 10**30}})),
        ("user named -r", doc(passwd={"users": [{"name": "-r"}]})),
        ("user with colon", doc(passwd={"users": [{"name": "a:b"}]})),
        ("group with space", doc(passwd={"groups": [{"name": "a b"}]})),
        ("supplementary -g", doc(passwd={"users": [{"name": "a", "groups": ["--help"]}]})),
        ("gecos newline", doc(passwd={"users": [{"name": "a", "gecos": "x\nroot::0:0::/:"}]})),
        ("unit -.service", doc(systemd={"units": [{"name": "-x.service"}]})),
        ("unit with slash", doc(systemd={"units": [{"name": "../x.service"}]})),
        ("unit two @", doc(systemd={"units": [{"name": "a@b@c.service"}]})),
        ("unit too long", doc(systemd={"units": [{"name": "a" * 300 + ".service"}]})),
        (
            "dropin slash",
            doc(systemd={"units": [{"name": "a.service", "dropins": [{"name": "../x.conf"}]}]}),
        ),
        ("file below file", files({"path": "/etc/a"}, {"path": "/etc/a/b"})),
        (
            "file below link",
            doc(
                storage={
                    "files": [{"path": "/etc/l/b"}],
                    "links": [{"path": "/etc/l", "target": "/efi"}],
                }
            ),
        ),
        (
            "file at unit path",
            doc(
                storage={"files": [{"path": "/etc/systemd/system/a.service"}]},
                systemd={"units": [{"name": "a.service", "contents": "x"}]},
            ),
        ),
        (
            "link at drop-in dir",
            doc(
                storage={"links": [{"path": "/etc/systemd/system/a.service.d", "target": "/efi"}]},
                systemd={
                    "units": [
                        {"name": "a.service", "dropins": [{"name": "x.conf", "contents": "y"}]}
                    ]
                },
            ),
        ),
        ("duplicate", files({"path": "/etc/a"}, {"path": "/etc/a"})),
        ("double slash", files({"path": "/etc//a"})),
        ("dot", files({"path": "/etc/./a"})),
        ("dot dot", files({"path": "/etc/../x"})),
        ("trailing slash", files({"path": "/etc/a/"})),
        ("long path", files({"path": "/etc/" + "a/" * 3000 + "b"})),
        ("long name", files({"path": "/etc/" + "a" * 300})),
        ("bad base64", files({"path": "/etc/a", "contents": {"source": "data:;base64,!!"}})),
        (
            "bad gzip",
            files({"path": "/etc/a", "contents": {"source": "data:,abc", "compression": "gzip"}}),
        ),
        ("xz", files({"path": "/etc/a", "contents": {"source": "data:,a", "compression": "xz"}})),
        (
            "gzip bomb",
            files(
                {
                    "path": "/etc/a",
                    "contents": {
                        "source": "data:;base64,"
                        + __import__("base64")
                        .b64encode(gzip.compress(b"\0" * (65 * 1024 * 1024)))
                        .decode(),
                        "compression": "gzip",
                    },
                }
            ),
        ),
        (
            "bad hash",
            files(
                {
                    "path": "/etc/a",
                    "contents": {
                        "source": "data:,a",
                        "verification": {"hash": "sha256-" + "0" * 64},
                    },
                }
            ),
        ),
        (
            "sha256 in 3.0",
            doc(
                "3.0.0",
                storage={
                    "files": [
                        {
                            "path": "/etc/a",
                            "contents": {
                                "source": "data:,a",
                                "verification": {
                                    "hash": "sha256-" + hashlib.sha256(b"a").hexdigest()
                                },
                            },
                        }
                    ]
                },
            ),
        ),
        ("mode float", files({"path": "/etc/a", "mode": 4.2e1})),
        ("mode huge", files({"path": "/etc/a", "mode": 10**30})),
        (
            "shouldExist in 3.1",
            doc("3.1.0", passwd={"users": [{"name": "a", "shouldExist": False}]}),
        ),
        ("remove root", doc(passwd={"users": [{"name": "root", "shouldExist": False}]})),
        ("s3", files({"path": "/etc/a", "contents": {"source": "s3://bucket/a"}})),
        ("write /usr", files({"path": "/usr/bin/x"})),
        ("wrong types", b'{"ignition": {"version": "3.4.0"}, "storage": {"files": {"a": 1}}}'),
        ("list of nulls", b'{"ignition": {"version": "3.4.0"}, "passwd": {"users": [null]}}'),
        ("too big", b'{"ignition": {"version": "3.4.0"}, "x": "' + b"a" * (17 << 20) + b'"}'),
    ]


CORPUS = _corpus()


@pytest.mark.parametrize(("name", "raw"), CORPUS, ids=[name for name, _ in CORPUS])
def test_hostile_input_is_a_config_error(name: str, raw: bytes) -> None:
    with pytest.raises(ConfigError):
        parse_config(raw)


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    found = {}
    for folder, dirs, names in os.walk(root):
        for name in [*dirs, *names]:
            path = Path(folder, name)
            data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
            found[str(path.relative_to(root))] = (path.lstat().st_mode, data)
    return found


@pytest.mark.parametrize(("name", "raw"), CORPUS[::3], ids=[name for name, _ in CORPUS[::3]])
def test_provision_records_failure_and_writes_nothing(
    tmp_path: Path, name: str, raw: bytes
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (tmp_path / "usr/lib/keel").mkdir(parents=True)
    (tmp_path / "usr/lib/keel/provision.ign").write_bytes(raw)
    before = _snapshot(tmp_path)
    state = provision(tmp_path)
    assert state["result"] == "failed"
    assert json.loads((tmp_path / STATE_FILE).read_text())["result"] == "failed"
    after = _snapshot(tmp_path)
    new = set(after) - set(before)
    assert new <= {"var", "var/lib", "var/lib/keel", STATE_FILE}
    assert {k: v for k, v in after.items() if k in before} == before


def test_an_unexpected_exception_while_applying_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "usr/lib/keel").mkdir(parents=True)
    (tmp_path / "usr/lib/keel/provision.ign").write_bytes(doc())

    def broken(*_: Any) -> list[str]:
        raise KeyError("bug")

    monkeypatch.setattr("hostd.provision.apply_config", broken)
    state = provision(tmp_path)
    assert state["result"] == "failed"
    assert "KeyError" in state["error"]
    assert json.loads((tmp_path / STATE_FILE).read_text())["result"] == "failed"


def test_main_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr("hostd.provision.provision", broken)
    assert main(["--root", str(tmp_path)]) == 0


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_every_supported_version_accepts_a_minimal_config(version: str) -> None:
    assert parse_config(doc(version)).version == version


def test_a_newer_version_is_refused_with_the_supported_list() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(doc("3.6.0"))
    assert "'3.6.0'" in str(error.value)
    assert ", ".join(f"3.{n}.0" for n in range(6)) in str(error.value)


def test_butane_getting_started_shapes_are_accepted() -> None:
    raw = json.dumps({
        "ignition": {"version": "3.4.0", "config": {"replace": {"verification": {}}},
                     "proxy": {}, "security": {"tls": {}}, "timeouts": {}},
        "storage": {"files": [{"path": "/etc/a", "contents": {
            "compression": "", "source": "data:,hi"}}]},
    }).encode()  # fmt: skip
    assert parse_config(raw).files[0].contents == b"hi"


@pytest.mark.parametrize(
    ("field", "section"),
    [
        ("storage.luks", {"storage": {"luks": [{"name": "x"}]}}),
        ("storage.raid", {"storage": {"raid": [{"name": "x"}]}}),
        ("ignition.proxy", {"ignition": {"version": "3.4.0", "proxy": {"httpProxy": "x"}}}),
        ("networkd", {"networkd": {}}),
    ],
)
def test_refused_fields_say_why(field: str, section: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(json.dumps({"ignition": {"version": "3.4.0"}, **section}).encode())
    message = str(error.value)
    assert f"unsupported field '{field}':" in message
    assert len(message.split(":", 1)[1]) > 20  # a reason, not just the name
