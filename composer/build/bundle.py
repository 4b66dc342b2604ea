"""Build step: the update bundle, one file a host downloads to move to this version.

A bundle is an uncompressed POSIX tar (ustar) with exactly these members, in this order:

    bundle.json      what follows: name, version, architecture, kernel, sizes, sha256
    root.erofs.zst   the root filesystem image (and its dm-verity tree), zstd-compressed
    keel.efi         the unified kernel image (kernel and initrd already compressed),
                     signed for Secure Boot when the build was

bundle.json comes first so a host reading the tar as a stream knows what to expect
before any byte of the root image arrives; sizes and sha256 are those of the
uncompressed files, so the host checks what it wrote to the slot, not what it
downloaded (TUF has already vouched for the downloaded bytes).

The tar is written with fixed owners, modes and mtimes, and zstd's output depends only
on its input and options, so the same payload always gives the same bundle bytes.

Reading bundle.json back (for `keel publish`) goes through hostd's reader, the one the
host itself uses, so the build side cannot accept a bundle the host would refuse."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from composer.core import commands
from composer.core.errors import KeelError
from hostd.formats import bundle as bundle_format
from hostd.formats.bundle import BundleInfo as BundleInfo  # re-exported for callers
from hostd.formats.sizes import MIB

if TYPE_CHECKING:
    from composer.build.context import BuildContext

BUNDLE_SUFFIX = ".keelbundle"

# The root image is already lz4hc-compressed erofs, so zstd finds less to gain than on
# raw data. Measured on docker-host (289 MB erofs, 2 cores): -3 gives 219 MB in 0.6 s,
# -9 --long=27 207 MB in 3 s, -12 200 MB in 19 s, -15 198 MB in 34 s, -19 188 MB in
# 95 s. -9 is the knee: most of the gain for a few seconds of a warm build.
# --long=27: a 128 MiB window, the largest plain `zstd -dc` accepts (the host relies on
# that). -B64MiB: without it a 128 MiB window makes one job of the whole file, and
# -T0 would leave the second core idle. The output does not depend on the number of
# threads (checked: -T1 and -T0 give the same bytes), only on the zstd version.
ZSTD_OPTIONS = ("-9", "--long=27", "-B64MiB", "-T0")

# Fixed tar header fields: nothing about the build machine or the clock gets in.
_MTIME = 0
_MODE = 0o644


def bundle_file_name(name: str, version: str, architecture: str) -> str:
    return f"{name}-{version}-{architecture}{BUNDLE_SUFFIX}"


def bundle_metadata(payload: dict[str, Any]) -> dict[str, Any]:
    """bundle.json from payload.json: the same facts, plus where each file sits."""
    files = {}
    for role, (member, compression) in bundle_format.PAYLOAD_MEMBERS.items():
        record = payload["files"][role]
        files[role] = {
            "member": member,
            "compression": compression,
            "size": record["size"],
            "sha256": record["sha256"],
        }
    return {
        "format": bundle_format.FORMAT,
        "name": payload["name"],
        "version": payload["version"],
        "architecture": payload["architecture"],
        "kernel_version": payload["kernel_version"],
        "cmdline": list(payload["cmdline"]),
        "files": files,
    }


def _tar_entry(name: str, size: int) -> tarfile.TarInfo:
    entry = tarfile.TarInfo(name)
    entry.size = size
    entry.mtime = _MTIME
    entry.mode = _MODE
    entry.uid = entry.gid = 0
    entry.uname = entry.gname = ""
    return entry


def compress_zstd(source: Path, dest: Path) -> Path:
    commands.run(["zstd", "--quiet", "--force", *ZSTD_OPTIONS, source, "-o", dest])
    return dest


def write_bundle(payload_dir: Path, dest_dir: Path) -> Path:
    """Write the bundle of the slot payload in payload_dir (payload.json and the files it
    names) into dest_dir; return its path. The file appears whole or not at all.

    dest_dir holds one bundle: one left by an earlier build of another version into the
    same output folder is removed, so `keel publish DIR` never has to guess."""
    payload = json.loads((payload_dir / "payload.json").read_text())
    metadata = bundle_metadata(payload)
    encoded = (json.dumps(metadata, indent=2) + "\n").encode()
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / bundle_file_name(payload["name"], payload["version"], payload["architecture"])
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".bundle-") as scratch:
        sources: dict[str, Path] = {}
        for role, (member, compression) in bundle_format.PAYLOAD_MEMBERS.items():
            source = payload_dir / payload["files"][role]["file"]
            if compression == "zstd":
                source = compress_zstd(source, Path(scratch) / member)
            sources[member] = source
        partial = Path(scratch) / dest.name
        with tarfile.open(partial, "w", format=tarfile.USTAR_FORMAT) as tar:
            tar.addfile(
                _tar_entry(bundle_format.MANIFEST_MEMBER, len(encoded)), io.BytesIO(encoded)
            )
            for member, source in sources.items():
                with source.open("rb") as handle:
                    tar.addfile(_tar_entry(member, source.stat().st_size), handle)
        partial.chmod(_MODE)
        os.replace(partial, dest)
    for stale in dest_dir.glob(f"*{BUNDLE_SUFFIX}"):
        if stale != dest:
            stale.unlink()
    return dest


@contextmanager
def _open_bundle(path: Path) -> Iterator[bundle_format.Bundle]:
    """The bundle through hostd's own reader, with the members in the writer's order."""
    try:
        opened = bundle_format.Bundle(path)
    except bundle_format.BundleError as error:
        raise KeelError(
            f"{path}: not a Keel bundle: {error}",
            hint="publish bundles made by `keel build` of this Keel version",
        ) from None
    with opened:
        if opened.member_names != bundle_format.MEMBERS:
            raise KeelError(
                f"{path}: not a Keel bundle: members are {', '.join(opened.member_names)}, "
                f"expected {', '.join(bundle_format.MEMBERS)}"
            )
        yield opened


def _verify_part(opened: bundle_format.Bundle, part: bundle_format.Part, scratch: Path) -> None:
    """Check one member, decompressed, against bundle.json with the host's own check."""
    member = opened.open_member(part)
    if part.compression != "zstd":  # the reader admits only zstd or none
        bundle_format.verify_stream(member, part)
        return
    packed = scratch / part.member
    with packed.open("wb") as out:
        shutil.copyfileobj(member, out, 4 * MIB)
    with subprocess.Popen(["zstd", "-dcq", packed], stdout=subprocess.PIPE) as unzstd:
        assert unzstd.stdout is not None
        bundle_format.verify_stream(unzstd.stdout, part)
    packed.unlink()
    if unzstd.returncode != 0:
        raise bundle_format.BundleError(f"{part.member}: zstd could not decompress it")


def verify_bundle(path: Path) -> BundleInfo:
    """Read the bundle and check every member against bundle.json: after decompression,
    the size and sha256 it promises. Raises KeelError naming the first that differs."""
    with _open_bundle(path) as opened, tempfile.TemporaryDirectory(prefix="keel-verify-") as tmp:
        for role in bundle_format.PARTS:
            part: bundle_format.Part = getattr(opened.info, role)
            try:
                _verify_part(opened, part, Path(tmp))
            except (bundle_format.BundleError, tarfile.TarError, EOFError) as error:
                raise KeelError(
                    f"{path}: member {part.member} ({role}) does not match bundle.json: {error}",
                    hint="the bundle is damaged or was altered; build or download it again",
                ) from None
        return opened.info


def step(ctx: BuildContext) -> None:
    write_bundle(ctx.payload_dir, ctx.bundle_dir)
