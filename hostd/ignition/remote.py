"""An http(s) source as parsing leaves it: checked for shape (URL, headers) but not
fetched. Parsing never touches the network (`keel config check` runs it on a build
machine); resolve.py fetches every Remote at first boot, after the whole config
validated."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

REMOTE_SCHEMES = ("http", "https")
# RFC 9110 token characters: anything else in a header name is not a header.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", re.ASCII)
MAX_URL_CHARS = 8192


@dataclass(frozen=True)
class Remote:
    field: str  # e.g. "storage.files[0].contents", for messages
    url: str
    compression: str | None = None
    hash: str | None = None  # "sha512-<hex>", checked when fetched
    # A header whose value is None was removed by a merge (Ignition's rule) or never
    # given one: fetching refuses it, as Ignition does.
    headers: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True)
class Pending:
    """Where a Remote's bytes go: Config.files[file].contents, or its append[append]."""

    file: int
    append: int | None
    remote: Remote


def scheme_of(source: str) -> str:
    return source.partition(":")[0].lower() if ":" in source else ""


def url_problem(url: str) -> str | None:
    if len(url) > MAX_URL_CHARS:
        return f"the URL is longer than {MAX_URL_CHARS} characters"
    if any(char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F for char in url):
        return "the URL holds white space or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError as error:
        return f"not a valid URL: {error}"
    if not parts.hostname:
        return "the URL names no host"
    if parts.username is not None:
        return "credentials in a URL are not supported; send them with httpHeaders"
    return None


def headers(
    entry: dict[str, Any], field: str, problems: list[str]
) -> tuple[tuple[str, str | None], ...]:
    """entry's httpHeaders, each problem appended (names compare case-insensitively)."""
    found: list[tuple[str, str | None]] = []
    for index, header in enumerate(entry.get("httpHeaders") or []):
        where = f"{field}.httpHeaders[{index}]"
        name, value = header.get("name") or "", header.get("value")
        if not name:
            problems.append(f"field '{where}.name' is required")
            continue
        if not _TOKEN.fullmatch(name):
            problems.append(f"field '{where}.name' is not a valid HTTP header name")
        if value is not None and (not value or any(c in value for c in "\r\n\x00")):
            problems.append(f"field '{where}.value' must be non-empty, on one line")
        if any(name.lower() == seen.lower() for seen, _ in found):
            problems.append(f"field '{where}.name': header {name!r} is listed twice")
        found.append((name, value))
    return tuple(found)
