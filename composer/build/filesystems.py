"""Build step: filesystem images, each made from a directory with no loop device and
no mount: mkfs.erofs for the root, mkfs.vfat + mtools for the ESP, mkfs.ext4 -d for var.

Every image is reproducible from the same input tree and SOURCE_DATE_EPOCH: fixed
UUIDs, fixed timestamps, fixed hash seeds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from composer.build import capacity, verity
from composer.build.partitions import stable_uuid
from composer.core import commands

if TYPE_CHECKING:
    from composer.build.context import BuildContext


def make_erofs(tree: Path, output: Path, *, mkfs: list[str], epoch: int, fs_uuid: str) -> Path:
    """mkfs is the argv that runs mkfs.erofs (the tools tree's, composer/build/toolstree.py)."""
    output.unlink(missing_ok=True)
    # -T and --ignore-mtime fix the seconds, but erofs still keeps an inode's
    # sub-second mtime, and a directory this build created has its own: clamp them all
    # so the inode layout (compact or extended) cannot change between builds.
    _clamp_mtimes(tree, epoch)
    commands.run(
        [
            *mkfs,
            # One compression thread per CPU: the image's bytes do not depend on it.
            f"--workers={os.cpu_count() or 1}",
            # lz4hc with 64 KiB physical clusters: about half the size of the tree;
            # larger clusters compress better but read more per page fault.
            "-zlz4hc", "-C65536",
            # No file tails inlined after their inodes, for delta updates (issue 16),
            # which fetch the 4 KiB blocks a host lacks. mkfs.erofs numbers inodes in
            # order, so one added file renumbers every inode after it, and each block
            # holding a renumbered inode changes. An inlined tail shares its inode's
            # block, so the inodes are spread over many more blocks. Measured on
            # docker-host (erofs-utils 1.5), adding jq: 2,683 new blocks (8.05 MB
            # compressed) before, 402 (0.84 MB) after. The cost is slot space, a block
            # for each small file's tail: 254.8 to 270.7 MB (+6.3 %), while the bundle
            # (zstd) is 0.1 % smaller. docs/updates.md has the other settings tried.
            "-Enoinline_data",
            f"-T{epoch}", "--ignore-mtime",
            f"-U{fs_uuid.lower()}",
            "--quiet",
            output, tree,
        ],
        # mkfs.erofs reads SOURCE_DATE_EPOCH itself and then writes extended inodes:
        # the same build would differ by whether the variable was set. -T says it all.
        env={"SOURCE_DATE_EPOCH": None},
    )  # fmt: skip
    return output


def _clamp_mtimes(tree: Path, epoch: int) -> None:
    for path in [tree, *tree.rglob("*")]:
        os.utime(path, (epoch, epoch), follow_symlinks=False)


def make_vfat(
    tree: Path, output: Path, *, size: int, label: str, volume_id: str, epoch: int
) -> Path:
    output.unlink(missing_ok=True)
    with output.open("wb") as handle:
        handle.truncate(size)
    commands.run(
        ["mkfs.vfat", "-F", "32", "-n", label.upper(), "-i", volume_id, "--invariant", output]
    )
    _clamp_mtimes(tree, epoch)
    # Folders, then each folder's files, in sorted order, not `mcopy -s`: that copies in
    # the order the build machine's filesystem lists a folder, which differs between
    # ext4 (by hash) and tmpfs (newest first), and the order decides the FAT entries.
    env = {"SOURCE_DATE_EPOCH": str(epoch), "MTOOLS_SKIP_CHECK": "1"}
    paths = sorted(tree.rglob("*"))
    folders = [f"::/{p.relative_to(tree)}" for p in paths if p.is_dir()]
    if folders:
        commands.run(["mmd", "-i", output, *folders], env=env)
    for folder in [tree, *(p for p in paths if p.is_dir())]:
        files = sorted(p for p in folder.iterdir() if not p.is_dir())
        if files:
            # -m keep modification times, -Q stop at the first error.
            target = f"::/{folder.relative_to(tree)}/".replace("/./", "/")
            commands.run(["mcopy", "-m", "-Q", "-i", output, *files, target], env=env)
    return output


def make_ext4(tree: Path, output: Path, *, size: int, label: str, fs_uuid: str, epoch: int) -> Path:
    output.unlink(missing_ok=True)
    with output.open("wb") as handle:
        handle.truncate(size)
    _clamp_mtimes(tree, epoch)
    commands.run(
        [
            "mkfs.ext4", "-q", "-F",
            "-L", label,
            "-U", fs_uuid.lower(),
            "-E", f"hash_seed={fs_uuid.lower()},root_owner=0:0",
            "-d", tree,
            output,
        ],
        env={"E2FSPROGS_FAKE_TIME": str(epoch)},
    )  # fmt: skip
    _clamp_ext4_change_times(tree, output, epoch)
    return output


def _clamp_ext4_change_times(tree: Path, image: Path, epoch: int) -> None:
    """mkfs.ext4 -d copies each source file's ctime, which is when this build created
    it and cannot be set from user space; debugfs rewrites it (and the creation time)
    in the image so two builds give the same bytes. mtime and atime are clamped on
    the source files before mkfs."""
    paths = ["/", *sorted("/" + str(p.relative_to(tree)) for p in tree.rglob("*"))]
    script = []
    for path in paths:
        quoted = '"' + path.replace('"', '\\"') + '"'
        for field in ("ctime", "crtime"):
            script.append(f"set_inode_field {quoted} {field} @{epoch}")
            script.append(f"set_inode_field {quoted} {field}_extra 0")
    # The fake time also keeps debugfs from stamping the superblock's last write time.
    commands.run(
        ["debugfs", "-w", "-f", "-", image],
        input="\n".join(script).encode(),
        env={"E2FSPROGS_FAKE_TIME": str(epoch)},
    )


def root_step(ctx: BuildContext) -> None:
    """The root image (with its dm-verity tree appended, unless boot.verity is off),
    checked against its slot: with the UKI (composer/build/uki.py), the slot payload
    an update installs."""
    defn = ctx.definition
    ctx.payload_dir.mkdir(parents=True, exist_ok=True)
    if ctx.tools is None:
        raise AssertionError("the root image needs the tools tree before its step ran")
    make_erofs(
        ctx.tree,
        ctx.root_image,
        mkfs=ctx.tools.command("mkfs.erofs"),
        epoch=ctx.epoch,
        fs_uuid=stable_uuid(defn.name, defn.version, "root-fs"),
    )
    if defn.boot.verity:
        ctx.root_verity = verity.append_hash_tree(ctx.root_image, defn.name, defn.version)
    size = ctx.root_image.stat().st_size
    capacity.remember_root_size(defn, size)
    capacity.check_root(defn, size)


def var_step(ctx: BuildContext) -> None:
    defn = ctx.definition
    capacity.check_var(defn, tree_size(ctx.finalized.var_seed))
    make_ext4(
        ctx.finalized.var_seed,
        ctx.var_image,
        size=defn.partitions.var,
        label="var",
        fs_uuid=stable_uuid(defn.name, defn.version, "var-fs"),
        epoch=ctx.epoch,
    )


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
