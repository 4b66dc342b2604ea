"""The download cache: every .deb mmdebstrap fetched, kept per suite, so a build whose
package set changed (a bootstrap cache miss) downloads only what is new.

This is mmdebstrap's documented recipe, with hard links instead of its sync-in and
sync-out copies (which took about 4 s of 209 MB each way, more than the download on
a fast link): the cached files are linked into the chroot's /var/cache/apt/archives
before apt runs (apt takes a file there when its hash matches the archive's, and
fetches it otherwise), the essential packages are kept after they are unpacked, and
new files are linked back out before mmdebstrap empties the folder. Where the cache
and mmdebstrap's temporary folder are on different filesystems, the files are
copied. The root tarball is the same with or without the cache; only the download is
skipped. apt checks every file against the signed package lists before using it, so
a damaged or planted file is fetched again, never installed."""

from __future__ import annotations

import shlex
from pathlib import Path

from composer.core.paths import cache_root

ARCHIVES = "/var/cache/apt/archives"


def folder(suite: str) -> Path:
    """The suite's cached .deb files (made by the caller before mmdebstrap runs)."""
    return cache_root() / "debs" / suite


def _link_in(cache: str) -> str:
    return (
        f'mkdir -p "$1"{ARCHIVES} && '
        f'if [ "$(stat -c %d {cache})" = "$(stat -c %d "$1")" ]; '
        f'then cp -al -- {cache}/. "$1"{ARCHIVES}/; '
        f'else cp -a -- {cache}/. "$1"{ARCHIVES}/; fi'
    )


def _link_out(cache: str) -> str:
    # A copy goes under a temporary name first: a cut-short copy under the real name
    # would be kept, found wrong by apt and fetched again on every build.
    return (
        f'for deb in "$1"{ARCHIVES}/*.deb; do '
        '[ -f "$deb" ] || continue; '
        "name=${deb##*/}; "
        f'[ -e {cache}/"$name" ] && continue; '
        f'ln -- "$deb" {cache}/"$name" 2>/dev/null || '
        f'{{ cp -- "$deb" {cache}/.partial && mv -- {cache}/.partial {cache}/"$name"; }} '
        "|| exit 1; "
        "done"
    )


def mmdebstrap_options(suite: str) -> list[str]:
    """mmdebstrap options that read and refill the download cache of this suite."""
    cache = shlex.quote(str(folder(suite)))
    return [
        # Without this mmdebstrap deletes the essential packages' files once unpacked.
        "--skip=essential/unlink",
        # mmdebstrap refuses to start on a non-empty archives folder unless told.
        "--skip=download/empty",
        f"--setup-hook={_link_in(cache)}",
        f"--customize-hook={_link_out(cache)}",
    ]
