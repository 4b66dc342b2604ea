"""Paths in a config: absolute, clean (no '//', '.', '..' or trailing '/': a path
means exactly one place, so duplicates and conflicts can be found by comparing
strings), short enough for the kernel, on a writable place, and not below another
entry that is not a directory (a file, or a link, which writes never follow)."""

from __future__ import annotations

PATH_MAX = 4096
NAME_MAX = 255

# Writable places on a Keel host; everything else is the read-only OS slot.
# /home, /root, /opt and /usr/local are the image's links into /var (as on Fedora
# CoreOS), which safefs resolves beneath the root.
WRITABLE_PLACES = ("/etc", "/var", "/home", "/root", "/usr/local", "/opt")
WRITABLE_PREFIXES = tuple(f"{place}/" for place in WRITABLE_PLACES)
READ_ONLY_HINT = (
    "the OS (/, /usr, /bin, /lib, /boot, ...) is a read-only image; a config may write "
    "under /etc and /var (and /home, /root, /usr/local, /opt, which live on /var)"
)


def path_problem(raw: str, field: str, *, writable: bool = True) -> str | None:
    """Why raw is not an acceptable path (None if it is)."""
    if not raw.startswith("/"):
        return f"field '{field}' must be an absolute path, not {raw!r}"
    if len(raw.encode()) >= PATH_MAX:
        return f"field '{field}' is longer than {PATH_MAX} bytes"
    parts = raw.split("/")[1:]
    if ".." in parts:
        return f"field '{field}' must not contain '..': {raw!r}"
    if raw != "/" and any(part in ("", ".") for part in parts):
        return (
            f"field '{field}' is {raw!r}, not a clean path (no '//', '/./' or trailing "
            f"'/'); write {clean(raw)!r}"
        )
    if any(len(part.encode()) > NAME_MAX for part in parts):
        return f"field '{field}' has a name longer than {NAME_MAX} bytes"
    if writable and not (raw + "/").startswith(WRITABLE_PREFIXES):
        return f"field '{field}' is {raw!r}, on the read-only OS: {READ_ONLY_HINT}"
    if writable and raw in WRITABLE_PLACES:
        return f"field '{field}' is {raw!r} itself; name something inside it"
    return None


def clean(raw: str) -> str:
    """raw without empty and '.' components (so duplicates still compare equal)."""
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    return "/" + "/".join(parts)


def parents(path: str) -> list[str]:
    """/a/b/c -> ['/a', '/a/b']."""
    parts = path.split("/")[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def conflicts(entries: list[tuple[str, str, str]]) -> list[str]:
    """Problems among (path, kind, field) entries: the same path twice, an entry below
    a file or a link (kind 'file' or 'link'; 'dir' may hold others), or a node at or
    below a mount point (kind 'mount': files are written before the filesystem is
    mounted, so the mount would hide them; mounts may nest)."""
    problems = []
    seen: dict[str, tuple[str, str]] = {}
    for path, kind, field in entries:
        if path not in seen:
            seen[path] = (kind, field)
        elif "mount" in (kind, seen[path][0]):
            mount = field if kind == "mount" else seen[path][1]
            other = seen[path][1] if kind == "mount" else field
            problems.append(f"field '{other}': {path} is {_MOUNTED.format(mount=mount)}")
        else:
            problems.append(f"field '{field}': {path} is also given by {seen[path][1]}")
    for path, kind, field in entries:
        for parent in parents(path):
            if parent not in seen or seen[parent][0] == "dir":
                continue
            other_kind, other = seen[parent]
            if other_kind == "mount" and kind == "mount":
                continue
            if other_kind == "mount":
                problems.append(
                    f"field '{field}': {path} is below {parent}, which is "
                    f"{_MOUNTED.format(mount=other)}"
                )
                break
            what = "a link (never followed)" if other_kind == "link" else "a file"
            problems.append(
                f"field '{field}': {path} is below {parent}, which {other} makes {what}"
            )
            break
    return problems


_MOUNTED = (
    "where {mount} mounts a filesystem; Keel writes files before that filesystem is "
    "mounted, so they would end up hidden below it (make them after the first boot, or "
    "elsewhere)"
)
