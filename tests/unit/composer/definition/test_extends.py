"""`extends`: merging along the chain, the origins of merged values, and the messages
for a cycle, a missing parent and a mistake in a parent."""

from __future__ import annotations

from pathlib import Path

from composer.definition.model import Origin
from tests.unit.composer.definition.conftest import MINIMAL, MiB, Workspace

BASE = """\
name: base
version: "1.0"
description: the base
packages: [systemd, openssh-server]
kernel:
  cmdline: [console=ttyS0]
partitions:
  esp: 128MiB
  root: 512MiB
  var: 1GiB
variables:
  hostname: keel
  ssh: {port: 22}
"""


CHILD = """\
extends: base
name: docker-host
packages: [docker.io, systemd, python3]
kernel:
  package: linux-image-cloud-amd64
partitions:
  root: 1GiB
variables:
  ssh: {listen: any}
"""


def test_extends_merges_scalars_mappings_and_lists(ws: Workspace) -> None:
    ws.image("base.yaml", BASE)
    ws.image("docker-host.yaml", CHILD)
    defn = ws.load("docker-host.yaml")
    assert defn.name == "docker-host"  # the child's scalar wins
    assert defn.version == "1.0"  # ...and the parent's stays where the child is silent
    assert defn.description == "the base"
    assert defn.kernel.package == "linux-image-cloud-amd64"
    assert defn.kernel.cmdline == ("console=ttyS0",)
    assert defn.partitions.root == 1024 * MiB
    assert defn.partitions.esp == 128 * MiB
    # Lists extend, and a package both name is installed once, where the parent put it.
    assert defn.packages == ("systemd", "openssh-server", "docker.io", "python3")
    assert defn.variables_dict["ssh"] == {"port": 22, "listen": "any"}
    assert "extends" not in defn.resolved


def test_extends_keeps_repeated_list_items_that_are_mappings(ws: Workspace) -> None:
    ws.template("a.j2")
    entry = "templates: [{source: a.j2, target: /etc/a}]\n"
    ws.image("base.yaml", MINIMAL + entry)
    ws.image("child.yaml", "extends: base\n" + entry)
    assert len(ws.load("child.yaml").templates) == 2


def test_origins_follow_values_through_the_merge(ws: Workspace) -> None:
    ws.image("base.yaml", BASE)
    ws.image("docker-host.yaml", CHILD)
    defn = ws.load("docker-host.yaml")
    base, child = Path("images/base.yaml"), Path("images/docker-host.yaml")
    assert defn.origins["partitions.root"] == Origin(child, 7)
    # A nested mapping is where its key is, not where its first entry is.
    assert defn.origins["partitions"] == Origin(child, 6)
    assert defn.origins["partitions.esp"] == Origin(base, 8)
    assert defn.origins["name"] == Origin(child, 2)
    assert defn.origins["version"] == Origin(base, 2)
    # Merged list items keep their file and line, renumbered to their merged place.
    assert defn.origins["packages.1"] == Origin(base, 4)
    assert defn.origins["packages.2"] == Origin(child, 3)
    assert defn.origins["packages.3"] == Origin(child, 3)
    assert "packages.4" not in defn.origins  # the duplicate "systemd" is gone
    assert defn.origins["variables.ssh.port"] == Origin(base, 13)
    assert defn.origins["variables.ssh.listen"] == Origin(child, 9)
    assert defn.origin("kernel.cmdline.0") == Origin(base, 6)
    assert defn.origin("debian.suite") == Origin(child, 1)  # a default: the loaded file


def test_extends_a_relative_path_and_a_chain(ws: Workspace) -> None:
    ws.image("shared/base.yaml", BASE)
    ws.image("shared/middle.yml", "extends: base.yaml\npackages: [curl]\n")
    ws.image("team/leaf.yaml", "extends: ../shared/middle.yml\nname: leaf\n")
    defn = ws.load("team/leaf.yaml")
    assert defn.name == "leaf"
    assert defn.packages == ("systemd", "openssh-server", "curl")
    assert defn.origins["packages.2"] == Origin(Path("images/shared/middle.yml"), 2)


def test_parent_without_partitions_is_fine_when_the_child_has_them(ws: Workspace) -> None:
    ws.image("base.yaml", "packages: [curl]\n")
    ws.image("x.yaml", "extends: base\n" + MINIMAL)
    assert ws.load("x.yaml").packages == ("curl",)


def test_mistake_in_a_parent_names_the_parent(ws: Workspace) -> None:
    ws.image("base.yaml", "packages: [Not_A_Package]\n")
    ws.image("x.yaml", "extends: base\n" + MINIMAL)
    message = ws.error("x.yaml")
    assert message.startswith("images/base.yaml:1: field 'packages.0' must be a Debian package")


def test_extends_cycle_prints_the_chain(ws: Workspace) -> None:
    ws.image("a.yaml", "name: a\nextends: b\n")
    ws.image("b.yaml", "extends: a\n")
    message = ws.error("a.yaml")
    assert message == (
        "images/a.yaml:2: 'extends' makes a cycle: a.yaml -> b.yaml -> a.yaml; "
        "remove one of these 'extends'"
    )


def test_extending_itself_is_a_cycle(ws: Workspace) -> None:
    ws.image("a.yaml", "extends: a.yaml\n")
    assert "cycle: a.yaml -> a.yaml" in ws.error("a.yaml")


def test_missing_parent_names_the_extends_line(ws: Workspace) -> None:
    ws.image("x.yaml", "name: x\n\nextends: basse\n")
    message = ws.error("x.yaml")
    assert message == (
        "images/x.yaml:3: 'extends' names 'basse', but images/basse.yaml does not exist; "
        "create it or fix 'extends'"
    )
