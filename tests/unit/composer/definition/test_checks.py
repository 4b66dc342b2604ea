"""Checks after validation: partition sizes, templates and overlays that must exist,
and the update trust root."""

from __future__ import annotations

import json

import pytest

from composer.definition.checks import parse_size
from composer.publish import keys
from tests.unit.composer.definition.conftest import MINIMAL, MiB, Workspace


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


# --- kernel modules removed from the image -----------------------------------------

# Each becomes an `rm -rf` run as root on the build machine (composer/build/bootstrap.py).
UNSAFE_MODULE_PATHS = [
    "../../../home",
    "kernel/../../../../etc",
    "..",
    "kernel/.",
    "kernel//sound",
    "kernel/sound/",
    "kernel/*",
    "kernel/snd?",
    "kernel/[ab]",
    "kernel/{sound,gpu}",
    "~root",
    "$(reboot)",
    "kernel/a b",
    "kernel/`id`",
]


def test_unsafe_exclude_modules_are_refused_by_field_and_line(ws: Workspace) -> None:
    entries = "".join(f"    - {json.dumps(entry)}\n" for entry in UNSAFE_MODULE_PATHS)
    ws.image("x.yaml", MINIMAL + "kernel:\n  exclude_modules:\n    - kernel/sound\n" + entries)
    lines = ws.error("x.yaml").splitlines()
    assert len(lines) == len(UNSAFE_MODULE_PATHS)
    for index, entry in enumerate(UNSAFE_MODULE_PATHS, start=1):
        expected = (
            f"images/x.yaml:{9 + index}: field 'kernel.exclude_modules.{index}' is {entry!r}; "
            "write a path inside /usr/lib/modules/<version>/ such as 'kernel/sound'"
        )
        assert any(line.startswith(expected) for line in lines), (expected, lines)
    assert not any("exclude_modules.0'" in line for line in lines)


def test_absolute_exclude_modules_path_is_refused(ws: Workspace) -> None:
    ws.image("x.yaml", MINIMAL + "kernel:\n  exclude_modules: [kernel/sound, /home]\n")
    message = ws.error("x.yaml")
    assert message.startswith("images/x.yaml:8: ")
    assert "kernel.exclude_modules.1" in message


def test_plain_exclude_modules_paths_are_accepted(ws: Workspace) -> None:
    plain = ["kernel/sound", "kernel/drivers/gpu", "kernel/net/wireless", "extra", "a.b_c-d"]
    ws.image("x.yaml", MINIMAL + f"kernel: {{exclude_modules: {json.dumps(plain)}}}\n")
    assert ws.load("x.yaml").kernel.exclude_modules == tuple(plain)


# --- the update trust root ---------------------------------------------------------


def test_trust_root_that_is_not_tuf_metadata_is_refused_at_load(ws: Workspace) -> None:
    (ws.images / "root.json").write_text("not json at all\n")
    ws.image("x.yaml", MINIMAL + "update:\n  root: root.json\n")
    message = ws.error("x.yaml")
    assert message.startswith(
        "images/x.yaml:8: field 'update.root' names 'root.json', which is not a usable trust root: "
    )
    assert "is not TUF metadata" in message
    assert message.endswith("point it at the root.json that `keel keygen` wrote, unchanged")


def test_trust_root_altered_after_signing_is_refused_at_load(ws: Workspace) -> None:
    root = keys.generate_keys(ws.images / "keys").root_metadata
    document = json.loads(root.read_text())
    document["signed"]["expires"] = "2099-01-01T00:00:00Z"
    root.write_text(json.dumps(document))
    ws.image("x.yaml", MINIMAL + "update: {root: keys/root.json}\n")
    message = ws.error("x.yaml")
    assert message.startswith("images/x.yaml:7: field 'update.root' names 'keys/root.json'")
    assert "not signed by its own root keys" in message


def test_trust_root_from_the_environment_is_checked_too(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    (ws.root / "garbage.json").write_text("{}")
    monkeypatch.setenv("KEEL_UPDATE_ROOT", str(ws.root / "garbage.json"))
    ws.image("x.yaml", MINIMAL)
    message = ws.error("x.yaml")
    assert message.startswith(
        "images/x.yaml:1: field 'update.root' is empty, so the trust root is "
        f"$KEEL_UPDATE_ROOT ({ws.root / 'garbage.json'}), which is not usable: "
    )
    assert "point $KEEL_UPDATE_ROOT at the root.json" in message


def test_missing_trust_root_is_reported_once(ws: Workspace) -> None:
    ws.image("x.yaml", MINIMAL + "update: {root: keys/root.json}\n")
    assert ws.error("x.yaml") == (
        f"images/x.yaml:7: field 'update.root' names 'keys/root.json', but "
        f"{ws.images / 'keys/root.json'} does not exist; paths here are relative to the "
        "definition file that writes them"
    )


def test_trust_root_from_keygen_is_accepted(ws: Workspace) -> None:
    created = keys.generate_keys(ws.images / "keys")
    ws.image("x.yaml", MINIMAL + "update: {root: keys/root.json}\n")
    assert ws.load("x.yaml").update.root == created.root_metadata.absolute()
