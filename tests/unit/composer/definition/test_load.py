"""Loading a definition from end to end: every default filled in, the dataclasses
built, the digest, and all problems of a file reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from composer.core.errors import KeelError
from composer.definition.load import definition_digest
from composer.definition.model import FileAttributes, Template
from tests.unit.composer.definition.conftest import MINIMAL, MiB, Workspace


def test_minimal_definition_gets_every_default(ws: Workspace) -> None:
    ws.image("base.yaml", MINIMAL)
    defn = ws.load("base.yaml")
    assert defn.name == "base"
    assert defn.version == "1.0"
    assert defn.debian.suite == "trixie"
    assert defn.debian.architecture == "x86-64"
    assert defn.debian.mirror == ""
    assert defn.debian.components == ("main",)
    assert defn.kernel.package == "linux-image-amd64"
    assert defn.packages == ()
    assert defn.source == Path("images/base.yaml")
    # The resolved document spells out the defaults, so it describes the whole build.
    assert defn.resolved["debian"] == {
        "suite": "trixie",
        "architecture": "x86-64",
        "mirror": "",
        "components": ["main"],
    }
    assert defn.resolved["kernel"]["cmdline"] == []
    assert "extends" not in defn.resolved


def test_sizes_become_bytes(ws: Workspace) -> None:
    ws.image(
        "base.yaml",
        """\
        name: base
        version: "1"
        partitions: {esp: 64M, root: 2G, var: 134217728}
        """,
    )
    defn = ws.load("base.yaml")
    assert (defn.partitions.esp, defn.partitions.root, defn.partitions.var) == (
        64 * MiB,
        2048 * MiB,
        128 * MiB,
    )
    assert defn.resolved["partitions"] == {
        "esp": 64 * MiB,
        "root": 2048 * MiB,
        "var": 128 * MiB,
        "var_max": 0,
    }


def test_var_max_is_a_size_no_smaller_than_var(ws: Workspace) -> None:
    ws.image("capped.yaml", MINIMAL.replace("  var: 1GiB\n", "  var: 1GiB\n  var_max: 50GiB\n"))
    assert ws.load("capped.yaml").partitions.var_max == 50 * 1024 * MiB
    assert ws.load("capped.yaml").resolved["partitions"]["var_max"] == 50 * 1024 * MiB
    ws.image("small.yaml", MINIMAL.replace("  var: 1GiB\n", "  var: 1GiB\n  var_max: 512MiB\n"))
    message = ws.error("small.yaml")
    assert "images/small.yaml:7" in message and "'partitions.var_max' is 512 MiB" in message
    assert "var never shrinks" in message
    ws.image("odd.yaml", MINIMAL.replace("  var: 1GiB\n", "  var: 1GiB\n  var_max: 2147483649\n"))
    assert "not a multiple of 1 MiB" in ws.error("odd.yaml")


def test_templates_overlays_and_variables_become_dataclasses(ws: Workspace) -> None:
    ws.template("etc/hostname.j2")
    ws.overlay_file("base", "usr/lib/keel/zz")
    ws.overlay_file("base", "usr/lib/keel/aa")
    ws.image(
        "x.yaml",
        MINIMAL
        + """\
templates:
  - source: etc/hostname.j2
    target: /etc/hostname
  - {source: etc/hostname.j2, target: /etc/motd, mode: "0600", owner: "0:0"}
overlays:
  - source: base
    files:
      usr/lib/keel/zz: {mode: "0755"}
      usr/lib/keel/aa: {owner: "root:adm"}
variables: {zeta: 1, alpha: {nested: [1, 2]}}
""",
    )
    defn = ws.load("x.yaml")
    assert defn.templates == (
        Template("etc/hostname.j2", "/etc/hostname", 0o644, "root:root"),
        Template("etc/hostname.j2", "/etc/motd", 0o600, "0:0"),
    )
    assert defn.resolved["templates"][1]["mode"] == "0600"  # modes stay as written
    overlay = defn.overlays[0]
    assert overlay.target == "/"
    assert overlay.files == (
        ("usr/lib/keel/aa", FileAttributes(mode=None, owner="root:adm")),
        ("usr/lib/keel/zz", FileAttributes(mode=0o755, owner=None)),
    )
    assert defn.variables == (("alpha", {"nested": [1, 2]}), ("zeta", 1))


def test_digest_ignores_formatting_but_not_content(ws: Workspace) -> None:
    ws.image("a.yaml", MINIMAL)
    ws.image(
        "b.yaml",
        """\
        # the same definition, written differently
        partitions: {var: 1024MiB, root: 512M, esp: 134217728}
        version: '1.0'
        name: base
        debian: {suite: trixie}
        """,
    )
    ws.image("c.yaml", MINIMAL.replace('"1.0"', '"1.1"'))
    digest_a = definition_digest(ws.load("a.yaml"))
    assert len(digest_a) == 64
    assert digest_a == definition_digest(ws.load("b.yaml"))
    assert digest_a != definition_digest(ws.load("c.yaml"))


def test_every_problem_is_reported_at_once_in_line_order(ws: Workspace) -> None:
    ws.image("x.yaml", "name: X\nversion: 2.0\npartitions: {esp: 1, root: 2, var: huge}\n")
    lines = ws.error("x.yaml").splitlines()
    assert [line.split(": ")[0] for line in lines] == [
        "images/x.yaml:1",
        "images/x.yaml:2",
        "images/x.yaml:3",
    ]


def test_errors_carry_a_hint_to_the_reference(ws: Workspace) -> None:
    ws.image("x.yaml", MINIMAL + "packges: []\n")
    with pytest.raises(KeelError) as caught:
        ws.load("x.yaml")
    assert caught.value.hint == "see docs/image-definition.md"


def test_workspace_helpers_are_not_shadowing_the_real_paths(ws: Workspace) -> None:
    # Guards the tests themselves: a loader that ignored the keyword arguments would
    # look in the project's templates/ and the template tests would prove nothing.
    ws.template("only-here.j2")
    ws.image("x.yaml", MINIMAL + "templates: [{source: only-here.j2, target: /x}]\n")
    assert ws.load("x.yaml").templates[0].source == "only-here.j2"
