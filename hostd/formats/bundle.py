"""Read an update bundle: a POSIX tar of bundle.json, root.erofs.zst and keel.efi (the
unified kernel image), in that order (composer/build/bundle.py writes it).

The whole file is verified against the signed TUF targets metadata before this module
sees it; what this module checks is that the content agrees with its own manifest
(every member present, sizes and sha256 of what is written), so a bundle built wrong
is refused as clearly as one tampered with."""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hostd.formats.sizes import MIB

# 2: the slot boots a unified kernel image (format 1 carried vmlinuz and initrd.img).
FORMAT = 2
MANIFEST_MEMBER = "bundle.json"
# The payload's parts in the order they follow bundle.json: role -> (member, compression).
# The writer (composer/build/bundle.py) lays a bundle out from this table.
PAYLOAD_MEMBERS: dict[str, tuple[str, str | None]] = {
    "root": ("root.erofs.zst", "zstd"),
    "uki": ("keel.efi", None),
}
MEMBERS = (MANIFEST_MEMBER, *(member for member, _ in PAYLOAD_MEMBERS.values()))
PARTS = tuple(PAYLOAD_MEMBERS)
CHUNK = MIB
# bundle.json is a few hundred bytes; refuse to parse something absurd.
MAX_MANIFEST = MIB


class BundleError(Exception):
    """The bundle is malformed or its content does not match its manifest."""


@dataclass(frozen=True)
class Part:
    member: str
    compression: str | None
    size: int  # uncompressed
    sha256: str


@dataclass(frozen=True)
class BundleInfo:
    name: str
    version: str
    architecture: str
    kernel_version: str
    cmdline: tuple[str, ...]
    root: Part
    uki: Part


def _part(files: dict[str, Any], key: str) -> Part:
    entry = files.get(key)
    if not isinstance(entry, dict):
        raise BundleError(f"bundle.json has no files.{key}")
    try:
        part = Part(
            member=str(entry["member"]),
            compression=entry.get("compression"),
            size=int(entry["size"]),
            sha256=str(entry["sha256"]).lower(),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise BundleError(f"bundle.json files.{key} is incomplete: {error}") from None
    if part.member not in MEMBERS[1:]:
        raise BundleError(f"bundle.json files.{key} names an unknown member {part.member!r}")
    if part.compression not in (None, "zstd"):
        raise BundleError(f"bundle.json files.{key} has unknown compression {part.compression!r}")
    if len(part.sha256) != 64 or part.size < 0:
        raise BundleError(f"bundle.json files.{key} has an invalid size or sha256")
    return part


def parse_manifest(raw: bytes) -> BundleInfo:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as error:
        raise BundleError(f"bundle.json is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise BundleError("bundle.json must hold a JSON object")
    if data.get("format") != FORMAT:
        raise BundleError(
            f"bundle format {data.get('format')!r} is not supported (want {FORMAT}); "
            "format 1 came from a Keel before unified kernel images: rebuild the version"
        )
    files = data.get("files")
    if not isinstance(files, dict):
        raise BundleError("bundle.json has no files")
    try:
        return BundleInfo(
            name=str(data["name"]),
            version=str(data["version"]),
            architecture=str(data["architecture"]),
            kernel_version=str(data.get("kernel_version", "")),
            cmdline=tuple(str(arg) for arg in data.get("cmdline", [])),
            root=_part(files, "root"),
            uki=_part(files, "uki"),
        )
    except KeyError as error:
        raise BundleError(f"bundle.json lacks {error}") from None


class Bundle:
    """An open bundle file; members are read as streams, never unpacked to disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._tar = tarfile.open(path, mode="r:")  # noqa: SIM115 (closed by close())
            self._members = {m.name: m for m in self._tar.getmembers()}
        except (tarfile.TarError, EOFError, OSError) as error:
            raise BundleError(f"{path.name} is not a readable bundle (tar): {error}") from None
        missing = [name for name in MEMBERS if name not in self._members]
        if missing:
            raise BundleError(f"{path.name} lacks {', '.join(missing)} (truncated?)")
        manifest = self._members["bundle.json"]
        if manifest.size > MAX_MANIFEST:
            raise BundleError("bundle.json is implausibly large")
        self.info = parse_manifest(self._read_all("bundle.json"))

    def _read_all(self, name: str) -> bytes:
        stream = self._tar.extractfile(self._members[name])
        if stream is None:
            raise BundleError(f"{name} in the bundle is not a regular file")
        return stream.read()

    def open_member(self, part: Part) -> IO[bytes]:
        stream = self._tar.extractfile(self._members[part.member])
        if stream is None:
            raise BundleError(f"{part.member} in the bundle is not a regular file")
        return stream

    @property
    def member_names(self) -> tuple[str, ...]:
        """The tar's members in the order they are stored."""
        return tuple(self._members)

    def member_size(self, part: Part) -> int:
        """Bytes the member takes in the tar (compressed size for the root)."""
        return self._members[part.member].size

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def chunks(stream: IO[bytes], size: int = CHUNK) -> Iterator[bytes]:
    while block := stream.read(size):
        yield block


def verify_stream(stream: IO[bytes], part: Part) -> None:
    """Read a whole uncompressed member and check its size and sha256."""
    digest = hashlib.sha256()
    length = 0
    for block in chunks(stream):
        digest.update(block)
        length += len(block)
    check_digest(part, length, digest.hexdigest())


def check_digest(part: Part, length: int, sha256: str) -> None:
    if length != part.size:
        raise BundleError(f"{part.member}: {length} bytes, but bundle.json says {part.size}")
    if sha256 != part.sha256:
        raise BundleError(f"{part.member}: sha256 {sha256} does not match bundle.json")
