"""Writing beneath a root directory without ever following a symbolic link.

Python has no openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), so paths are walked one
component at a time from a descriptor of the root, each opened with O_NOFOLLOW |
O_DIRECTORY relative to its parent; a component that is a link is refused. Files are
created through descriptors (a fresh O_EXCL temporary name in the directory, then
fchown, fchmod, fsync and a rename between directory descriptors), so neither a link
planted in the tree nor one made earlier by the same config (or by a user on a live
host) can redirect a write, for example onto /etc/shadow.

One exception: the image's own links into /var may be resolved, beneath the root:
any top-level entry of the root (`/home -> var/home`, `/root -> var/roothome`, `/opt
-> var/opt` on Keel), and /usr/local (`-> ../var/usrlocal`), named in IMAGE_LINKS as
the one nested link. Those belong to the read-only OS image, which no user can change;
they are resolved only while walking the path as given (never inside a link's target),
and whatever they point at is walked without following any further link."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted at a path must not hang the boot.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_TEMP_TRIES = 100
# Links below the top level that the image defines and a walk may resolve: /usr is a
# directory of the image, /usr/local in it a link to ../var/usrlocal (writable).
IMAGE_LINKS = frozenset({"usr/local"})


class UnsafePath(OSError):
    """A path would have to follow a link, or crosses something not a directory."""


def split(path: str) -> list[str]:
    """'/a/b' -> ['a', 'b']; paths were validated clean by config.py."""
    return [part for part in path.split("/") if part]


def temp_name(name: str) -> str:
    # Unpredictable, so nothing can be planted at it in advance (and O_EXCL refuses
    # whatever is there anyway). Short enough to fit NAME_MAX with a long name.
    return f".{name[:200]}.keel-{secrets.token_hex(8)}"


class Root:
    """A root directory held open; every method takes an absolute path inside it."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- walking ---------------------------------------------------------------

    def _open_child(
        self, parent: int, name: str, shown: str, where: list[str] | None, create: bool
    ) -> tuple[int, bool]:
        """(descriptor of parent's child name, whether an image link was resolved).
        where: the components from the root up to name, if every one before it was
        opened as a plain directory (None once a link was resolved)."""
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent), False
        except FileNotFoundError:
            if not create:
                raise
            # 0700 until its mode is set; made meanwhile: opened (and checked) below.
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=parent)
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            # Like Ignition: missing parents are made root-owned 0755.
            if os.geteuid() == 0:
                os.fchown(fd, 0, 0)
            os.fchmod(fd, 0o755)
            return fd, False
        except OSError as error:
            if error.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if stat.S_ISLNK(info.st_mode) and where is not None:
            resolved = image_link_target(where, os.readlink(name, dir_fd=parent))
            if resolved is not None:
                return self._walk(resolved, shown, create, literal=False), True
        if stat.S_ISLNK(info.st_mode):
            raise UnsafePath(errno.ELOOP, f"{shown} is a symbolic link; not following it")
        raise UnsafePath(errno.ENOTDIR, f"{shown} is not a directory")

    def _walk(self, parts: list[str], shown: str, create: bool, literal: bool = True) -> int:
        """Descriptor of the directory parts (from the root). literal: parts is the
        path as given, on which the image's own links may be resolved."""
        fd = os.dup(self.fd)
        try:
            for index, name in enumerate(parts):
                here = "/" + "/".join(parts[: index + 1]) if literal else shown
                where = parts[: index + 1] if literal else None
                child, resolved = self._open_child(fd, name, here, where, create)
                os.close(fd)
                fd = child
                literal = literal and not resolved
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextmanager
    def directory(self, path: str, create: bool = False) -> Iterator[int]:
        """A descriptor of directory path (made, with its parents, if create)."""
        fd = self._walk(split(path), path, create)
        try:
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def parent(self, path: str, create: bool = False) -> Iterator[tuple[int, str]]:
        """(descriptor of path's directory, path's last name)."""
        parts = split(path)
        with self.directory("/" + "/".join(parts[:-1]), create) as fd:
            yield fd, parts[-1]

    # -- reading ---------------------------------------------------------------

    def lstat(self, path: str) -> os.stat_result | None:
        """The entry at path itself (a link is not followed); None if missing."""
        try:
            with self.parent(path) as (fd, name):
                return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def read(self, path: str) -> bytes | None:
        """A regular file's bytes; None if missing; UnsafePath if a link or special."""
        try:
            with self.parent(path) as (dir_fd, name):
                try:
                    fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
                except OSError as error:
                    if error.errno == errno.ELOOP:
                        raise UnsafePath(errno.ELOOP, f"{path} is a symbolic link") from None
                    raise
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UnsafePath(errno.EINVAL, f"{path} is not a regular file")
            return handle.read()

    def readlink(self, path: str) -> str | None:
        info = self.lstat(path)
        if info is None or not stat.S_ISLNK(info.st_mode):
            return None
        with self.parent(path) as (fd, name):
            return os.readlink(name, dir_fd=fd)

    def same_file(self, first: str, second: str) -> bool:
        a, b = self.lstat(first), self.lstat(second)
        return bool(a and b) and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)  # type: ignore[union-attr]

    # -- writing ---------------------------------------------------------------

    def write_file(self, path: str, data: bytes, mode: int, uid: int = -1, gid: int = -1) -> None:
        """Atomically replace whatever is at path (never followed) by a file."""
        with self.parent(path, create=True) as (dir_fd, name):
            temp, fd = self._create_temp(dir_fd, name)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    if uid != -1 or gid != -1:
                        os.fchown(fd, uid, gid)
                    os.fchmod(fd, mode)  # after fchown, which clears setuid bits
                    os.fsync(fd)
                os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                _unlink_quietly(temp, dir_fd)
                raise
            os.fsync(dir_fd)

    def _create_temp(self, dir_fd: int, name: str) -> tuple[str, int]:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        for _ in range(_TEMP_TRIES):
            temp = temp_name(name)
            try:
                return temp, os.open(temp, flags, 0o600, dir_fd=dir_fd)
            except FileExistsError:
                continue  # something (maybe a link) is there: never touch it
        raise UnsafePath(errno.EEXIST, f"no free temporary name next to {name}")

    def mkdir(self, path: str, mode: int) -> None:
        with self.parent(path, create=True) as (dir_fd, name):
            os.mkdir(name, 0o700, dir_fd=dir_fd)
            fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            try:
                os.fchmod(fd, mode)
            finally:
                os.close(fd)

    def chmod(self, path: str, mode: int) -> None:
        """Mode of a file or directory at path (a link there is refused)."""
        with self.parent(path) as (dir_fd, name):
            fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
            try:
                os.fchmod(fd, mode)
            finally:
                os.close(fd)

    def chown(self, path: str, uid: int, gid: int) -> None:
        with self.parent(path) as (dir_fd, name):
            os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)

    def symlink(self, path: str, target: str) -> None:
        """Atomically make path a link to target (replacing a file or link there)."""
        with self.parent(path, create=True) as (dir_fd, name):
            for _ in range(_TEMP_TRIES):
                temp = temp_name(name)
                try:
                    os.symlink(target, temp, dir_fd=dir_fd)
                    break
                except FileExistsError:
                    continue
            else:
                raise UnsafePath(errno.EEXIST, f"no free temporary name next to {name}")
            try:
                os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                _unlink_quietly(temp, dir_fd)
                raise

    def hardlink(self, path: str, target: str) -> None:
        with (
            self.parent(target) as (target_dir, target_name),
            self.parent(path, create=True) as (dir_fd, name),
        ):
            os.link(target_name, name, src_dir_fd=target_dir, dst_dir_fd=dir_fd,
                    follow_symlinks=False)  # fmt: skip

    def remove(self, path: str) -> None:
        """Remove path (a directory with all it holds); links are removed, not followed."""
        with self.parent(path) as (dir_fd, name):
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(name, dir_fd=dir_fd)  # fd-based: does not follow links
            else:
                os.unlink(name, dir_fd=dir_fd)

    def check_parents(self, path: str) -> str | None:
        """Why path's existing parents cannot be walked safely (None if they can)."""
        try:
            with self.parent(path):
                return None
        except FileNotFoundError:
            return None  # the missing part is made by us, as directories
        except UnsafePath as error:
            return f"{path}: {error.strerror}"


def image_link_target(where: list[str], target: str) -> list[str] | None:
    """The components, from the root, a link at where (components from the root) leads
    to, if it is one of the image's links a walk may resolve; None otherwise.
    Leading '..' may climb out of the link's own folder (/usr/local ->
    ../var/usrlocal), never above the root; '..' anywhere else is refused."""
    if len(where) != 1 and "/".join(where) not in IMAGE_LINKS:
        return None
    names = split(target)
    climbs = 0
    while climbs < len(names) and names[climbs] == "..":
        climbs += 1
    base = [] if target.startswith("/") else where[:-1]
    rest = names[climbs:]
    if climbs > len(base) or not rest or ".." in rest:
        return None
    return base[: len(base) - climbs] + [n for n in rest if n != "."]


def _unlink_quietly(name: str, dir_fd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=dir_fd)
