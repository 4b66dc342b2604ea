"""Butane tree -> the Ignition config butane writes for it, every problem collected.

Walks the YAML tree (yaml12) against the schema (schema.py) of the config's
variant/version, so an unknown field, a field of a newer version and a value of the
wrong type are all reported, each with its line, before anything is given up."""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from composer.provisioning.schema import NOT_TRANSLATED, REQUIRED, STRUCTS
from composer.provisioning.sources import LocalFileError, make_data_url, read_local, walk_tree
from composer.provisioning.variants import SPECS, Spec, supported
from composer.provisioning.yaml12 import Mapping, Node, Scalar, Sequence
from hostd.ignition.merge import merge_documents
from hostd.ignition.names import path_unit_name

_KIND_NAMES = {"str": "a string", "int": "an integer", "bool": "true or false"}
_DECIMAL_MODE = (
    "unreasonable mode would be reasonable if specified in octal; remember to add a leading zero"
)
# butane's messages (config/common/errors.go), word for word.
_MOUNT_NO_PATH = "path is required if with_mount_unit is true and format is not swap"
_MOUNT_NO_FORMAT = "format is required if with_mount_unit is true"
_MOUNT_FORBIDDEN = "path must be under /etc or /var if with_mount_unit is true"
_REUSE_BY_LABEL = (
    "partitions cannot be reused by label; number must be specified except on boot disk "
    "(/dev/disk/by-id/coreos-boot-disk) or when wipe_table is true"
)
_COREOS_BOOT_DISK = "/dev/disk/by-id/coreos-boot-disk"
_FCOS_MOUNT_PLACES = re.compile(r"^/(etc|var)(/|$)")
# Go's encoding/json escapes these inside strings (HTML safety); butane's output has them so.
_GO_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


@dataclass
class Outcome:
    config: dict[str, Any] | None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def to_json(config: dict[str, Any], *, pretty: bool = False) -> bytes:
    """Bytes as butane writes them (Go's encoder), with butane's closing newline."""
    text = json.dumps(
        config,
        ensure_ascii=False,
        indent=2 if pretty else None,
        separators=None if pretty else (",", ":"),
    )
    text = re.sub("[<>&\u2028\u2029]", lambda m: _GO_ESCAPES[m.group()], text)
    return (text + "\n").encode()


def _describe(node: Node) -> str:
    if isinstance(node, Mapping):
        return "a mapping"
    if isinstance(node, Sequence):
        return "a list"
    shown = node.text if len(node.text) <= 40 else node.text[:37] + "..."
    return {
        "int": "the integer",
        "float": "the number",
        "bool": "the boolean",
        "timestamp": "the date",
        "str": "the string",
    }.get(node.kind, node.kind) + f" {shown}"


def _typical_mode(mode: int, directory: bool) -> bool:
    """Whether a mode looks intended (butane's heuristic for a decimal-by-mistake mode)."""
    if mode == 0:
        return True
    had_r = had_w = had_x = False
    for perm in (mode & 0o7, (mode >> 3) & 0o7, (mode >> 6) & 0o7):  # other, group, user
        r, w, x = bool(perm & 4), bool(perm & 2), bool(perm & 1)
        if (had_r and not r) or (had_w and not w) or (had_x and not x):
            return False
        if (x and had_r and not had_x) or ((w or x) and not r):
            return False
        had_r, had_w, had_x = had_r or r, had_w or w, had_x or x
    if not had_r:
        return False
    if directory:
        return had_x and not mode & 0o4000 and not (mode & 0o3000 and not had_w)
    if mode & 0o6000 and (not had_x or mode & 2):
        return False
    return not mode & 0o1000


def _decimal_mistake(mode: int, directory: bool) -> bool:
    digits = str(mode)
    if not 0 <= mode <= 7777 or any(d in "89" for d in digits):
        return False
    return not _typical_mode(mode, directory) and _typical_mode(int(digits, 8), directory)


class Translator:
    def __init__(self, name: str, spec: Spec, files_dir: Path | None, auto_compression: bool):
        self.name = name
        self.spec = spec
        self.files_dir = files_dir
        self.auto_compression = auto_compression
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.mount_units: list[dict[str, Any]] = []  # with_mount_unit, in order

    def error(self, line: int, path: str, message: str) -> None:
        self.errors.append(f"{self.name}:{line}: field '{path}': {message}")

    # -- values --------------------------------------------------------------------

    def value(self, node: Node, kind: Any, path: str) -> Any:
        if isinstance(node, Scalar) and node.kind == "null":
            return None  # butane leaves a null field unset
        if isinstance(kind, list):
            if not isinstance(node, Sequence):
                self.error(node.line, path, f"must be a list, not {_describe(node)}")
                return None
            items = [self.item(child, kind[0], f"{path}.{i}") for i, child in enumerate(node.items)]
            return [item for item in items if item is not None]
        if kind in STRUCTS:
            return self.struct(node, kind, path)
        if not isinstance(node, Scalar) or node.kind != kind:
            hint = (
                "; quote it to mean the text" if kind == "str" and isinstance(node, Scalar) else ""
            )
            self.error(node.line, path, f"must be {_KIND_NAMES[kind]}, not {_describe(node)}{hint}")
            return None
        if kind == "int" and not -(2**63) <= node.value < 2**63:
            self.error(node.line, path, f"{node.text} is out of range")
            return None
        return node.value

    def item(self, node: Node, kind: Any, path: str) -> Any:
        if isinstance(node, Scalar) and node.kind == "null":
            self.error(node.line, path, "is empty (null); remove it or give a value")
            return None
        return self.value(node, kind, path)

    def struct(self, node: Node, kind: str, path: str) -> dict[str, Any] | None:
        if not isinstance(node, Mapping):
            self.error(node.line, path, f"must be a mapping, not {_describe(node)}")
            return None
        fields = {f[0]: f for f in STRUCTS[kind]}
        given: dict[str, tuple[int, Node]] = {}
        for key, line, child in node.items:
            where = f"{path}.{key}" if path else key
            spec = fields.get(key)
            if spec is not None and spec[3] <= self.spec.base:
                given[key] = (line, child)
            elif key in NOT_TRANSLATED.get(kind, {}):
                reason = NOT_TRANSLATED[kind][key]
                self.error(line, where, f"is a Butane field Keel does not translate: {reason}")
            elif spec is not None:
                self.error(
                    line,
                    where,
                    "is not in this Butane version; use a newer version "
                    f"(supported: {supported()})",
                )
            elif not path and key in ("variant", "version"):
                continue
            else:
                self.errors.append(f"{self.name}:{line}: unsupported Butane field '{where}'")
        out: dict[str, Any] = {}
        for yaml_name, json_name, child_kind, _ in STRUCTS[kind]:
            if json_name is None or yaml_name not in given:
                continue
            value = self.value(given[yaml_name][1], child_kind, f"{path}.{yaml_name}".lstrip("."))
            if value is not None and value != {} and value != []:
                out[json_name] = value
        for required in REQUIRED.get(kind, set()):
            if required not in out and required not in given:
                self.error(node.line, f"{path}.{required}", "is required")
                out[required] = ""
        special = getattr(self, f"special_{kind}", None)
        if special is not None:
            special(out, given, path, node.line)
        return _ordered(out, kind)

    # -- what butane translates specially -------------------------------------------

    def local(self, name: str, line: int, path: str) -> bytes | None:
        try:
            return read_local(name, self.files_dir)
        except LocalFileError as error:
            self.error(line, path, f"{error} ({name!r})")
            return None

    def text(self, given: dict[str, tuple[int, Node]], key: str, path: str) -> str | None:
        if key not in given:
            return None
        value = self.value(given[key][1], "str", f"{path}.{key}")
        return value if isinstance(value, str) else None

    def special_Resource(
        self, out: dict[str, Any], given: dict[str, tuple[int, Node]], path: str, line: int
    ) -> None:
        sources = [
            k for k in ("source", "inline", "local") if k in given and not _is_null(given[k][1])
        ]
        for extra in sources[1:]:
            self.error(
                given[extra][0],
                f"{path}.{extra}",
                "only one of the following can be set: inline, local, source",
            )
        if not sources or sources[0] == "source":
            return
        key = sources[0]
        raw = self.text(given, key, path)
        if raw is None:
            return
        contents = (
            raw.encode() if key == "inline" else self.local(raw, given[key][0], f"{path}.{key}")
        )
        if contents is None:
            return
        if self.spec.base == 1:  # fcos 1.0.0: percent-encoded, never compressed
            out["source"] = "data:," + "".join(
                c
                if c.isascii() and (c.isalnum() or c in "-_.!~*'()")
                else "".join(f"%{b:02X}" for b in c.encode())
                for c in raw
            )
            return
        out["source"], compression = make_data_url(
            contents, out.get("compression"), self.auto_compression
        )
        if compression is not None:
            out["compression"] = compression

    def special_PasswdUser(
        self, out: dict[str, Any], given: dict[str, tuple[int, Node]], path: str, line: int
    ) -> None:
        if "ssh_authorized_keys_local" not in given:
            return
        key_line, node = given["ssh_authorized_keys_local"]
        names = self.value(node, ["str"], f"{path}.ssh_authorized_keys_local") or []
        keys = out.setdefault("sshAuthorizedKeys", [])
        for index, name in enumerate(names):
            data = self.local(name, key_line, f"{path}.ssh_authorized_keys_local.{index}")
            if data is not None:
                text = data.decode("utf-8", errors="replace")
                keys += [k for k in re.split("\r?\n", text) if k]
        if not keys:
            del out["sshAuthorizedKeys"]

    def _contents_local(
        self, out: dict[str, Any], given: dict[str, tuple[int, Node]], path: str
    ) -> None:
        name = self.text(given, "contents_local", path)
        if not name:
            return
        line = given["contents_local"][0]
        if "contents" in out:
            self.error(
                line,
                f"{path}.contents_local",
                "only one of the following can be set: contents, contents_local",
            )
            return
        data = self.local(name, line, f"{path}.contents_local")
        if data is not None:
            out["contents"] = data.decode("utf-8", errors="replace")  # Go's string() in JSON

    def special_Unit(
        self, out: dict[str, Any], given: dict[str, tuple[int, Node]], path: str, line: int
    ) -> None:
        self._contents_local(out, given, path)

    def special_Dropin(
        self, out: dict[str, Any], given: dict[str, tuple[int, Node]], path: str, line: int
    ) -> None:
        self._contents_local(out, given, path)

    def _mode_warning(
        self, out: dict[str, Any], given: dict[str, tuple[int, Node]], path: str, directory: bool
    ) -> None:
        mode = out.get("mode")
        if isinstance(mode, int) and _decimal_mistake(mode, directory):
            self.warnings.append(
                f"{self.name}:{given['mode'][0]}: field '{path}.mode': {_DECIMAL_MODE}"
            )

    def special_File(
        self, out: dict[str, Any], given: dict[str, tuple[int, Node]], path: str, line: int
    ) -> None:
        self._mode_warning(out, given, path, False)

    def special_Directory(
        self, out: dict[str, Any], given: dict[str, tuple[int, Node]], path: str, line: int
    ) -> None:
        self._mode_warning(out, given, path, True)

    # -- disks and filesystems ------------------------------------------------------

    def special_Partition(
        self, out: dict[str, Any], given: dict[str, tuple[int, Node]], path: str, line: int
    ) -> None:
        if out.get("number") == 0:
            del out["number"]  # Go's omitempty on an int

    def special_Disk(
        self, out: dict[str, Any], given: dict[str, tuple[int, Node]], path: str, line: int
    ) -> None:
        if not self.spec.fcos_storage_checks or out.get("wipeTable") is True:
            return
        if out.get("device") == _COREOS_BOOT_DISK:
            return
        for index, part in enumerate(out.get("partitions", [])):
            if not part.get("number") and "label" in part:
                self.warnings.append(
                    f"{self.name}:{line}: field '{path}.partitions.{index}.number': "
                    f"{_REUSE_BY_LABEL}"
                )

    def special_Filesystem(
        self, out: dict[str, Any], given: dict[str, tuple[int, Node]], path: str, line: int
    ) -> None:
        """with_mount_unit: butane's checks, then the unit it generates."""
        if "with_mount_unit" not in given:
            return
        if self.value(given["with_mount_unit"][1], "bool", f"{path}.with_mount_unit") is not True:
            return
        fs_format, mount = out.get("format") or "", out.get("path") or ""
        problems = []
        if self.spec.base < 4:  # base/v0_2 and v0_3: a path always, then a format
            problems += [("path", _MOUNT_NO_PATH)] if not mount else []
            problems += [("format", _MOUNT_NO_FORMAT)] if not fs_format else []
        elif not fs_format:
            problems.append(("format", _MOUNT_NO_FORMAT))
        elif fs_format != "swap" and not mount:
            problems.append(("path", _MOUNT_NO_PATH))
        if self.spec.fcos_storage_checks and "path" in out and not _FCOS_MOUNT_PLACES.match(mount):
            problems.append(("path", _MOUNT_FORBIDDEN))
        for key, message in problems:
            self.error(given[key][0] if key in given else line, f"{path}.{key}", message)
        if not problems:
            self.mount_units.append(mount_unit(out, swap_units=self.spec.base >= 4))

    # -- storage.trees: after everything else, as butane does ------------------------

    def trees(self, root: Mapping, config: dict[str, Any]) -> None:
        storage_node = next((v for k, _, v in root.items if k == "storage"), None)
        if not isinstance(storage_node, Mapping) or self.spec.base < 2:
            return
        trees_node = next((v for k, _, v in storage_node.items if k == "trees"), None)
        if not isinstance(trees_node, Sequence):
            if trees_node is not None and not (
                isinstance(trees_node, Scalar) and trees_node.kind == "null"
            ):
                self.error(
                    trees_node.line, "storage.trees", f"must be a list, not {_describe(trees_node)}"
                )
            return
        storage = config.setdefault("storage", {})
        for index, tree in enumerate(trees_node.items):
            where = f"storage.trees.{index}"
            if not isinstance(tree, Mapping):
                self.error(tree.line, where, f"must be a mapping, not {_describe(tree)}")
                continue
            given = {k: (line, v) for k, line, v in tree.items}
            for key, line, _ in tree.items:
                if key not in ("local", "path"):
                    self.errors.append(
                        f"{self.name}:{line}: unsupported Butane field '{where}.{key}'"
                    )
            local = self.text(given, "local", where)
            if not local:
                self.error(tree.line, f"{where}.local", "local is required")
                continue
            dest = self.text(given, "path", where) or "/"
            try:
                entries = walk_tree(local, self.files_dir)
            except LocalFileError as error:
                self.error(tree.line, where, str(error))
                continue
            for kind, rel, data, executable in entries:
                self.tree_node(
                    storage, posixpath.join(dest, rel), kind, data, executable, tree.line, where
                )
        if not storage:
            del config["storage"]
        else:
            config["storage"] = _ordered(storage, "Storage")

    def tree_node(
        self,
        storage: dict[str, Any],
        dest: str,
        kind: str,
        data: bytes | str,
        executable: bool,
        line: int,
        where: str,
    ) -> None:
        section = "files" if kind == "file" else "links"
        others = [
            e
            for s in ("files", "directories", "links")
            if s != section
            for e in storage.get(s, [])
            if e.get("path") == dest
        ]
        entries = storage.setdefault(section, [])
        found = next((e for e in entries if e.get("path") == dest), None)
        taken = found is not None and (
            found.get("contents", {}).get("source") if kind == "file" else found.get("target")
        )
        if others or taken:
            self.error(
                line,
                where,
                f"{dest}: matching filesystem node has existing contents or different type",
            )
            return
        if found is None:
            found = {"path": dest}
            entries.append(found)
        if kind == "link":
            found["target"] = data
            found.update(_ordered(found, "Link"))
            return
        assert isinstance(data, bytes)
        contents = dict(found.get("contents", {}))
        contents["source"], compression = make_data_url(
            data, contents.get("compression"), self.auto_compression
        )
        if compression is not None:
            contents["compression"] = compression
        found["contents"] = _ordered(contents, "Resource")
        found.setdefault("mode", 0o755 if executable else 0o644)
        reordered = _ordered(found, "File")
        found.clear()
        found.update(reordered)


def mount_unit(fs: dict[str, Any], *, swap_units: bool) -> dict[str, Any]:
    """The unit butane generates for a filesystem with with_mount_unit (its template
    in base/v0_N/translate.go): a .mount named after the path, or from base/v0_4 on a
    .swap named after the device for format swap; enabled through [Install]."""
    device, fs_format = fs["device"], fs["format"]
    options = f"\nOptions={','.join(fs['mountOptions'])}" if fs.get("mountOptions") else ""
    if swap_units and fs_format == "swap":
        name = path_unit_name(device, ".swap", go_style=True)
        text = (
            f"# Generated by Butane\n[Swap]\nWhat={device}{options}\n\n"
            "[Install]\nRequiredBy=swap.target"
        )
    else:
        name = path_unit_name(fs.get("path", ""), ".mount", go_style=True)
        fsck = f"systemd-fsck@{path_unit_name(device, '', go_style=True)}.service"
        text = (
            f"# Generated by Butane\n[Unit]\nRequires={fsck}\nAfter={fsck}\n\n"
            f"[Mount]\nWhere={fs.get('path', '')}\nWhat={device}\nType={fs_format}{options}"
            "\n\n[Install]\nRequiredBy=local-fs.target"
        )
    return {"contents": text, "enabled": True, "name": name}


def _with_mount_units(body: dict[str, Any], rendered: list[dict[str, Any]]) -> None:
    """Butane merges its generated units under the config's own (Ignition's merge, the
    generated config as the parent): generated units first, a unit of the same name
    given in systemd.units merged into it, the other units after."""
    systemd = body.get("systemd", {})
    own = systemd.get("units", [])
    by_name = {unit.get("name"): unit for unit in own}
    units = [
        _ordered(merge_documents(unit, by_name[unit["name"]]), "Unit")
        if unit["name"] in by_name
        else unit
        for unit in rendered
    ]
    made = {unit["name"] for unit in rendered}
    units += [unit for unit in own if unit.get("name") not in made]
    body["systemd"] = {**systemd, "units": units}


def _is_null(node: Node) -> bool:
    return isinstance(node, Scalar) and node.kind == "null"


def _ordered(out: dict[str, Any], kind: str) -> dict[str, Any]:
    order = [f[1] for f in STRUCTS[kind] if f[1]]
    return {key: out[key] for key in order if key in out}


def _duplicates(config: dict[str, Any]) -> list[str]:
    """Ignition refuses two entries for one path, user, group, unit or drop-in."""
    problems: list[str] = []

    def check(entries: list[tuple[str, str]], what: str) -> None:
        seen: set[str] = set()
        for field_path, key in entries:
            if key in seen:
                problems.append(f"field '{field_path}': duplicate {what} {key!r}")
            seen.add(key)

    storage = config.get("storage", {})
    nodes = [
        (f"storage.{section}.{i}.path", e.get("path", ""))
        for section in ("files", "directories", "links")
        for i, e in enumerate(storage.get(section, []))
    ]
    check(nodes, "path")
    for section in ("disks", "filesystems"):
        check(
            [
                (f"storage.{section}.{i}.device", e.get("device", ""))
                for i, e in enumerate(storage.get(section, []))
            ],
            "device",
        )
    passwd = config.get("passwd", {})
    for section in ("users", "groups"):
        check(
            [
                (f"passwd.{section}.{i}.name", e.get("name", ""))
                for i, e in enumerate(passwd.get(section, []))
            ],
            section[:-1],
        )
    units = config.get("systemd", {}).get("units", [])
    check([(f"systemd.units.{i}.name", u.get("name", "")) for i, u in enumerate(units)], "unit")
    for i, unit in enumerate(units):
        check(
            [
                (f"systemd.units.{i}.dropins.{j}.name", d.get("name", ""))
                for j, d in enumerate(unit.get("dropins", []))
            ],
            "drop-in",
        )
    for field_path, value in nodes:
        if value and not value.startswith("/"):
            problems.append(f"field '{field_path}': path {value!r} is not absolute")
    return problems


def translate_tree(
    root: Node | None, name: str, files_dir: Path | None, *, auto_compression: bool = True
) -> Outcome:
    if not isinstance(root, Mapping):
        return Outcome(None, [f"{name}: a Butane config is a mapping with variant and version"])
    top = {key: (line, node) for key, line, node in root.items}
    texts: dict[str, str] = {}
    problems: list[str] = []
    for key in ("variant", "version"):
        line, node = top.get(key, (root.line, None))
        if node is None:
            problems.append(f"{name}:{line}: field '{key}' is required (supported: {supported()})")
        elif not isinstance(node, Scalar) or node.kind != "str":
            problems.append(f"{name}:{line}: field '{key}' must be a string, not {_describe(node)}")
        else:
            texts[key] = node.value
    if problems:
        return Outcome(None, problems)
    spec = SPECS.get((texts["variant"], texts["version"]))
    if spec is None:
        line = top["variant"][0]
        return Outcome(
            None,
            [
                f"{name}:{line}: variant {texts['variant']!r} version "
                f"{texts['version']!r} is not supported (supported: {supported()})"
            ],
        )
    t = Translator(name, spec, files_dir, auto_compression)
    body = t.struct(root, "Config", "") or {}
    if t.mount_units and not t.errors:
        _with_mount_units(body, t.mount_units)
    body.setdefault("ignition", {})["version"] = spec.ignition
    body["ignition"] = {**_ordered(body["ignition"], "Ignition"), "version": spec.ignition}
    t.trees(root, body)
    config = {"ignition": body.pop("ignition"), **body}
    if not t.errors:
        t.errors += [f"{name}: {problem}" for problem in _duplicates(config)]
    return Outcome(None if t.errors else config, sorted(t.errors, key=_line), t.warnings)


def _line(problem: str) -> int:
    """Problems in file order (each starts 'NAME:LINE: ')."""
    match = re.match(r".*?:(\d+): ", problem)
    return int(match.group(1)) if match else 0
