"""The `ignition` section's fetch settings: the configs to merge or to replace this
one with, the extra CAs for https, and the timeouts. Parsing only checks their shapes
(and decodes data: URLs); resolve.py fetches and applies them at first boot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hostd.ignition.contents import resource
from hostd.ignition.remote import Remote
from hostd.ignition.tls import pem_problem

# Ignition's defaults: 10 s for the response headers, no limit on a whole fetch
# (Keel adds an overall deadline for all fetches of a config, see resolve.py).
DEFAULT_RESPONSE_HEADERS = 10
MAX_REFERENCES = 16  # configs merged at one level, and CAs: a config is not a crawler


@dataclass(frozen=True)
class References:
    replace: bytes | Remote | None = None
    merge: tuple[bytes | Remote, ...] = ()
    authorities: tuple[bytes | Remote, ...] = ()
    response_headers: float | None = DEFAULT_RESPONSE_HEADERS  # None: no limit
    total: float | None = None  # seconds per fetch; None: no limit but the deadline


def _listed(
    entries: list[Any], field: str, version: str, problems: list[str]
) -> tuple[bytes | Remote, ...]:
    if len(entries) > MAX_REFERENCES:
        problems.append(f"field '{field}' lists {len(entries)}; at most {MAX_REFERENCES}")
        return ()
    found: list[bytes | Remote] = []
    for index, entry in enumerate(entries):
        where = f"{field}[{index}]"
        if not entry or (entry.get("source") is None and entry.get("inline") is None):
            problems.append(f"field '{where}.source' is required")
            continue
        data = resource(entry, where, version, problems)
        if data is not None:
            found.append(data)
    return tuple(found)


def references(document: dict[str, Any], version: str, problems: list[str]) -> References:
    """The fetch settings of an already type-checked document, problems appended."""
    ignition = document.get("ignition") or {}
    config = ignition.get("config") or {}
    replace = resource(config.get("replace"), "ignition.config.replace", version, problems)
    merge = _listed(config.get("merge") or [], "ignition.config.merge", version, problems)
    if replace is not None and merge:
        # Ignition would silently skip the merge list; say so instead.
        problems.append("field 'ignition.config' has both replace and merge; give one")
    field = "ignition.security.tls.certificateAuthorities"
    tls = (ignition.get("security") or {}).get("tls") or {}
    authorities = _listed(tls.get("certificateAuthorities") or [], field, version, problems)
    for index, ca in enumerate(authorities):
        if isinstance(ca, bytes) and (problem := pem_problem(ca)):
            problems.append(f"field '{field}[{index}]': {problem}")
    timeouts = ignition.get("timeouts") or {}
    headers = timeouts.get("httpResponseHeaders")
    total = timeouts.get("httpTotal")
    return References(
        replace=replace,
        merge=merge,
        authorities=authorities,
        # 0 means no limit in Ignition (Go's zero timeout); the deadline still holds.
        response_headers=DEFAULT_RESPONSE_HEADERS if headers is None else headers or None,
        total=total or None,
    )
