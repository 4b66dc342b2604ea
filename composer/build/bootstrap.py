"""Build step 1: the root tree from Debian packages, with mmdebstrap.

The result is a tarball in the package cache, keyed by a hash of everything that
decides its content (package set, suite, mirror, initrd inputs, trimming), so a second
build with the same packages skips download and install entirely (like osbuild's
object store). The initrd is made here too, inside mmdebstrap's chroot, because it
depends only on the kernel and the initramfs inputs, and making it needs a chroot with
/proc and /dev that mmdebstrap already provides."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from composer.build import debcache
from composer.core import commands
from composer.core.errors import KeelError
from composer.core.paths import OVERLAYS_DIR, cache_root
from composer.core.progress import Progress
from composer.definition.model import ImageDefinition
from composer.definition.suites import package_source, packages_to_install

if TYPE_CHECKING:
    from composer.build.context import BuildContext

# Bump when the recipe below changes in a way the key would not otherwise see.
RECIPE_VERSION = 5

# Files the image never needs: documentation, manuals, translations.
DPKG_PATH_EXCLUDES = (
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/info/*",
    "/usr/share/locale/*",
    "/usr/share/lintian/*",
    # AppArmor profiles of desktop and developer applications: trixie's apparmor ships
    # about a hundred, and compiling them took apparmor.service 10 s of every boot
    # under emulation. Containers get the profile dockerd loads itself.
    "/etc/apparmor.d/*",
    # python3's registration of .pyc files as programs of their own with binfmt_misc:
    # nothing on a Keel host runs a .pyc directly, and with the folder empty
    # systemd-binfmt.service has nothing to do at boot.
    "/usr/lib/binfmt.d/python3*.conf",
)
DPKG_PATH_INCLUDES = (
    # Licences stay, as Debian asks.
    "/usr/share/doc/*/copyright",
    # What dockerd's own profile includes.
    "/etc/apparmor.d/abi/*",
    "/etc/apparmor.d/abstractions/*",
    "/etc/apparmor.d/tunables/*",
)

# The initramfs-tools configuration, hooks and boot scripts: copied in before the
# kernel is installed so the only initrd ever generated is the small one.
INITRAMFS_OVERLAY = OVERLAYS_DIR / "initramfs"

DEBIAN_ARCH = {"x86-64": "amd64"}


@dataclass(frozen=True)
class BootstrapResult:
    tarball: Path
    key: str
    cached: bool


def _initramfs_inputs(defn: ImageDefinition) -> dict[str, str]:
    """Every file that shapes the initrd, by relative path, with its content."""
    files: dict[str, str] = {}
    for path in sorted(INITRAMFS_OVERLAY.rglob("*")):
        if path.is_file():
            files[str(path.relative_to(INITRAMFS_OVERLAY))] = path.read_text()
    # Not /etc/initramfs-tools/modules: initramfs-tools loads every module listed there
    # on each boot, one after another, whether or not the machine has the hardware.
    # The keel-modules hook only copies them in; udev loads each when a device asks.
    files["etc/initramfs-tools/keel-modules"] = "".join(
        f"{m}\n" for m in defn.kernel.initrd_modules
    )
    return files


def cache_key(defn: ImageDefinition) -> str:
    recipe = {
        "recipe": RECIPE_VERSION,
        "suite": defn.debian.suite,
        "architecture": defn.debian.architecture,
        "mirror": defn.debian.mirror,
        "components": list(defn.debian.components),
        "kernel": defn.kernel.package,
        "packages": sorted(_packages(defn)),
        "exclude_modules": sorted(defn.kernel.exclude_modules),
        "dpkg_excludes": DPKG_PATH_EXCLUDES,
        "dpkg_includes": DPKG_PATH_INCLUDES,
        "initramfs": _initramfs_inputs(defn),
        # The shell run after install (module trimming and recompression, the
        # reproducible initrd): editing it changes the key without a RECIPE_VERSION bump.
        "customize": _prune_modules_hook(defn),
    }
    blob = json.dumps(recipe, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def _write_initramfs_tree(defn: ImageDefinition, dest: Path) -> None:
    for rel, content in _initramfs_inputs(defn).items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        source = INITRAMFS_OVERLAY / rel
        # Hooks and boot scripts must stay executable or initramfs-tools skips them.
        target.chmod(0o755 if source.exists() and os.access(source, os.X_OK) else 0o644)


# Removes "$kdir$p" only if it lies inside the kernel's module folder "$base". The
# folder holding it is resolved with every symlink, as rm would follow them; the last
# name is not, so a symlink there is removed itself and never what it points to. The
# definition check already refuses such paths; this holds even if one got past it,
# since the hook runs as root on the build machine.
_REMOVE_INSIDE_MODULE_TREE = """\
    name=$(basename -- "$p")
    parent=$(realpath -m -- "$kdir$(dirname -- "$p")")
    case "$name" in
      ''|.|..|*/*) inside=no ;;
      *) case "$parent/" in "$base"/*) inside=yes ;; *) inside=no ;; esac ;;
    esac
    if [ "$inside" = yes ]; then
      rm -rf -- "$parent/$name"
    else
      echo "keel: not removing kernel module path '$p': it leads out of $base" >&2
      status=1
    fi
"""


# Kernel modules stored xz-compressed (trixie's) are compressed again with zstd. The
# kernel unpacks an xz module itself each time it loads one, and under emulation that
# is most of the cost: 0.8 s of CPU for kvm alone, while a boot loads a few dozen
# modules with everything else starting too. kmod unpacks zstd about ten times
# faster. Plain .ko files would be faster still but make the root image 43 MiB
# bigger. The level is a build-time trade (issue 18), measured on trixie's 2,592
# modules on 2 cores: -19 took 27.6 s of every cold build for 64.7 MB, -17 19.2 s
# for 65.6 MB, -15 10.7 s for 68.0 MB, -12 5.0 s for 69.6 MB. kmod unpacks each
# level as fast. The initrd, made while the kernel package was installed, is made
# again from the recompressed modules.
MODULE_ZSTD_LEVEL = 12
_RECOMPRESS_MODULES = f"""\
  packed=$(find "$kdir" -type f -name '*.ko.xz' | wc -l)
  if [ "$packed" -gt 0 ]; then
    find "$kdir" -type f -name '*.ko.xz' -print0 |
      xargs -0 -r -n 64 -P "$(nproc)" xz -d -- || exit 1
    find "$kdir" -type f -name '*.ko' -print0 |
      xargs -0 -r -n 64 -P "$(nproc)" zstd -q -{MODULE_ZSTD_LEVEL} --rm -- || exit 1
  fi
"""
# CPU microcode (amd64-microcode, intel-microcode from non-free-firmware) goes into the
# initrd's early archive in their "auto" mode only when the machine making the initrd
# has that vendor's CPU, and Intel's only for that CPU model: the build machine's, not
# the machines the image is for. Keel sets their "early" mode (all of it, always).
_EARLY_MICROCODE = """\
if [ -f "$1/etc/default/amd64-microcode" ]; then
  printf '\\n# Keel: for every AMD CPU, whatever the build machine has\\n%s\\n' \\
    AMD64UCODE_INITRAMFS=early >> "$1/etc/default/amd64-microcode"
fi
if [ -f "$1/etc/default/intel-microcode" ]; then
  printf '\\n# Keel: for every Intel CPU, whatever the build machine has\\n%s\\n%s\\n' \\
    IUCODE_TOOL_INITRAMFS=early IUCODE_TOOL_SCANCPUS=no >> "$1/etc/default/intel-microcode"
fi
"""
# The initrd is made again, always (after the settings and modules above), with a fixed
# SOURCE_DATE_EPOCH: mkinitramfs then clamps every file's mtime to it and writes its
# cpio archives with --reproducible (inode numbers counted from 0), so the initrd's
# bytes follow only from its files, not from when, or whether, this package set was
# last cached. Delta updates need that (issue 16): on docker-host, adding jq (a new
# cache entry) changed 1,909 of the UKI's 5,388 blocks (7.8 MB to download) although
# the initrd's files were the same; with a fixed time the initrd stays identical. The
# time is a constant, not the build's: that follows the last commit and would change
# every cpio header, so every block of the compressed archive, with each release.
INITRD_EPOCH = 0
_REMAKE_INITRD = f"""\
  SOURCE_DATE_EPOCH={INITRD_EPOCH} chroot "$1" update-initramfs -u -k "$(basename "$kdir")" \\
    || exit 1
"""


def _prune_modules_hook(defn: ImageDefinition) -> str:
    """Shell run by mmdebstrap after install ("$1" is the new root): put CPU microcode
    in early mode, drop unneeded kernel modules, recompress xz ones with zstd,
    re-index, and make the initrd again, reproducibly; fails if an entry would remove
    anything else."""
    removals = " ".join(shlex.quote(p.strip("/")) for p in defn.kernel.exclude_modules)
    return (
        "status=0\n"
        f"{_EARLY_MICROCODE}"
        'for kdir in "$1"/usr/lib/modules/*/; do\n'
        '  [ -d "$kdir" ] || continue\n'
        '  base=$(realpath -e -- "$kdir") || exit 1\n'
        f"  for p in {removals}; do\n"
        f"{_REMOVE_INSIDE_MODULE_TREE}"
        "  done\n"
        f"{_RECOMPRESS_MODULES}"
        '  chroot "$1" depmod -a "$(basename "$kdir")"\n'
        f"{_REMAKE_INITRD}"
        "done\n"
        'exit "$status"\n'
    )


def _packages(defn: ImageDefinition) -> tuple[str, ...]:
    return packages_to_install(defn.debian.suite, defn.packages)


def mmdebstrap_command(defn: ImageDefinition, initramfs_dir: Path, output: Path) -> list[str]:
    packages = [defn.kernel.package, *_packages(defn)]
    cmd = [
        "mmdebstrap",
        "--mode=root",
        "--variant=minbase",
        "--format=tar",
        "--verbose",
        f"--architectures={DEBIAN_ARCH[defn.debian.architecture]}",
        f"--components={','.join(defn.debian.components)}",
        f"--include={','.join(dict.fromkeys(packages))}",
        '--aptopt=APT::Install-Recommends "false"',
        *(f"--dpkgopt=path-exclude={p}" for p in DPKG_PATH_EXCLUDES),
        *(f"--dpkgopt=path-include={p}" for p in DPKG_PATH_INCLUDES),
        f"--essential-hook=sync-in {initramfs_dir} /",
        f"--customize-hook={_prune_modules_hook(defn)}",
        *debcache.mmdebstrap_options(defn.debian.suite),
        defn.debian.suite,
        str(output),
    ]
    if defn.debian.mirror:
        cmd.append(defn.debian.mirror)
    return cmd


_MISSING_PACKAGE = re.compile(
    r"Unable to locate package (\S+)|Package '?([^' ]+)'? has no installation candidate"
)


def _explain_missing_packages(defn: ImageDefinition, error: KeelError) -> KeelError:
    missing = [a or b for a, b in _MISSING_PACKAGE.findall(error.message)]
    if not missing:
        return error
    lines = []
    suite = defn.debian.suite
    for name in dict.fromkeys(missing):
        named = package_source(suite, name)
        if named in defn.packages:
            where = defn.origin(f"packages.{defn.packages.index(named)}")
            part = f" (part of '{named}' in {suite})" if named != name else ""
            lines.append(f"{where}: package '{name}'{part} is not in Debian {suite}")
        elif name == defn.kernel.package:
            lines.append(f"{defn.origin('kernel.package')}: kernel package '{name}' not found")
        else:
            lines.append(f"package '{name}' not found in Debian {defn.debian.suite}")
    return KeelError(
        "\n".join(lines),
        hint="check the spelling with `apt-cache search NAME`, or remove the package",
    )


class _DownloadCounter:
    """Turns mmdebstrap's verbose apt output into a few progress lines."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.fetched = 0

    def __call__(self, line: str) -> None:
        if line.startswith("I: "):
            self.progress.say(f"    {line[3:]}")
        elif line.startswith("Get:"):
            self.fetched += 1
            if self.fetched % 25 == 0:
                self.progress.say(f"    downloaded {self.fetched} packages")
        elif line.startswith(("Need to get", "Fetched ")):
            self.progress.say(f"    {line.strip()}")


def root_tarball(defn: ImageDefinition) -> Path:
    """Where the root tarball of this package set is cached."""
    return cache_root() / "bootstrap" / f"{cache_key(defn)}.tar"


def bootstrap(defn: ImageDefinition, work_dir: Path, progress: Progress) -> BootstrapResult:
    """Return the cached root tarball for this package set, building it if needed."""
    key = cache_key(defn)
    tarball = root_tarball(defn)
    store = tarball.parent
    if tarball.exists():
        progress.say(f"    package cache hit: {tarball}")
        return BootstrapResult(tarball, key, cached=True)

    store.mkdir(parents=True, exist_ok=True)
    debcache.folder(defn.debian.suite).mkdir(parents=True, exist_ok=True)
    initramfs_dir = work_dir / "initramfs-inputs"
    _write_initramfs_tree(defn, initramfs_dir)
    # A name of this process's own, so two builds at once never write one file.
    partial = tarball.with_suffix(f".tar.partial-{os.getpid()}")
    progress.say(f"    package cache miss ({key}); downloading and installing packages")
    try:
        commands.run(
            mmdebstrap_command(defn, initramfs_dir, partial),
            # mmdebstrap's chroot goes in the build's scratch folder, in memory when
            # there is room (composer/build/scratch.py): dpkg syncs every file it
            # writes, and on disk this step took 44-53 s, in memory 36 s.
            env={"TMPDIR": str(work_dir)},
            on_stderr_line=_DownloadCounter(progress),
            hint="mmdebstrap needs root and network access to the Debian archive",
        )
    except KeelError as error:
        partial.unlink(missing_ok=True)
        raise _explain_missing_packages(defn, error) from None
    partial.rename(tarball)
    return BootstrapResult(tarball, key, cached=False)


def step(ctx: BuildContext) -> None:
    ctx.packages_from_cache = bootstrap(ctx.definition, ctx.work, ctx.progress).cached
