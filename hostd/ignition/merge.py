"""Ignition's config merge (ignition.config.merge), on JSON documents that each
already validated. The rules, as Ignition's config/merge states them:
- objects merge field by field; a value the child gives (not null) replaces the
  parent's;
- lists of keyed objects (users and groups by name, units and drop-ins by name,
  headers by name, resources by source) merge entries with the same key and append
  the child's others; lists of strings are sets (a child's duplicate is dropped);
- storage.files, .directories and .links share one key space (the path): a child's
  entry in one of them removes the parent's entry for that path from the others;
- storage.disks and .filesystems are keyed by device, a disk's partitions by number
  (by label when the number is 0);
- storage.files[].append and a filesystem's options and mountOptions are appended,
  duplicates and all;
- an http header the child gives without a value removes the parent's header."""

from __future__ import annotations

from typing import Any

_KEYS = {
    "files": "path",
    "directories": "path",
    "links": "path",
    "users": "name",
    "groups": "name",
    "units": "name",
    "dropins": "name",
    "httpHeaders": "name",
    "merge": "source",
    "certificateAuthorities": "source",
    "disks": "device",
    "filesystems": "device",
}
# Lists under one object that share a key space (Ignition's MergedKeys).
_SHARED = (
    frozenset({"files", "directories", "links"}),
    frozenset({"shouldExist", "shouldNotExist"}),  # kernelArguments
)
_APPENDED = frozenset({"append", "options", "mountOptions"})


def _version(version: Any) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in str(version).split("."))
    except ValueError:
        return ()


def _key(name: str, item: Any) -> Any:
    if name == "partitions" and isinstance(item, dict):
        number = item.get("number") or 0
        return ("number", number) if number else ("label", item.get("label"))
    if isinstance(item, dict):
        return item.get(_KEYS.get(name, ""))
    return item  # a string list is keyed by its values


def _merge_list(name: str, parent: list[Any], child: list[Any], elsewhere: set[Any]) -> list[Any]:
    """elsewhere: keys the child gives in another list sharing this one's key space."""
    if name in _APPENDED:
        return [*parent, *child]
    by_key = {_key(name, item): item for item in child}
    result: list[Any] = []
    for item in parent:
        key = _key(name, item)
        if key in elsewhere:
            continue  # the child made this path another kind of node
        if key not in by_key:
            result.append(item)
            continue
        mine = by_key[key]
        if name == "httpHeaders" and isinstance(mine, dict) and mine.get("value") is None:
            continue  # a header without a value removes the parent's
        both = isinstance(item, dict) and isinstance(mine, dict)
        result.append(merge_documents(item, mine) if both else mine)
    parent_keys = {_key(name, item) for item in parent}
    result += [item for item in child if _key(name, item) not in parent_keys]
    return result


def merge_documents(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """parent with child merged in (neither is changed). Depth is bounded: both came
    through document.load()."""
    result = dict(parent)
    for name, value in child.items():
        if value is None:
            continue  # null: the child does not give this field
        old = parent.get(name)
        if isinstance(old, dict) and isinstance(value, dict):
            result[name] = merge_documents(old, value)
        elif isinstance(old, list) and isinstance(value, list):
            elsewhere: set[Any] = set()
            for group in _SHARED:
                if name in group:
                    for other in group - {name}:
                        elsewhere |= {_key(other, item) for item in child.get(other) or []}
            result[name] = _merge_list(name, old, value, elsewhere)
        else:
            result[name] = value
    # Both validated against their own version and spec 3.x only adds fields: the
    # result is read as the later version (Ignition translates both to its latest).
    versions = [d.get("version") for d in (parent, child) if isinstance(d.get("version"), str)]
    if len(versions) == 2:
        result["version"] = max(versions, key=_version)
    return result
