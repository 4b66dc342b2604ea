"""File contents and append fragments (and the config references and CAs, which are
resources too): where the bytes come from (a data: URL, Keel's `inline`, or an
http(s) URL left as a Remote for resolve.py to fetch at first boot), gzip
decompression with a size cap (a small config must not expand into gigabytes), and
verification.hash, which the spec defines over the decompressed data."""

from __future__ import annotations

import hashlib
import hmac
import re
import zlib
from typing import Any

from hostd.ignition.dataurl import DataUrlError, decode_data_url
from hostd.ignition.remote import REMOTE_SCHEMES, Remote, headers, scheme_of, url_problem

MAX_FILE_BYTES = 64 * 1024 * 1024
_HASH = re.compile(r"(sha256|sha512)-([0-9a-f]+)", re.ASCII)
_HEX_LENGTH = {"sha256": 64, "sha512": 128}
# Keel accepts contents.inline (Butane's name for literal contents) in 3.4.0+ configs
# only; upstream Ignition carries literal contents as a data: URL in `source`.
INLINE_SINCE = "3.4.0"

_NO_FETCH = (
    "only data:, http: and https: sources are supported: {what} (put the contents in "
    "the config, as butane's `inline` or `local` do, or serve them over https)"
)
_SCHEMES = {
    "tftp": "tftp sources need the network at first boot, which Keel does not use",
    "s3": "cloud storage sources need the cloud's credentials at first boot",
    "gs": "cloud storage sources need the cloud's credentials at first boot",
    "arn": "cloud storage sources need the cloud's credentials at first boot",
}


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _fetch(source: str) -> bytes:
    scheme = scheme_of(source)
    if scheme in _SCHEMES:
        raise DataUrlError(_NO_FETCH.format(what=_SCHEMES[scheme]))
    return decode_data_url(source)


def _gunzip(data: bytes) -> bytes:
    # wbits 16+MAX_WBITS: gzip framing; max_length caps what a bomb can expand to.
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, MAX_FILE_BYTES + 1)
    except zlib.error as error:
        raise DataUrlError(f"not valid gzip data: {error}") from None
    if len(out) > MAX_FILE_BYTES:
        raise DataUrlError(f"decompresses to more than {MAX_FILE_BYTES} bytes")
    if not inflater.eof:
        raise DataUrlError("the gzip data is truncated")
    return out


def _hash_problem(value: str, field: str, version: str) -> str | None:
    """What is wrong with a verification.hash value, without the data."""
    match = _HASH.fullmatch(value)
    if not match or len(match.group(2)) != _HEX_LENGTH[match.group(1)]:
        return (
            f"field '{field}' is {value!r}; expected sha512-<128 hex digits> or "
            "sha256-<64 hex digits>"
        )
    if match.group(1) == "sha256" and _version_tuple(version) < (3, 1, 0):
        return f"field '{field}': sha256 needs ignition.version 3.1.0 or later"
    return None


def _verify(data: bytes, value: str, field: str, version: str) -> str | None:
    problem = _hash_problem(value, field, version)
    if problem:
        return problem
    kind, _, expected = value.partition("-")
    actual = hashlib.new(kind, data).hexdigest()
    if not hmac.compare_digest(actual, expected):
        return f"field '{field}': the contents hash to {kind}-{actual}, not {value}"
    return None


def resource(
    entry: dict[str, Any] | None, field: str, version: str, problems: list[str]
) -> bytes | Remote | None:
    """The bytes entry stands for (None when it gives none), or for an http(s) source
    the Remote to fetch at first boot; problems appended."""
    if not entry:
        return None
    source, inline = entry.get("source"), entry.get("inline")
    compression = entry.get("compression") or None  # butane writes "" for none
    wanted = (entry.get("verification") or {}).get("hash")
    remote = source is not None and scheme_of(source) in REMOTE_SCHEMES
    if entry.get("httpHeaders") and not remote:
        problems.append(f"field '{field}.httpHeaders' is only for http(s) sources")
    if inline is not None:
        if _version_tuple(version) < _version_tuple(INLINE_SINCE):
            problems.append(
                f"field '{field}.inline' needs ignition.version {INLINE_SINCE} "
                f"(this config says {version}); use '{field}.source' with a data: URL"
            )
            return None
        if source is not None:
            problems.append(f"field '{field}' has both 'source' and 'inline'; give one")
            return None
        data = str(inline).encode()
    elif source is None:
        if compression is not None or wanted:
            problems.append(f"field '{field}' has compression or verification but no source")
        return None
    elif remote:
        return _remote(entry, source, field, version, problems)
    else:
        try:
            data = _fetch(source)
        except DataUrlError as error:
            problems.append(f"field '{field}.source': {error}")
            return None
    return decoded(data, compression, wanted, field, version, problems)


def _remote(
    entry: dict[str, Any], source: str, field: str, version: str, problems: list[str]
) -> Remote | None:
    """Check everything about an http(s) source that needs no network."""
    count = len(problems)
    compression = entry.get("compression") or None
    wanted = (entry.get("verification") or {}).get("hash")
    problem = url_problem(source)
    if problem:
        problems.append(f"field '{field}.source': {problem}")
    if compression not in (None, "gzip"):
        problems.append(f"field '{field}.compression' is {compression!r}; supported: gzip, or none")
    if wanted is not None:
        problem = _hash_problem(wanted, f"{field}.verification.hash", version)
        if problem:
            problems.append(problem)
    found = headers(entry, field, problems)
    if len(problems) > count:
        return None
    return Remote(field, source, compression, wanted, found)


def decoded(
    data: bytes,
    compression: str | None,
    wanted: str | None,
    field: str,
    version: str,
    problems: list[str],
) -> bytes | None:
    """data decompressed and verified (None, with the problem appended, if it fails).
    Also used by resolve.py on what it fetched."""
    if compression not in (None, "gzip"):
        problems.append(f"field '{field}.compression' is {compression!r}; supported: gzip, or none")
        return None
    if compression == "gzip":
        try:
            data = _gunzip(data)
        except DataUrlError as error:
            problems.append(f"field '{field}.source': {error}")
            return None
    if len(data) > MAX_FILE_BYTES:
        problems.append(f"field '{field}' holds more than {MAX_FILE_BYTES} bytes")
        return None
    if wanted is not None:
        problem = _verify(data, wanted, f"{field}.verification.hash", version)
        if problem:
            problems.append(problem)
            return None
    return data
