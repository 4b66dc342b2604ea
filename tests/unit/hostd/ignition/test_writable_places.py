"""/usr/local and /opt, writable as on Fedora CoreOS (issue 13): the image links them
to /var/usrlocal and /var/opt, and a config's files under them land on /var, through
those links only (hostd/ignition/safefs.py, paths.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from hostd.ignition import safefs
from hostd.ignition.apply import apply_config
from hostd.ignition.config import ConfigError, parse_config

HELLO = "#!/bin/sh\necho hello\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A Keel image's layout as finalize makes it: /usr/local, /opt, /home into /var."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    for folder in ("var/usrlocal/bin", "var/opt", "var/home", "usr/bin"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "usr/local").symlink_to("../var/usrlocal")
    (tmp_path / "opt").symlink_to("var/opt")
    (tmp_path / "home").symlink_to("var/home")
    return tmp_path


def config(**sections: Any) -> bytes:
    return json.dumps({"ignition": {"version": "3.4.0"}, **sections}).encode()


def files(*entries: dict[str, Any]) -> bytes:
    return config(storage={"files": list(entries)})


HELLO_AND_CONF = files(
    {"path": "/usr/local/bin/hello", "mode": 0o755, "contents": {"inline": HELLO}},
    {"path": "/opt/app/conf", "contents": {"inline": "a=1\n"}},
)


def test_files_under_usr_local_and_opt_land_on_var(root: Path) -> None:
    apply_config(root, parse_config(HELLO_AND_CONF))
    hello = root / "var/usrlocal/bin/hello"
    assert hello.read_text() == HELLO
    assert hello.stat().st_mode & 0o7777 == 0o755
    assert (root / "var/opt/app/conf").read_text() == "a=1\n"
    assert (root / "var/opt/app").stat().st_mode & 0o777 == 0o755  # made parent
    # The image's links are left as they are.
    assert os.readlink(root / "usr/local") == "../var/usrlocal"
    assert os.readlink(root / "opt") == "var/opt"


def test_a_second_run_changes_nothing(root: Path) -> None:
    apply_config(root, parse_config(HELLO_AND_CONF))
    log = apply_config(root, parse_config(HELLO_AND_CONF))
    assert all(line.startswith("unchanged") for line in log), log


def test_directories_and_links_under_opt(root: Path) -> None:
    raw = config(
        storage={
            "directories": [{"path": "/opt/app/data", "mode": 0o700}],
            "links": [{"path": "/usr/local/bin/app", "target": "/opt/app/bin/app"}],
        }
    )
    apply_config(root, parse_config(raw))
    assert (root / "var/opt/app/data").stat().st_mode & 0o777 == 0o700
    assert os.readlink(root / "var/usrlocal/bin/app") == "/opt/app/bin/app"


def test_a_link_planted_at_var_usrlocal_is_refused(root: Path) -> None:
    (root / "var/usrlocal/bin").rmdir()
    (root / "var/usrlocal").rmdir()
    (root / "var/usrlocal").symlink_to(root / "etc")
    with pytest.raises(ConfigError, match="symbolic link"):
        apply_config(root, parse_config(HELLO_AND_CONF))
    assert not (root / "etc/bin").exists()
    assert not (root / "var/opt/app").exists()  # nothing half applied


def test_a_link_planted_below_usr_local_is_refused(root: Path) -> None:
    (root / "var/usrlocal/bin").rmdir()
    (root / "var/usrlocal/bin").symlink_to("../../etc")
    with pytest.raises(ConfigError, match="symbolic link"):
        apply_config(root, parse_config(HELLO_AND_CONF))
    assert not (root / "etc/hello").exists()


def test_a_link_planted_at_var_opt_is_refused(root: Path) -> None:
    (root / "var/opt").rmdir()
    (root / "var/opt").symlink_to("../etc")
    with pytest.raises(ConfigError, match="symbolic link"):
        apply_config(root, parse_config(HELLO_AND_CONF))
    assert not (root / "etc/app").exists()


def test_no_other_nested_link_is_followed(root: Path) -> None:
    (root / "usr/share").symlink_to("../var/usrlocal")
    with safefs.Root(root) as fs, pytest.raises(safefs.UnsafePath, match="symbolic link"):
        fs.write_file("/usr/share/x", b"x", 0o644)
    assert not (root / "var/usrlocal/x").exists()


@pytest.mark.parametrize(
    ("where", "target", "expected"),
    [
        (["home"], "var/home", ["var", "home"]),
        (["home"], "/var/home", ["var", "home"]),
        (["usr", "local"], "../var/usrlocal", ["var", "usrlocal"]),
        (["usr", "local"], "/var/usrlocal", ["var", "usrlocal"]),
        (["usr", "local"], "../../var/usrlocal", None),  # above the root
        (["home"], "../var/home", None),
        (["home"], "var/../etc", None),
        (["usr", "share"], "../var/usrlocal", None),  # not one of the image's links
        (["var", "usrlocal"], "/etc", None),
    ],
)
def test_image_link_targets(where: list[str], target: str, expected: list[str] | None) -> None:
    assert safefs.image_link_target(where, target) == expected


@pytest.mark.parametrize("path", ["/usr/local", "/opt"])
def test_the_places_themselves_are_refused(path: str) -> None:
    with pytest.raises(ConfigError, match="itself"):
        parse_config(config(storage={"directories": [{"path": path}]}))
