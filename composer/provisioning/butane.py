"""Butane YAML -> Ignition JSON, as the butane tool writes it.

The pieces: yaml12 reads the YAML like butane's parser (and safely), variants knows
which variant/version gives which Ignition spec, schema lists the fields, translate
walks the tree and sources makes data: URLs and reads the files directory.

Two entry points: butane() gives exactly what `butane` prints (`keel butane`), and
translate() gives the config Keel delivers to a host, checked by the host's own
parser (hostd.ignition.config.parse_config) on the build machine."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from composer.core.errors import KeelError
from composer.provisioning import yaml12
from composer.provisioning.translate import to_json, translate_tree
from composer.provisioning.variants import IGNITION_FOR, SPECS, supported
from hostd.ignition.config import ConfigError, parse_config

__all__ = [
    "IGNITION_FOR",
    "SPECS",
    "ButaneError",
    "Translation",
    "butane",
    "ignition_from_file",
    "looks_like_butane",
    "supported",
    "translate",
    "translate_file",
]


class ButaneError(KeelError):
    """Every problem of a Butane config, one per line, each with file and line."""

    def __init__(self, problems: list[str], hint: str | None = None):
        super().__init__("\n".join(problems), hint=hint)
        self.problems = problems


@dataclass(frozen=True)
class Translation:
    config: dict[str, Any]
    warnings: list[str]

    def json(self, *, pretty: bool = False) -> bytes:
        return to_json(self.config, pretty=pretty)


def butane(
    source: str | bytes,
    *,
    name: str = "<butane>",
    files_dir: Path | None = None,
    strict: bool = False,
    auto_compression: bool = True,
) -> Translation:
    """The Ignition config butane makes of source; ButaneError lists every problem."""
    try:
        text = yaml12.decode(source, name) if isinstance(source, bytes) else source
        root = yaml12.load(text, name)
    except yaml12.YamlError as error:
        raise ButaneError(error.problems) from None
    outcome = translate_tree(root, name, files_dir, auto_compression=auto_compression)
    if outcome.config is None:
        raise ButaneError(outcome.errors)
    if strict and outcome.warnings:
        raise ButaneError(
            outcome.warnings, hint="the config produced warnings and --strict was given"
        )
    return Translation(outcome.config, outcome.warnings)


def _strip_empty_compression(config: dict[str, Any]) -> dict[str, Any]:
    """`"compression": ""` means none; dropped for a host whose parser predates it."""
    text = json.dumps(config)
    data: dict[str, Any] = json.loads(text)

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if value.get("compression") == "":
                del value["compression"]
            for child in value.values():
                walk(child)
        elif isinstance(value, list):
            for child in value:
                walk(child)

    walk(data)
    return data


def host_config(
    source: str | bytes, *, name: str = "<butane>", files_dir: Path | None = None
) -> bytes:
    """Butane's output as a Keel host parses it, refused here if the host would refuse it.

    Butane's exact output first. If the host's parser refuses it, the same config
    without automatic gzip and without empty compression fields (both mean the same
    contents) is tried: a host that cannot yet decompress still gets every file."""
    exact = butane(source, name=name, files_dir=files_dir).json(pretty=True)
    try:
        parse_config(exact)
        return exact
    except ConfigError as error:
        first = error
    plain = butane(source, name=name, files_dir=files_dir, auto_compression=False)
    simpler = to_json(_strip_empty_compression(plain.config), pretty=True)
    try:
        parse_config(simpler)
    except ConfigError:
        raise ButaneError([f"{name}: {first}"]) from None
    return simpler


def translate(text: str, *, name: str = "<butane>", files_dir: Path | None = None) -> bytes:
    """Ignition JSON for a Butane document, as delivered to a host (see host_config)."""
    return host_config(text, name=name, files_dir=files_dir)


def translate_file(path: Path, files_dir: Path | None = None) -> bytes:
    return host_config(_read(path), name=str(path), files_dir=files_dir or path.parent)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise KeelError(f"{path}: cannot read: {error.strerror}") from None


def looks_like_butane(data: bytes) -> bool:
    """Butane is YAML with a top-level `variant`; Ignition is a JSON object."""
    try:
        json.loads(data)
        return False
    except (UnicodeDecodeError, ValueError, RecursionError):
        pass
    try:
        root = yaml12.load(yaml12.decode(data, "config"), "config")
    except (yaml12.YamlError, RecursionError):
        return False
    return isinstance(root, yaml12.Mapping) and any(k == "variant" for k, _, _ in root.items)


def ignition_from_file(path: Path) -> bytes:
    """A provisioning config file (Ignition JSON or Butane YAML) as validated Ignition."""
    data = _read(path)
    if looks_like_butane(data):
        return translate_file(path)
    try:
        parse_config(data)
    except ConfigError as error:
        raise KeelError(f"{path}: {error}") from None
    return data
