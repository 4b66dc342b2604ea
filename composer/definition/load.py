"""Load an image definition: read the YAML with line numbers, follow `extends`, validate
against the JSON Schema, check that referenced templates and overlays exist, and build
the frozen ImageDefinition.

Everything here runs before any slow build step, so a mistake in a definition costs
the user a second, not a two-minute bootstrap. Every problem is reported as
"FILE:LINE: what is wrong; what to do", all problems of a file at once.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError

from composer.core.errors import KeelError
from composer.core.paths import IMAGES_DIR, OVERLAYS_DIR, SCHEMA_FILE, TEMPLATES_DIR
from composer.definition.model import (
    Containers,
    ContainerService,
    Debian,
    DockerEndpoints,
    FileAttributes,
    HealthCheck,
    ImageDefinition,
    Kernel,
    MaintenanceWindow,
    Origin,
    Overlay,
    Partitions,
    Template,
    UpdatePolicy,
)

DOCS_HINT = "see docs/image-definition.md"

MiB = 1024**2
_UNIT_BYTES = {
    "": 1,
    "B": 1,
    "K": 1024,
    "KiB": 1024,
    "M": MiB,
    "MiB": MiB,
    "G": 1024**3,
    "GiB": 1024**3,
    "T": 1024**4,
    "TiB": 1024**4,
}
_SIZE_PATTERN = re.compile(r"([0-9]+) *([A-Za-z]*)")

# Smaller partitions cannot hold what Keel puts there; FAT32 also needs about 64 MiB
# of clusters before mkfs.vfat will make one.
MINIMUM_PARTITION_SIZES = {"esp": 64 * MiB, "root": 64 * MiB, "var": 64 * MiB}

_YAML_TAGS_KEPT_AS_TEXT = {"tag:yaml.org,2002:timestamp"}
_YAML_SCALAR_TAGS = {
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:str",
}

# A path inside a document: ("templates", 2, "source").
DocPath = tuple[str | int, ...]


# --- public API --------------------------------------------------------------------


def load_definition(
    path: Path,
    *,
    templates_dir: Path = TEMPLATES_DIR,
    overlays_dir: Path = OVERLAYS_DIR,
    images_dir: Path = IMAGES_DIR,
) -> ImageDefinition:
    """Read, merge and validate the definition at path; raise KeelError on any mistake."""
    merged = _load_with_parents(path, images_dir, chain=())
    document = _Document.from_node(merged)
    _raise_if_any(_schema_problems(document, _full_validator()))
    resolved = _with_defaults(copy.deepcopy(document.data), _schema(), _schema())
    _raise_if_any(
        [
            *_normalise_sizes(resolved, document),
            *_template_problems(resolved, document, templates_dir),
            *_overlay_problems(resolved, document, overlays_dir),
            *_file_problems(resolved, document),
        ]
    )
    return _build_definition(resolved, document, source=_display(path))


def parse_size(value: int | str) -> int:
    """A size in bytes from a number of bytes or a string such as "512MiB" or "2G"."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{value} is not a size: it is negative")
        return value
    if isinstance(value, str):
        match = _SIZE_PATTERN.fullmatch(value.strip())
        if match and match.group(2) in _UNIT_BYTES:
            return int(match.group(1)) * _UNIT_BYTES[match.group(2)]
    units = ", ".join(unit for unit in _UNIT_BYTES if unit)
    raise ValueError(
        f"{value!r} is not a size; write a number of bytes or a number with a unit "
        f'such as "512MiB" (units: {units}; K, M, G and T mean KiB, MiB, GiB and TiB)'
    )


def definition_digest(defn: ImageDefinition) -> str:
    """sha256 of the resolved definition, stable across key order and formatting."""
    canonical = json.dumps(defn.resolved, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --- the schema --------------------------------------------------------------------


@cache
def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return schema


@cache
def _full_validator() -> Draft202012Validator:
    return Draft202012Validator(_schema())


@cache
def _single_file_validator() -> Draft202012Validator:
    # One file of a chain may leave out what its parent or child provides (a base
    # without partitions, a child without a name); only the merged result must be
    # complete.
    return Draft202012Validator(_without_required(_schema()))


# Keywords whose values are maps of name -> subschema, and keywords holding data.
_SUBSCHEMA_MAPS = {"properties", "$defs", "patternProperties", "dependentSchemas"}
_DATA_KEYWORDS = {"default", "enum", "const", "examples"}


def _without_required(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_without_required(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    stripped: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "required":
            continue
        if key in _DATA_KEYWORDS:
            stripped[key] = value
        elif key in _SUBSCHEMA_MAPS:
            stripped[key] = {name: _without_required(sub) for name, sub in value.items()}
        else:
            stripped[key] = _without_required(value)
    return stripped


def dereference(subschema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """Follow a local "$ref", keeping the keywords written beside it (they win)."""
    ref = subschema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return subschema
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    return {**dereference(target, root), **{k: v for k, v in subschema.items() if k != "$ref"}}


def _with_defaults(data: Any, subschema: dict[str, Any], root: dict[str, Any]) -> Any:
    """Fill in the schema's defaults, so the resolved document describes the whole build."""
    subschema = dereference(subschema, root)
    if isinstance(data, dict) and "properties" in subschema:
        for name, property_schema in subschema["properties"].items():
            property_schema = dereference(property_schema, root)
            if name not in data and "default" in property_schema:
                data[name] = copy.deepcopy(property_schema["default"])
            if name in data:
                data[name] = _with_defaults(data[name], property_schema, root)
    elif isinstance(data, list) and isinstance(subschema.get("items"), dict):
        return [_with_defaults(item, subschema["items"], root) for item in data]
    return data


# --- reading YAML with line numbers ------------------------------------------------


@dataclass(frozen=True)
class _Node:
    """A YAML value that remembers where it was written; containers hold _Nodes."""

    value: Any
    origin: Origin
    # The scalar as written ("1.0", "0644"), for messages: the parsed value loses it.
    text: str | None = None


class _NodeReader:
    """Turns PyYAML's composed node graph into _Nodes, rejecting what YAML allows but a
    definition should not contain (duplicate keys, non-text keys, custom tags)."""

    def __init__(self, loader: yaml.SafeLoader, file: Path) -> None:
        self.loader = loader
        self.file = file
        self.open_nodes: set[int] = set()  # guards against an alias that contains itself

    def origin(self, node: yaml.Node) -> Origin:
        return Origin(self.file, node.start_mark.line + 1)

    def read(self, node: yaml.Node, path: DocPath) -> _Node:
        if id(node) in self.open_nodes:
            raise self.error(node, f"{_describe_path(path)} refers to itself through an alias")
        self.open_nodes.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.read_mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                items = [self.read(item, (*path, i)) for i, item in enumerate(node.value)]
                return _Node(items, self.origin(node))
            return self.read_scalar(node, path)
        finally:
            self.open_nodes.discard(id(node))

    def read_mapping(self, node: yaml.MappingNode, path: DocPath) -> _Node:
        entries: dict[str, _Node] = {}
        first_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = self.read_key(key_node, path)
            line = key_node.start_mark.line + 1
            if key in entries:
                raise self.error(
                    key_node,
                    f"{_describe_path((*path, key))} is written twice "
                    f"(first on line {first_lines[key]}); keep only one",
                )
            value = self.read(value_node, (*path, key))
            # A key's own line is where a reader looks for it, also when its value
            # (a nested mapping or list) starts on the next line.
            entries[key] = _Node(value.value, Origin(self.file, line), value.text)
            first_lines[key] = line
        return _Node(entries, self.origin(node))

    def read_key(self, key_node: yaml.Node, path: DocPath) -> str:
        if key_node.tag == "tag:yaml.org,2002:merge":
            raise self.error(key_node, "YAML merge keys ('<<') are not supported; use 'extends'")
        if not isinstance(key_node, yaml.ScalarNode):
            raise self.error(key_node, f"a key {_describe_where(path)} is not plain text")
        key = self.loader.construct_object(key_node)
        if not isinstance(key, str):
            raise self.error(
                key_node,
                f"the key {key_node.value} {_describe_where(path)} is read as "
                f"{_describe_value(key, key_node.value)}; quote it: "
                f'"{key_node.value}":',
            )
        return key

    def read_scalar(self, node: yaml.Node, path: DocPath) -> _Node:
        if node.tag in _YAML_TAGS_KEPT_AS_TEXT:
            # A date is text to every consumer of a definition (and JSON has no dates).
            return _Node(node.value, self.origin(node), node.value)
        if node.tag not in _YAML_SCALAR_TAGS:
            raise self.error(
                node, f"{_describe_path(path)} has the unsupported YAML tag {node.tag}"
            )
        return _Node(self.loader.construct_object(node), self.origin(node), node.value)

    def error(self, node: yaml.Node, message: str) -> KeelError:
        return KeelError(f"{self.origin(node)}: {message}", hint=DOCS_HINT)


def _read_yaml(path: Path, display: Path) -> _Node:
    """The top-level mapping of one file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise KeelError(
            f"{display}: no such image definition",
            hint=f"the definitions are files in {display.parent}/",
        ) from error
    except OSError as error:
        raise KeelError(f"{display}: cannot read the file: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise KeelError(f"{display}: the file is not UTF-8 text ({error.reason})") from error
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise KeelError(
                f"{display}:1: the file is empty; an image definition is a mapping "
                "with at least 'name', 'version' and 'partitions'",
                hint=DOCS_HINT,
            )
        if not isinstance(root, yaml.MappingNode):
            kind = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
            raise KeelError(
                f"{display}:{root.start_mark.line + 1}: the top level is {kind}; it must be "
                "a mapping of fields such as 'name: docker-host'",
                hint=DOCS_HINT,
            )
        return _NodeReader(loader, display).read(root, ())
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else 1
        hint = None
        if error.context and error.context_mark:
            hint = f"{error.context} (line {error.context_mark.line + 1})"
        raise KeelError(f"{display}:{line}: invalid YAML: {error.problem}", hint=hint) from error
    finally:
        loader.dispose()


# --- documents: plain data plus where each value was written -----------------------


@dataclass(frozen=True)
class _Document:
    data: dict[str, Any]
    origins: dict[DocPath, Origin]
    texts: dict[DocPath, str]

    @classmethod
    def from_node(cls, root: _Node) -> _Document:
        origins: dict[DocPath, Origin] = {}
        texts: dict[DocPath, str] = {}
        data = _to_plain(root, (), origins, texts)
        return cls(data, origins, texts)

    def origin(self, path: Sequence[str | int]) -> Origin:
        """Where path, or the nearest enclosing value, was written."""
        path = tuple(path)
        while path not in self.origins:
            path = path[:-1]
        return self.origins[path]

    def shown(self, path: Sequence[str | int], value: Any) -> str:
        """A value as the user wrote it, for 'not ...' in messages."""
        return _describe_value(value, self.texts.get(tuple(path)))


def _to_plain(
    node: _Node, path: DocPath, origins: dict[DocPath, Origin], texts: dict[DocPath, str]
) -> Any:
    origins[path] = node.origin
    if isinstance(node.value, dict):
        return {k: _to_plain(v, (*path, k), origins, texts) for k, v in node.value.items()}
    if isinstance(node.value, list):
        return [_to_plain(v, (*path, i), origins, texts) for i, v in enumerate(node.value)]
    if node.text is not None:
        texts[path] = node.text
    return node.value


# --- extends -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Link:
    """One file in an extends chain, and where it says 'extends'."""

    file: Path
    extends_origin: Origin


def _load_with_parents(path: Path, images_dir: Path, chain: tuple[_Link, ...]) -> _Node:
    display = _display(path)
    node = _read_yaml(path, display)
    _raise_if_any(_schema_problems(_Document.from_node(node), _single_file_validator()))
    entries: dict[str, _Node] = dict(node.value)
    extends = entries.pop("extends", None)
    own = _Node(entries, node.origin)
    if extends is None:
        return own
    link = _Link(path.resolve(), extends.origin)
    parent_path = _parent_path(extends.value, path, images_dir)
    _check_no_cycle((*chain, link), parent_path.resolve())
    if not parent_path.is_file():
        raise KeelError(
            f"{extends.origin}: 'extends' names {extends.value!r}, but "
            f"{_display(parent_path)} does not exist; create it or fix 'extends'",
            hint=f"a bare name means {_display(images_dir)}/<name>.yaml; a path ending in "
            ".yaml is relative to the file that says 'extends'",
        )
    parent = _load_with_parents(parent_path, images_dir, (*chain, link))
    return _merge(parent, own)


def _parent_path(extends: str, child: Path, images_dir: Path) -> Path:
    if extends.endswith((".yaml", ".yml")):
        return child.parent / extends
    return images_dir / f"{extends}.yaml"


def _check_no_cycle(chain: tuple[_Link, ...], parent: Path) -> None:
    files = [link.file for link in chain]
    if parent not in files:
        return
    start = files.index(parent)
    cycle = [*files[start:], parent]
    names = [f.name for f in cycle]
    if len(set(names)) < len(set(cycle)):  # same file name in two folders: be exact
        names = [str(_display(f)) for f in cycle]
    raise KeelError(
        f"{chain[start].extends_origin}: 'extends' makes a cycle: {' -> '.join(names)}; "
        "remove one of these 'extends'"
    )


def _merge(parent: _Node, child: _Node) -> _Node:
    """Child over parent: mappings merge, lists extend, anything else the child wins."""
    if isinstance(parent.value, dict) and isinstance(child.value, dict):
        merged = dict(parent.value)
        for key, value in child.value.items():
            merged[key] = _merge(merged[key], value) if key in merged else value
        return _Node(merged, child.origin)
    if isinstance(parent.value, list) and isinstance(child.value, list):
        return _Node(_extend(parent.value, child.value), child.origin)
    return child


def _extend(first: list[_Node], second: list[_Node]) -> list[_Node]:
    items = [*first, *second]
    if any(isinstance(item.value, dict | list) for item in items):
        return items
    # A package named by both parent and child is installed once; the type is part of
    # "exact" so that 1 and true stay two different values.
    seen: set[tuple[type, Any]] = set()
    unique = []
    for item in items:
        identity = (type(item.value), item.value)
        if identity not in seen:
            seen.add(identity)
            unique.append(item)
    return unique


# --- schema errors as messages -----------------------------------------------------


@dataclass(frozen=True)
class _Problem:
    origin: Origin
    message: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.message}"


def _raise_if_any(problems: Sequence[_Problem]) -> None:
    if not problems:
        return
    unique = dict.fromkeys(problems)  # one error can surface twice (two missing keys)
    ordered = sorted(unique, key=lambda p: (str(p.origin.file), p.origin.line, p.message))
    raise KeelError("\n".join(str(p) for p in ordered), hint=DOCS_HINT)


@dataclass(frozen=True)
class _SchemaError:
    """The parts of a jsonschema error the messages need, with plain types."""

    keyword: str  # the failing schema keyword: "type", "required", ...
    expected: Any  # that keyword's value in the schema
    value: Any  # the value that failed
    schema: dict[str, Any]  # the (sub)schema holding the keyword
    path: DocPath
    about_key: bool  # a mapping key (propertyNames) failed, not a value
    message: str  # jsonschema's own wording, for keywords without a better one

    @classmethod
    def from_jsonschema(cls, error: ValidationError) -> _SchemaError:
        schema = error.schema if isinstance(error.schema, dict) else {}
        return cls(
            keyword=str(error.validator),
            expected=error.validator_value,
            value=error.instance,
            message=error.message,
            schema=schema,
            path=tuple(error.absolute_path),
            about_key="propertyNames" in error.schema_path,
        )


def _schema_problems(document: _Document, validator: Draft202012Validator) -> list[_Problem]:
    problems: list[_Problem] = []
    for error in validator.iter_errors(document.data):
        problems.extend(_explain(_SchemaError.from_jsonschema(error), document))
    return problems


def _explain(error: _SchemaError, document: _Document) -> Iterator[_Problem]:
    if error.about_key:
        yield _bad_key(error, document)
        return
    explain = _EXPLAINERS.get(error.keyword, _explain_generic)
    yield from explain(error, document)


def _explain_unknown_fields(error: _SchemaError, document: _Document) -> Iterator[_Problem]:
    path = error.path
    allowed = list(error.schema.get("properties", {}))
    for key in error.value:
        if key in allowed:
            continue
        close = difflib.get_close_matches(key, allowed, n=1)
        advice = f"did you mean {close[0]!r}?" if close else "remove it or fix its name"
        yield _Problem(
            document.origin((*path, key)),
            f"unknown field {key!r} {_describe_where(path)}; {advice} "
            f"(allowed: {', '.join(allowed)})",
        )


def _explain_missing(error: _SchemaError, document: _Document) -> Iterator[_Problem]:
    path = error.path
    for name in error.expected:
        if name in error.value:
            continue
        inherited = (
            " (it may also come from the definition named in 'extends')"
            if not path or isinstance(path[-1], str)
            else f"; add it to {_describe_path(path)}"
        )
        yield _Problem(
            document.origin(path),
            f"required field {_dotted((*path, name))!r} is missing{inherited}",
        )


_TYPE_NAMES = {
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
}


def _explain_type(error: _SchemaError, document: _Document) -> Iterator[_Problem]:
    path = error.path
    expected = error.expected
    value = error.value
    text = document.texts.get(path)
    if expected == "string" and value is not None and not isinstance(value, dict | list):
        # YAML turns 1.0, 0644 and yes into a number or a boolean; the fix is quotes.
        written = text if text is not None else str(value)
        as_yaml = f"{path[-1]}: " if path and isinstance(path[-1], str) else ""
        yield _Problem(
            document.origin(path),
            f"field {_dotted(path)!r} is {_describe_value(value, text)}; write it as a "
            f'string: {as_yaml}"{written}"',
        )
        return
    if value is None:
        yield _Problem(
            document.origin(path),
            f"field {_dotted(path)!r} is empty; give it a value or remove the line",
        )
        return
    wanted = _TYPE_NAMES.get(str(expected), str(expected))
    yield _Problem(
        document.origin(path),
        f"field {_dotted(path)!r} must be {wanted}, not {document.shown(path, value)}",
    )


def _explain_with_title(error: _SchemaError, document: _Document) -> Iterator[_Problem]:
    path = error.path
    """pattern, anyOf, enum...: the schema's title says what the value should look like."""
    if error.keyword == "enum":
        wanted = "one of " + ", ".join(repr(v) for v in error.expected)
    else:
        wanted = error.schema.get("title") or f"matching {error.schema.get('pattern')}"
    yield _Problem(
        document.origin(path),
        f"field {_dotted(path)!r} must be {wanted}, not {document.shown(path, error.value)}",
    )


def _explain_too_long(error: _SchemaError, document: _Document) -> Iterator[_Problem]:
    path = error.path
    yield _Problem(
        document.origin(path),
        f"field {_dotted(path)!r} is {len(error.value)} characters long; "
        f"shorten it to at most {error.expected}",
    )


def _explain_generic(error: _SchemaError, document: _Document) -> Iterator[_Problem]:
    path = error.path
    yield _Problem(document.origin(path), f"field {_dotted(path)!r}: {error.message}")


def _bad_key(error: _SchemaError, document: _Document) -> _Problem:
    path, key = error.path, error.value
    title = error.schema.get("title", "a valid key")
    return _Problem(
        document.origin((*path, key)),
        f"key {key!r} in {_dotted(path)!r} must be {title}; rename it",
    )


_Explainer = Callable[[_SchemaError, _Document], Iterator[_Problem]]
_EXPLAINERS: dict[str, _Explainer] = {
    "additionalProperties": _explain_unknown_fields,
    "required": _explain_missing,
    "type": _explain_type,
    "pattern": _explain_with_title,
    "anyOf": _explain_with_title,
    "oneOf": _explain_with_title,
    "enum": _explain_with_title,
    "minLength": _explain_with_title,
    "maxLength": _explain_too_long,
}


# --- checks the schema cannot express ----------------------------------------------


def _normalise_sizes(resolved: dict[str, Any], document: _Document) -> list[_Problem]:
    """Turn partition sizes into bytes in place, reporting sizes a disk cannot use."""
    problems = []
    partitions = resolved["partitions"]
    for name, minimum in MINIMUM_PARTITION_SIZES.items():
        path = ("partitions", name)
        try:
            size = parse_size(partitions[name])
        except ValueError as error:
            problems.append(_Problem(document.origin(path), f"field {_dotted(path)!r}: {error}"))
            continue
        partitions[name] = size
        if size < minimum:
            problems.append(
                _Problem(
                    document.origin(path),
                    f"field {_dotted(path)!r} is {_format_size(size)}, below the minimum of "
                    f'{_format_size(minimum)}; make it at least "{minimum // MiB}MiB"',
                )
            )
        elif size % MiB:
            problems.append(
                _Problem(
                    document.origin(path),
                    f"field {_dotted(path)!r} is {size} bytes, not a multiple of 1 MiB; "
                    f'round it to "{size // MiB}MiB" or "{size // MiB + 1}MiB"',
                )
            )
    return problems


def _template_problems(
    resolved: dict[str, Any], document: _Document, templates_dir: Path
) -> list[_Problem]:
    problems = []
    for index, template in enumerate(resolved["templates"]):
        source_path = ("templates", index, "source")
        problem = _missing_inside(
            templates_dir, template["source"], "template", source_path, Path.is_file
        )
        if problem:
            problems.append(_Problem(document.origin(source_path), problem))
        problems.extend(_target_problems(document, ("templates", index, "target"), template))
    return problems


def _overlay_problems(
    resolved: dict[str, Any], document: _Document, overlays_dir: Path
) -> list[_Problem]:
    problems = []
    for index, overlay in enumerate(resolved["overlays"]):
        source_path = ("overlays", index, "source")
        problem = _missing_inside(
            overlays_dir, overlay["source"], "overlay", source_path, Path.is_dir
        )
        if problem:
            problems.append(_Problem(document.origin(source_path), problem))
        else:
            problems.extend(_overlay_file_problems(document, index, overlay, overlays_dir))
        problems.extend(_target_problems(document, ("overlays", index, "target"), overlay))
    return problems


def _overlay_file_problems(
    document: _Document, index: int, overlay: dict[str, Any], overlays_dir: Path
) -> list[_Problem]:
    folder = overlays_dir / overlay["source"]
    problems = []
    for name in overlay["files"]:
        path = ("overlays", index, "files", name)
        escape = _escape_problem(name, f"overlay {overlay['source']!r}", path)
        if escape:
            problems.append(_Problem(document.origin(path), escape))
        elif not (folder / name).exists() and not (folder / name).is_symlink():
            problems.append(
                _Problem(
                    document.origin(path),
                    f"file {name!r} listed in {_dotted(path[:-1])!r} does not exist in "
                    f"overlay {overlay['source']!r} (looked for {(folder / name).absolute()}); "
                    "add it to the overlay or remove the entry",
                )
            )
    return problems


def _missing_inside(
    base: Path, relative: str, kind: str, path: DocPath, exists: Callable[[Path], bool]
) -> str | None:
    """Why `relative` is not a usable template or overlay under base, or None."""
    folder = f"{base.name}/"
    escape = _escape_problem(relative, folder, path)
    if escape:
        return escape
    candidate = (base / relative).absolute()
    if not exists(candidate):
        what = "folder" if exists is Path.is_dir else "file"
        return (
            f"{kind} {relative!r} does not exist in {folder} (looked for {candidate}); "
            f"create the {what} or fix {_dotted(path)!r}"
        )
    if not candidate.resolve().is_relative_to(base.resolve()):
        return (
            f"{kind} {relative!r} is a link that leads out of {folder}; "
            f"put the real {kind} inside {folder}"
        )
    return None


def _escape_problem(relative: str, inside: str, path: DocPath) -> str | None:
    parts = PurePosixPath(relative).parts
    if PurePosixPath(relative).is_absolute() or ".." in parts:
        return (
            f"{_dotted(path)!r} is {relative!r}, which leads out of {inside}; "
            f"write a path inside {inside} without '..'"
        )
    return None


def _target_problems(document: _Document, path: DocPath, entry: dict[str, Any]) -> list[_Problem]:
    target = entry["target"]
    if ".." in PurePosixPath(target).parts:
        return [
            _Problem(
                document.origin(path),
                f"field {_dotted(path)!r} is {target!r}; write the absolute path it means "
                "without '..'",
            )
        ]
    return []


# --- building the dataclasses ------------------------------------------------------


def _build_definition(
    resolved: dict[str, Any], document: _Document, *, source: Path
) -> ImageDefinition:
    debian = resolved["debian"]
    kernel = resolved["kernel"]
    return ImageDefinition(
        name=resolved["name"],
        version=resolved["version"],
        description=resolved["description"],
        debian=Debian(
            suite=debian["suite"],
            architecture=debian["architecture"],
            mirror=debian["mirror"],
            components=tuple(debian["components"]),
        ),
        kernel=Kernel(
            package=kernel["package"],
            cmdline=tuple(kernel["cmdline"]),
            initrd_modules=tuple(kernel["initrd_modules"]),
            exclude_modules=tuple(kernel["exclude_modules"]),
        ),
        packages=tuple(resolved["packages"]),
        templates=tuple(_build_template(t) for t in resolved["templates"]),
        variables=tuple(sorted(copy.deepcopy(resolved["variables"]).items())),
        overlays=tuple(_build_overlay(o) for o in resolved["overlays"]),
        partitions=Partitions(**resolved["partitions"]),
        source=source,
        update=_build_update(resolved["update"], document),
        containers=_build_containers(resolved["containers"], document),
        docker=DockerEndpoints(**resolved["docker"]),
        provisioning_config=_file_next_to_definition(
            resolved["provisioning"]["config"], document, ("provisioning", "config")
        ),
        resolved=resolved,
        origins={_dotted(path): origin for path, origin in document.origins.items() if path},
    )


def _file_next_to_definition(value: str, document: _Document, path: DocPath) -> Path | None:
    """A path written relative to the definition file that says it, made absolute."""
    if not value:
        return None
    return (document.origin(path).file.parent / value).absolute()


def _build_update(update: dict[str, Any], document: _Document) -> UpdatePolicy:
    root = _file_next_to_definition(update["root"], document, ("update", "root"))
    if root is None and os.environ.get("KEEL_UPDATE_ROOT"):
        root = Path(os.environ["KEEL_UPDATE_ROOT"]).absolute()
    window = update["window"]
    return UpdatePolicy(
        repository=update["repository"],
        root=root,
        check_interval=update["check_interval"],
        reboot=update["reboot"],
        window=MaintenanceWindow(tuple(window["days"]), window["start"], window["duration"]),
    )


def _build_containers(containers: dict[str, Any], document: _Document) -> Containers:
    archives = tuple(
        _file_next_to_definition(archive, document, ("containers", "archives", index))
        for index, archive in enumerate(containers["archives"])
    )
    services = tuple(
        ContainerService(
            name=service["name"],
            image=service["image"],
            command=tuple(service["command"]),
            env=tuple(sorted(service["env"].items())),
            ports=tuple(service["ports"]),
            volumes=tuple(service["volumes"]),
            restart=service["restart"],
            healthcheck=HealthCheck(
                command=tuple(service["healthcheck"]["command"]),
                interval=service["healthcheck"]["interval"],
                retries=service["healthcheck"]["retries"],
            ),
        )
        for service in containers["services"]
    )
    return Containers(archives=tuple(a for a in archives if a is not None), services=services)


def _file_problems(resolved: dict[str, Any], document: _Document) -> list[_Problem]:
    """Files named relative to the definition (trust root, baked config, archives) exist."""
    named: list[tuple[DocPath, str]] = [
        (("update", "root"), resolved["update"]["root"]),
        (("provisioning", "config"), resolved["provisioning"]["config"]),
    ]
    named += [
        (("containers", "archives", index), archive)
        for index, archive in enumerate(resolved["containers"]["archives"])
    ]
    problems = []
    for path, value in named:
        found = _file_next_to_definition(value, document, path)
        if found is not None and not found.is_file():
            problems.append(
                _Problem(
                    document.origin(path),
                    f"field {_dotted(path)!r} names {value!r}, but {found} does not exist; "
                    "paths here are relative to the definition file that writes them",
                )
            )
    names = [service["name"] for service in resolved["containers"]["services"]]
    for index, name in enumerate(names):
        if name in names[:index]:
            path = ("containers", "services", index, "name")
            problems.append(
                _Problem(document.origin(path), f"container name {name!r} is used twice")
            )
    return problems


def _build_template(template: dict[str, Any]) -> Template:
    return Template(
        source=template["source"],
        target=template["target"],
        mode=int(template["mode"], 8),
        owner=template["owner"],
    )


def _build_overlay(overlay: dict[str, Any]) -> Overlay:
    files = tuple(
        (path, _build_file_attributes(attributes))
        for path, attributes in sorted(overlay["files"].items())
    )
    return Overlay(source=overlay["source"], target=overlay["target"], files=files)


def _build_file_attributes(attributes: dict[str, Any]) -> FileAttributes:
    mode = attributes.get("mode")
    return FileAttributes(
        mode=int(mode, 8) if mode is not None else None, owner=attributes.get("owner")
    )


# --- wording -----------------------------------------------------------------------


def _display(path: Path) -> Path:
    """A path as people like to read it: relative to the current directory if inside."""
    absolute = Path(os.path.normpath(path.absolute()))
    try:
        return absolute.relative_to(Path.cwd())
    except ValueError:
        return absolute


def _dotted(path: Sequence[str | int]) -> str:
    return ".".join(str(part) for part in path)


def _describe_path(path: DocPath) -> str:
    return f"field {_dotted(path)!r}" if path else "the top level"


def _describe_where(path: DocPath) -> str:
    return f"in {_dotted(path)!r}" if path else "at top level"


def _describe_value(value: Any, text: str | None) -> str:
    written = text if text is not None else str(value)
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()} (written {written})"
    if isinstance(value, int | float):
        return f"the number {written}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return repr(written)


def _format_size(size: int) -> str:
    if size % MiB == 0:
        return f"{size // MiB} MiB"
    return f"{size} bytes"
