"""The download cache: every .deb mmdebstrap fetched, kept per suite, so a build whose
package set changed (a bootstrap cache miss) downloads only what is new.

This is mmdebstrap's own documented recipe: the cached files are synced into the
chroot's /var/cache/apt/archives before apt runs (apt takes a file there when its
hash matches the archive's, and fetches it otherwise), the essential packages are
kept after they are unpacked, and the folder is synced back out before mmdebstrap
empties it. So the root tarball is the same with or without the cache; only the
download is skipped. The files are only ever read by apt, which checks each against
the signed package lists, so a damaged or planted file is fetched again, not used."""

from __future__ import annotations

from pathlib import Path

from composer.core.paths import cache_root

ARCHIVES = "/var/cache/apt/archives"


def folder(suite: str) -> Path:
    """The suite's cached .deb files (made by the caller before mmdebstrap runs)."""
    return cache_root() / "debs" / suite


def mmdebstrap_options(suite: str) -> list[str]:
    """mmdebstrap options that read and refill the download cache of this suite."""
    cache = folder(suite)
    return [
        # Without this mmdebstrap deletes the essential packages' files once unpacked.
        "--skip=essential/unlink",
        # mmdebstrap refuses to start on a non-empty archives folder unless told.
        "--skip=download/empty",
        f'--setup-hook=mkdir -p "$1"{ARCHIVES}',
        f"--setup-hook=sync-in {cache} {ARCHIVES}",
        f"--customize-hook=sync-out {ARCHIVES} {cache}",
    ]
