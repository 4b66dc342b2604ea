"""Butane YAML -> Ignition JSON, for the subset Keel's provisioner applies.

Variants and the Ignition spec each version produces, as the butane tool maps them:
fcos 1.0.0-1.5.0 (3.0.0, 3.1.0, 3.2.0, 3.2.0, 3.3.0, 3.4.0), flatcar 1.0.0-1.1.0
(3.3.0, 3.4.0) and Keel's own variant keel 1.0.0 (3.4.0). Literal and local contents
become data: URLs in `contents.source`, as butane writes them (without its optional
gzip compression), so the output is plain upstream Ignition. Any other field is
refused by name, with the line of the Butane file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from composer.core.errors import KeelError
from hostd.ignition.config import ConfigError, parse_config
from hostd.ignition.dataurl import encode_data_url

IGNITION_FOR = {
    ("fcos", "1.0.0"): "3.0.0",
    ("fcos", "1.1.0"): "3.1.0",
    ("fcos", "1.2.0"): "3.2.0",
    ("fcos", "1.3.0"): "3.2.0",
    ("fcos", "1.4.0"): "3.3.0",
    ("fcos", "1.5.0"): "3.4.0",
    ("flatcar", "1.0.0"): "3.3.0",
    ("flatcar", "1.1.0"): "3.4.0",
    ("keel", "1.0.0"): "3.4.0",
}

_OWNER = {"id": "id", "name": "name"}
_CONTENTS = {"inline": None, "local": None, "source": "source"}
_NODE = {"path": "path", "overwrite": "overwrite", "user": _OWNER, "group": _OWNER}

# Butane field -> Ignition field name, or a nested table; None: handled specially.
FIELDS: dict[str, Any] = {
    "variant": None,
    "version": None,
    "passwd": {
        "users": [
            {
                "name": "name",
                "ssh_authorized_keys": "sshAuthorizedKeys",
                "groups": "groups",
                "password_hash": "passwordHash",
            }
        ]
    },
    "storage": {
        "files": [{**_NODE, "mode": "mode", "contents": _CONTENTS, "append": [_CONTENTS]}],
        "directories": [{**_NODE, "mode": "mode"}],
        "links": [{**_NODE, "target": "target", "hard": "hard"}],
    },
    "systemd": {
        "units": [
            {
                "name": "name",
                "enabled": "enabled",
                "mask": "mask",
                "contents": "contents",
                "dropins": [{"name": "name", "contents": "contents"}],
            }
        ]
    },
}


class ButaneError(KeelError):
    pass


@dataclass(frozen=True)
class _Source:
    name: str  # for messages
    lines: dict[str, int]  # dotted field path -> line
    files_dir: Path | None

    def where(self, path: str) -> str:
        parts = path.split(".")
        while parts and ".".join(parts) not in self.lines:
            parts.pop()
        line = self.lines.get(".".join(parts))
        return f"{self.name}:{line}" if line else self.name


def _field_lines(text: str) -> dict[str, int]:
    """Dotted paths (list items as numbers) -> 1-based line of the key."""
    found: dict[str, int] = {}

    def walk(node: yaml.Node, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = f"{path}.{key.value}" if path else str(key.value)
                found[child] = key.start_mark.line + 1
                walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                found[f"{path}.{index}"] = item.start_mark.line + 1
                walk(item, f"{path}.{index}")

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return found
    if root is not None:
        walk(root, "")
    return found


def looks_like_butane(data: bytes) -> bool:
    """Butane is YAML with a top-level `variant`; Ignition is a JSON object."""
    try:
        json.loads(data)
        return False
    except (UnicodeDecodeError, ValueError):
        pass
    try:
        document = yaml.safe_load(data)
    except yaml.YAMLError:
        return False
    return isinstance(document, dict) and "variant" in document


def _contents(value: dict[str, Any], path: str, src: _Source) -> dict[str, Any]:
    given = [key for key in ("inline", "local", "source") if value.get(key) is not None]
    if len(given) > 1:
        raise ButaneError(f"{src.where(path)}: {path} has {' and '.join(given)}; give only one")
    if not given:
        return {}
    key = given[0]
    if key == "source":
        return {"source": value["source"]}
    if key == "inline":
        return {"source": encode_data_url(str(value["inline"]).encode())}
    return {"source": encode_data_url(_read_local(str(value["local"]), path, src))}


def _read_local(name: str, path: str, src: _Source) -> bytes:
    if src.files_dir is None:
        raise ButaneError(
            f"{src.where(path)}: {path}.local needs a files directory",
            hint="pass the Butane file by path (keel run --config FILE), or use inline",
        )
    local = (src.files_dir / name).resolve()
    if Path(name).is_absolute() or not local.is_relative_to(src.files_dir.resolve()):
        raise ButaneError(
            f"{src.where(path)}: {path}.local is {name!r}, outside the files directory "
            f"{src.files_dir}"
        )
    try:
        return local.read_bytes()
    except OSError as error:
        raise ButaneError(f"{src.where(path)}: {path}.local: cannot read {local}: "
                          f"{error.strerror}") from None  # fmt: skip


def _translate(value: Any, table: Any, path: str, src: _Source) -> Any:
    if isinstance(table, list):
        if not isinstance(value, list):
            raise ButaneError(f"{src.where(path)}: {path} must be a list")
        return [_translate(item, table[0], f"{path}.{i}", src) for i, item in enumerate(value)]
    if table is _CONTENTS:
        if not isinstance(value, dict):
            raise ButaneError(f"{src.where(path)}: {path} must be a mapping")
        _refuse_unknown(value, table, path, src)
        return _contents(value, path, src)
    if isinstance(table, dict):
        if not isinstance(value, dict):
            raise ButaneError(f"{src.where(path)}: {path} must be a mapping")
        _refuse_unknown(value, table, path, src)
        out = {}
        for key, child in value.items():
            if child is None:
                continue
            target = table[key]
            name = target if isinstance(target, str) else key
            out[name] = _translate(child, target, f"{path}.{key}" if path else key, src)
        return out
    return value


def _refuse_unknown(value: dict[str, Any], table: dict[str, Any], path: str, src: _Source) -> None:
    for key in value:
        if key not in table:
            field = f"{path}.{key}" if path else str(key)
            raise ButaneError(
                f"{src.where(field)}: unsupported Butane field {field!r}",
                hint="Keel translates passwd.users, storage.files/directories/links and "
                "systemd.units (see docs/provisioning.md)",
            )


def translate(text: str, *, name: str = "<butane>", files_dir: Path | None = None) -> bytes:
    """Ignition JSON for a Butane document; ButaneError names the field and line."""
    src = _Source(name, _field_lines(text), files_dir)
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ButaneError(f"{name}: not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise ButaneError(f"{name}: a Butane config is a mapping with variant and version")
    variant, version = document.get("variant"), str(document.get("version"))
    ignition_version = IGNITION_FOR.get((str(variant), version))
    if ignition_version is None:
        known = ", ".join(f"{v} {n}" for v, n in IGNITION_FOR)
        raise ButaneError(
            f"{src.where('variant')}: variant {variant!r} version {version!r} is not supported",
            hint=f"supported: {known}",
        )
    body = _translate(document, FIELDS, "", src)
    body.pop("variant", None)
    body.pop("version", None)
    config = {"ignition": {"version": ignition_version}, **body}
    data = (json.dumps(config, indent=2) + "\n").encode()
    try:
        parse_config(data)  # the same checks the host makes, now rather than at boot
    except ConfigError as error:
        raise ButaneError(f"{name}: {error}") from None
    return data


def translate_file(path: Path, files_dir: Path | None = None) -> bytes:
    return translate(
        path.read_text(), name=str(path), files_dir=files_dir if files_dir else path.parent
    )


def ignition_from_file(path: Path) -> bytes:
    """A provisioning config file (Ignition JSON or Butane YAML) as validated Ignition."""
    data = path.read_bytes()
    if looks_like_butane(data):
        return translate_file(path)
    try:
        parse_config(data)
    except ConfigError as error:
        raise KeelError(f"{path}: {error}") from None
    return data
