"""Hostile Butane input, generated here: each gives ButaneError naming the file (and
the line where there is one), never another exception, in the library and in the
real `keel` command line (no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from composer.provisioning.butane import ButaneError, butane

HEAD = b"variant: fcos\nversion: 1.5.0\n"


def _alias_bomb() -> bytes:
    lines = [b'a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 10):
        refs = ",".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]".encode())
    return HEAD + b"\n".join(lines) + b"\n"


HOSTILE: dict[str, tuple[bytes, str]] = {
    "deep nesting": (HEAD + b"storage: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested more than"),
    "deep block nesting": (
        HEAD + b"".join(b"  " * i + b"k:\n" for i in range(200)),
        "nested more than",
    ),
    "alias bomb": (_alias_bomb(), "alias bomb"),
    "recursive alias": (HEAD + b"a: &x [*x]\n", "names no anchor"),
    "huge input": (HEAD + b"x: " + b"a" * (5 * 1024 * 1024) + b"\n", "more than a Butane config"),
    "NUL byte": (HEAD + b"passwd:\x00\n", "t.bu:3: a NUL byte"),
    "escaped lone surrogate": (
        HEAD + b'storage:\n  files:\n    - path: "/etc/\\ud800"\n',
        "t.bu:5: a lone UTF-16 surrogate",
    ),
    "UTF-8-encoded surrogate": (
        HEAD + b"x: \xed\xa0\x80\n",
        "t.bu:3: not UTF-8 (a UTF-16 surrogate",
    ),
    "Latin-1": (HEAD + b"x: caf\xe9\n", "t.bu:3: not UTF-8 (byte 0xe9)"),
    "UTF-16 with BOM": ("variant: fcos\n".encode("utf-16"), "UTF-16"),
    "UTF-16 without BOM": ("variant: fcos\nversion: 1.5.0\n".encode("utf-16-le"), "UTF-16"),
    "duplicate keys": (HEAD + b"passwd: {}\npasswd: {}\n", "t.bu:4: duplicate key 'passwd'"),
    "YAML 1.1 boolean into a bool": (
        HEAD + b"systemd:\n  units:\n    - name: a.service\n      enabled: yes\n",
        "t.bu:6: field 'systemd.units.0.enabled': must be true or false, not the string yes",
    ),
    "YAML 1.1 no as contents stays text, 010 as a name is refused": (
        HEAD + b"passwd:\n  users:\n    - name: 010\n",
        "t.bu:5: field 'passwd.users.0.name': must be a string, not the integer 010",
    ),
    "wrong types everywhere": (
        HEAD + b"passwd: [1]\nstorage:\n  files: {path: /a}\nsystemd: 3\n",
        "must be a mapping, not a list",
    ),
    "unknown top-level field": (
        HEAD + b"storge: {}\n",
        "t.bu:3: unsupported Butane field 'storge'",
    ),
    "not a mapping": (b"- a\n- b\n", "a Butane config is a mapping"),
    "empty": (b"", "a Butane config is a mapping"),
    "version as a number": (b"variant: fcos\nversion: 1.5\n", "must be a string, not the number"),
    "no variant": (b"version: 1.5.0\n", "field 'variant' is required"),
    "syntax error": (HEAD + b"a: [b\n", "t.bu:4: not valid YAML"),
    "control character": (HEAD + b"a: \x07\n", "not valid YAML"),
    "two documents": (HEAD + b"---\nb: 1\n", "a second YAML document"),
    "custom tag": (HEAD + b"a: !!python/object:os.system x\n", "YAML tag"),
    "null list item": (HEAD + b"passwd:\n  users:\n    - ~\n", "is empty (null)"),
    "huge integer": (
        HEAD + b"passwd:\n  users:\n    - name: a\n      uid: 99999999999999999999999\n",
        "must be an integer, not the number",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_input_gives_a_clear_error(case: str) -> None:
    data, expected = HOSTILE[case]
    with pytest.raises(ButaneError) as caught:
        butane(data, name="t.bu")
    assert expected in str(caught.value)


def test_every_error_is_listed_not_only_the_first() -> None:
    data = HEAD + (
        b"passwd:\n  users:\n    - name: 010\n      no_create_home: yes\n      bogus: 1\n"
        b"storage:\n  files:\n    - path: /etc/a\n      mode: '0644'\n"
    )
    with pytest.raises(ButaneError) as caught:
        butane(data, name="t.bu")
    lines = str(caught.value).splitlines()
    assert [line.split(": field")[0].split(": unsupported")[0] for line in lines] == [
        "t.bu:5", "t.bu:6", "t.bu:7", "t.bu:11"
    ]  # fmt: skip


def keel(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "composer.cli", *args],
        input=stdin, capture_output=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    "case", ["deep nesting", "alias bomb", "UTF-16 with BOM", "NUL byte", "escaped lone surrogate",
             "duplicate keys", "wrong types everywhere", "syntax error"],
)  # fmt: skip
def test_the_command_line_refuses_hostile_input_without_a_traceback(
    case: str, tmp_path: Path
) -> None:
    data, expected = HOSTILE[case]
    path = tmp_path / "t.bu"
    path.write_bytes(data)
    for verb in (["butane", str(path)], ["config", "check", str(path)]):
        result = keel(*verb)
        assert result.returncode == 1, (verb, result.stderr)
        assert b"Traceback" not in result.stderr
        assert result.stderr.startswith(b"keel: error: ")
        assert expected.split(":", 2)[-1].encode() in result.stderr


def test_config_check_on_hostile_ignition(tmp_path: Path) -> None:
    for name, data in {
        "deep.ign": b'{"ignition":' + b"[" * 100000 + b"]" * 100000 + b"}",
        "bad.ign": b'{"ignition": {"version": "3.4.0"}, "bogus": 1}',
        "utf16.ign": '{"ignition": {}}'.encode("utf-16"),
    }.items():
        path = tmp_path / name
        path.write_bytes(data)
        result = keel("config", "check", str(path))
        assert result.returncode != 0, name
        assert b"Traceback" not in result.stderr, result.stderr


def test_the_command_line_translates_and_checks(tmp_path: Path) -> None:
    (tmp_path / "motd").write_text("hi\n")
    path = tmp_path / "c.bu"
    path.write_text(
        "variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/motd\n"
        "      contents:\n        local: motd\n"
    )
    result = keel("butane", str(path), "--files-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        b'{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/motd",'
        b'"contents":{"compression":"","source":"data:,hi%0A"}}]}}\n'
    )
    assert keel("butane", str(path)).returncode == 1  # butane: no files dir unless given
    out = tmp_path / "c.ign"
    pretty = keel("butane", "--pretty", "-o", str(out), "-d", str(tmp_path), str(path))
    assert pretty.returncode == 0 and out.read_bytes().startswith(b'{\n  "ignition"')
    assert keel("config", "check", str(path)).returncode == 0
    assert keel("config", "check", str(out)).returncode == 0
    warn = tmp_path / "w.bu"
    warn.write_text("variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/a\n"
                    "      mode: 644\n")  # fmt: skip
    assert keel("butane", str(warn)).returncode == 0
    strict = keel("butane", "--strict", str(warn))
    assert strict.returncode == 1 and b"leading zero" in strict.stderr
    assert keel("butane", str(tmp_path / "missing.bu")).returncode == 1
