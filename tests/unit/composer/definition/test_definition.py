"""The image definition loader: merging along `extends`, origins, and the messages a
person gets for each kind of mistake (file, line and field in every one)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from composer.core.errors import KeelError
from composer.definition.load import definition_digest, load_definition, parse_size
from composer.definition.model import FileAttributes, ImageDefinition, Origin, Template

MiB = 1024**2

MINIMAL = """\
name: base
version: "1.0"
partitions:
  esp: 128MiB
  root: 512MiB
  var: 1GiB
"""


class Workspace:
    """A throwaway project: images/, templates/ and overlays/ under tmp_path, which is
    also the current directory, so messages name files as "images/x.yaml"."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.images = root / "images"
        self.templates = root / "templates"
        self.overlays = root / "overlays"
        for folder in (self.images, self.templates, self.overlays):
            folder.mkdir()

    def image(self, name: str, text: str) -> Path:
        path = self.images / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def template(self, relative: str) -> None:
        path = self.templates / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{{ hostname }}\n")

    def overlay_file(self, overlay: str, relative: str) -> None:
        path = self.overlays / overlay / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")

    def load(self, name: str) -> ImageDefinition:
        return load_definition(
            self.images / name,
            templates_dir=self.templates,
            overlays_dir=self.overlays,
            images_dir=self.images,
        )

    def error(self, name: str) -> str:
        with pytest.raises(KeelError) as caught:
            self.load(name)
        return caught.value.message


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.chdir(tmp_path)
    return Workspace(tmp_path)


# --- loading a single file ---------------------------------------------------------


def test_minimal_definition_gets_every_default(ws: Workspace) -> None:
    ws.image("base.yaml", MINIMAL)
    defn = ws.load("base.yaml")
    assert defn.name == "base"
    assert defn.version == "1.0"
    assert defn.debian.suite == "bookworm"
    assert defn.debian.architecture == "x86-64"
    assert defn.debian.mirror == ""
    assert defn.debian.components == ("main",)
    assert defn.kernel.package == "linux-image-amd64"
    assert defn.packages == ()
    assert defn.source == Path("images/base.yaml")
    # The resolved document spells out the defaults, so it describes the whole build.
    assert defn.resolved["debian"] == {
        "suite": "bookworm",
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
    assert defn.resolved["partitions"] == {"esp": 64 * MiB, "root": 2048 * MiB, "var": 128 * MiB}


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
        debian: {suite: bookworm}
        """,
    )
    ws.image("c.yaml", MINIMAL.replace('"1.0"', '"1.1"'))
    digest_a = definition_digest(ws.load("a.yaml"))
    assert len(digest_a) == 64
    assert digest_a == definition_digest(ws.load("b.yaml"))
    assert digest_a != definition_digest(ws.load("c.yaml"))


# --- extends -----------------------------------------------------------------------

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


# --- mistakes and their messages ---------------------------------------------------


def test_unknown_field_suggests_the_close_name(ws: Workspace) -> None:
    ws.image("x.yaml", MINIMAL + "packges: [curl]\n")
    message = ws.error("x.yaml")
    assert message.startswith("images/x.yaml:7: unknown field 'packges' at top level")
    assert "did you mean 'packages'?" in message
    assert "(allowed: name, version," in message


def test_unknown_nested_field_names_its_mapping(ws: Workspace) -> None:
    ws.image("x.yaml", MINIMAL + "debian:\n  suit: trixie\n")
    message = ws.error("x.yaml")
    assert "images/x.yaml:8: unknown field 'suit' in 'debian'; did you mean 'suite'?" in message


def test_size_that_is_not_a_size(ws: Workspace) -> None:
    ws.image("x.yaml", MINIMAL.replace("root: 512MiB", "root: big"))
    message = ws.error("x.yaml")
    assert (
        "images/x.yaml:5: field 'partitions.root' must be a size such as \"512MiB\" "
        "or a number of bytes, not 'big'" in message
    )


def test_version_written_as_a_number(ws: Workspace) -> None:
    ws.image("x.yaml", MINIMAL.replace('"1.0"', "1.0"))
    message = ws.error("x.yaml")
    assert (
        "images/x.yaml:2: field 'version' is the number 1.0; write it as a string: "
        'version: "1.0"' in message
    )


def test_mode_written_as_a_number_keeps_its_leading_zero(ws: Workspace) -> None:
    ws.template("a.j2")
    ws.image("x.yaml", MINIMAL + "templates:\n  - {source: a.j2, target: /a, mode: 0755}\n")
    message = ws.error("x.yaml")
    assert "images/x.yaml:8: field 'templates.0.mode' is the number 0755" in message
    assert 'mode: "0755"' in message


def test_missing_partitions_points_at_extends(ws: Workspace) -> None:
    ws.image("x.yaml", 'name: x\nversion: "1"\n')
    message = ws.error("x.yaml")
    assert message == (
        "images/x.yaml:1: required field 'partitions' is missing "
        "(it may also come from the definition named in 'extends')"
    )


def test_parent_without_partitions_is_fine_when_the_child_has_them(ws: Workspace) -> None:
    ws.image("base.yaml", "packages: [curl]\n")
    ws.image("x.yaml", "extends: base\n" + MINIMAL)
    assert ws.load("x.yaml").packages == ("curl",)


def test_mistake_in_a_parent_names_the_parent(ws: Workspace) -> None:
    ws.image("base.yaml", "packages: [Not_A_Package]\n")
    ws.image("x.yaml", "extends: base\n" + MINIMAL)
    message = ws.error("x.yaml")
    assert message.startswith("images/base.yaml:1: field 'packages.0' must be a Debian package")


def test_missing_template(ws: Workspace) -> None:
    ws.image("x.yaml", MINIMAL + "templates:\n  - source: etc/nope.j2\n    target: /etc/nope\n")
    message = ws.error("x.yaml")
    looked_for = ws.templates / "etc/nope.j2"
    assert message == (
        f"images/x.yaml:8: template 'etc/nope.j2' does not exist in templates/ "
        f"(looked for {looked_for}); create the file or fix 'templates.0.source'"
    )


def test_template_outside_the_templates_folder(ws: Workspace) -> None:
    (ws.root / "secret.j2").write_text("x")
    ws.image("x.yaml", MINIMAL + "templates:\n  - {source: ../secret.j2, target: /etc/x}\n")
    message = ws.error("x.yaml")
    assert "images/x.yaml:8: 'templates.0.source' is '../secret.j2'" in message
    assert "leads out of templates/" in message


def test_template_target_must_be_absolute(ws: Workspace) -> None:
    ws.template("a.j2")
    ws.image("x.yaml", MINIMAL + "templates:\n  - {source: a.j2, target: etc/a}\n")
    message = ws.error("x.yaml")
    assert "images/x.yaml:8: field 'templates.0.target' must be an absolute path" in message


def test_target_with_dot_dot(ws: Workspace) -> None:
    ws.overlay_file("base", "x")
    ws.image("x.yaml", MINIMAL + "overlays:\n  - {source: base, target: /opt/../..}\n")
    message = ws.error("x.yaml")
    assert "images/x.yaml:8: field 'overlays.0.target' is '/opt/../..'" in message


def test_missing_overlay_folder(ws: Workspace) -> None:
    ws.image("x.yaml", MINIMAL + "overlays:\n  - source: nothere\n")
    message = ws.error("x.yaml")
    assert "images/x.yaml:8: overlay 'nothere' does not exist in overlays/" in message
    assert "fix 'overlays.0.source'" in message


def test_overlay_file_attributes_for_a_missing_file(ws: Workspace) -> None:
    ws.overlay_file("base", "usr/lib/keel/foo")
    ws.image(
        "x.yaml",
        MINIMAL
        + "overlays:\n  - source: base\n    files:\n"
        + '      usr/lib/keel/foo: {mode: "0755"}\n'
        + '      usr/lib/keel/bar: {mode: "0755"}\n',
    )
    message = ws.error("x.yaml")
    assert message.startswith(
        "images/x.yaml:11: file 'usr/lib/keel/bar' listed in 'overlays.0.files' "
        "does not exist in overlay 'base'"
    )
    assert "keel/foo'" not in message


def test_overlay_file_key_that_escapes(ws: Workspace) -> None:
    ws.overlay_file("base", "x")
    ws.image("x.yaml", MINIMAL + 'overlays:\n  - {source: base, files: {../x: {mode: "0600"}}}\n')
    message = ws.error("x.yaml")
    assert "images/x.yaml:8: 'overlays.0.files.../x' is '../x'" in message


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


def test_yaml_syntax_error_names_file_and_line(ws: Workspace) -> None:
    ws.image("x.yaml", "name: x\nversion: '1'\n  partitions: [\n")
    message = ws.error("x.yaml")
    assert message.startswith("images/x.yaml:3: invalid YAML: ")


def test_empty_file(ws: Workspace) -> None:
    ws.image("x.yaml", "# nothing yet\n")
    assert ws.error("x.yaml").startswith("images/x.yaml:1: the file is empty")


def test_top_level_must_be_a_mapping(ws: Workspace) -> None:
    ws.image("x.yaml", "- name: x\n")
    assert ws.error("x.yaml").startswith("images/x.yaml:1: the top level is a list;")


def test_missing_definition_file(ws: Workspace) -> None:
    assert ws.error("nope.yaml") == "images/nope.yaml: no such image definition"


def test_duplicate_key(ws: Workspace) -> None:
    ws.image("x.yaml", MINIMAL + "name: again\n")
    assert ws.error("x.yaml") == (
        "images/x.yaml:7: field 'name' is written twice (first on line 1); keep only one"
    )


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("32MiB", "field 'partitions.esp' is 32 MiB, below the minimum of 64 MiB"),
        ("100000000", "field 'partitions.esp' is 100000000 bytes, not a multiple of 1 MiB"),
        (100000000, 'round it to "95MiB" or "96MiB"'),
    ],
)
def test_size_too_small_or_not_whole_mebibytes(
    ws: Workspace, size: str | int, expected: str
) -> None:
    written = f'"{size}"' if isinstance(size, str) else str(size)
    ws.image("x.yaml", MINIMAL.replace("esp: 128MiB", f"esp: {written}"))
    message = ws.error("x.yaml")
    assert message.startswith("images/x.yaml:4: ")
    assert expected in message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("name: Docker_Host", "field 'name' must be a lowercase name"),
        (f"name: {'a' * 64}", "field 'name' is 64 characters long; shorten it to at most 63"),
        ("variables: {my-var: 1}", "key 'my-var' in 'variables' must be a name usable"),
        ("debian: {architecture: arm64}", "field 'debian.architecture' must be one of 'x86-64'"),
        ("packages: curl", "field 'packages' must be a list, not 'curl'"),
        ("description:", "field 'description' is empty"),
        ("kernel: {cmdline: [yes]}", "field 'kernel.cmdline.0' is the boolean true (written yes)"),
        ("variables: {1: x}", "the key 1 in 'variables' is read as the number 1; quote it"),
    ],
)
def test_bad_values_name_file_line_and_field(ws: Workspace, line: str, expected: str) -> None:
    without_name = MINIMAL.replace("name: base\n", "")
    ws.image("x.yaml", without_name + line + "\n")
    message = ws.error("x.yaml")
    assert message.startswith("images/x.yaml:6: ")
    assert expected in message


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


# --- parse_size --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (4096, 4096),
        ("4096", 4096),
        ("1K", 1024),
        ("64MiB", 64 * MiB),
        ("512M", 512 * MiB),
        ("2G", 2048 * MiB),
        ("1GiB", 1024 * MiB),
        ("1 TiB", 1024**4),
    ],
)
def test_parse_size(value: int | str, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", ["big", "1.5G", "12 parsecs", "-1M", "", -1, True])
def test_parse_size_refuses(value: int | str) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(value)


def test_workspace_helpers_are_not_shadowing_the_real_paths(ws: Workspace) -> None:
    # Guards the tests themselves: a loader that ignored the keyword arguments would
    # look in the project's templates/ and the template tests would prove nothing.
    ws.template("only-here.j2")
    ws.image("x.yaml", MINIMAL + "templates: [{source: only-here.j2, target: /x}]\n")
    assert ws.load("x.yaml").templates[0].source == "only-here.j2"
