"""Checks the schema cannot express, run on the validated document with its defaults:
partition sizes, templates and overlays that must exist, kernel module paths the build
removes, files named next to the definition, and the update trust root."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from composer.core.errors import KeelError
from composer.definition.assemble import update_root
from composer.definition.document import Document
from composer.definition.problems import DocPath, Problem, dotted
from composer.publish.keys import load_root
from hostd.formats.sizes import MIB

_UNIT_BYTES = {
    "": 1,
    "B": 1,
    "K": 1024,
    "KiB": 1024,
    "M": MIB,
    "MiB": MIB,
    "G": 1024**3,
    "GiB": 1024**3,
    "T": 1024**4,
    "TiB": 1024**4,
}
_SIZE_PATTERN = re.compile(r"([0-9]+) *([A-Za-z]*)")

# Smaller partitions cannot hold what Keel puts there; FAT32 also needs about 64 MiB
# of clusters before mkfs.vfat will make one.
MINIMUM_PARTITION_SIZES = {"esp": 64 * MIB, "root": 64 * MIB, "var": 64 * MIB}


def check_resolved(
    resolved: dict[str, Any], document: Document, *, templates_dir: Path, overlays_dir: Path
) -> list[Problem]:
    """Every problem of the resolved document; partition sizes become bytes on the way."""
    return [
        *_normalise_sizes(resolved, document),
        *_template_problems(resolved, document, templates_dir),
        *_overlay_problems(resolved, document, overlays_dir),
        *_excluded_module_problems(resolved, document),
        *_file_problems(resolved, document),
        *_trust_root_problems(resolved, document),
        *_secure_boot_problems(resolved, document),
    ]


def _secure_boot_problems(resolved: dict[str, Any], document: Document) -> list[Problem]:
    boot = resolved["boot"]
    if boot["secure_boot"] is True and not boot["verity"]:
        path = ("boot", "secure_boot")
        return [
            Problem(
                document.origin(path),
                "field 'boot.secure_boot' is true but 'boot.verity' is false: under Secure "
                "Boot the signed command line vouches for the root slot through its "
                "dm-verity root hash; set boot.verity to true",
            )
        ]
    return []


def parse_size(value: int | str) -> int:
    """A size in bytes from a number of bytes or a string such as "512MiB" or "2G"."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{value} is not a size: it is negative")
        return value
    if isinstance(value, str):
        match = _SIZE_PATTERN.fullmatch(value.strip())
        if match and match.group(2) in _UNIT_BYTES:
            return int(match.group(1)) * _UNIT_BYTES[match.group(2)]
    units = ", ".join(unit for unit in _UNIT_BYTES if unit)
    raise ValueError(
        f"{value!r} is not a size; write a number of bytes or a number with a unit "
        f'such as "512MiB" (units: {units}; K, M, G and T mean KiB, MiB, GiB and TiB)'
    )


# --- partition sizes ---------------------------------------------------------------


def _normalise_sizes(resolved: dict[str, Any], document: Document) -> list[Problem]:
    """Turn partition sizes into bytes in place, reporting sizes a disk cannot use."""
    problems = []
    partitions = resolved["partitions"]
    for name, minimum in MINIMUM_PARTITION_SIZES.items():
        path = ("partitions", name)
        try:
            size = parse_size(partitions[name])
        except ValueError as error:
            problems.append(Problem(document.origin(path), f"field {dotted(path)!r}: {error}"))
            continue
        partitions[name] = size
        problem = _size_problem(path, size, minimum)
        if problem:
            problems.append(Problem(document.origin(path), problem))
    problems += _var_max_problems(partitions, document)
    return problems


def _var_max_problems(partitions: dict[str, Any], document: Document) -> list[Problem]:
    """partitions.var_max: 0 (no cap), or a size of at least partitions.var."""
    path = ("partitions", "var_max")
    try:
        cap = parse_size(partitions["var_max"])
    except ValueError as error:
        return [Problem(document.origin(path), f"field {dotted(path)!r}: {error}")]
    partitions["var_max"] = cap
    if cap == 0:
        return []
    var = partitions["var"]
    if isinstance(var, int) and cap < var:
        return [
            Problem(
                document.origin(path),
                f"field {dotted(path)!r} is {_format_size(cap)}, below partitions.var "
                f"({_format_size(var)}): var never shrinks; make it at least "
                f'"{var // MIB}MiB", or 0 to let var fill the disk',
            )
        ]
    problem = _size_problem(path, cap, MIB)
    return [Problem(document.origin(path), problem)] if problem else []


def _size_problem(path: DocPath, size: int, minimum: int) -> str | None:
    if size < minimum:
        return (
            f"field {dotted(path)!r} is {_format_size(size)}, below the minimum of "
            f'{_format_size(minimum)}; make it at least "{minimum // MIB}MiB"'
        )
    if size % MIB:
        return (
            f"field {dotted(path)!r} is {size} bytes, not a multiple of 1 MiB; "
            f'round it to "{size // MIB}MiB" or "{size // MIB + 1}MiB"'
        )
    return None


def _format_size(size: int) -> str:
    if size % MIB == 0:
        return f"{size // MIB} MiB"
    return f"{size} bytes"


# --- templates and overlays --------------------------------------------------------


def _template_problems(
    resolved: dict[str, Any], document: Document, templates_dir: Path
) -> list[Problem]:
    problems = []
    for index, template in enumerate(resolved["templates"]):
        source_path = ("templates", index, "source")
        problem = _missing_inside(
            templates_dir, template["source"], "template", source_path, Path.is_file
        )
        if problem:
            problems.append(Problem(document.origin(source_path), problem))
        problems.extend(_target_problems(document, ("templates", index, "target"), template))
    return problems


def _overlay_problems(
    resolved: dict[str, Any], document: Document, overlays_dir: Path
) -> list[Problem]:
    problems = []
    for index, overlay in enumerate(resolved["overlays"]):
        source_path = ("overlays", index, "source")
        problem = _missing_inside(
            overlays_dir, overlay["source"], "overlay", source_path, Path.is_dir
        )
        if problem:
            problems.append(Problem(document.origin(source_path), problem))
        else:
            problems.extend(_overlay_file_problems(document, index, overlay, overlays_dir))
        problems.extend(_target_problems(document, ("overlays", index, "target"), overlay))
    return problems


def _overlay_file_problems(
    document: Document, index: int, overlay: dict[str, Any], overlays_dir: Path
) -> list[Problem]:
    folder = overlays_dir / overlay["source"]
    problems = []
    for name in overlay["files"]:
        path = ("overlays", index, "files", name)
        escape = _escape_problem(name, f"overlay {overlay['source']!r}", path)
        if escape:
            problems.append(Problem(document.origin(path), escape))
        elif not (folder / name).exists() and not (folder / name).is_symlink():
            problems.append(
                Problem(
                    document.origin(path),
                    f"file {name!r} listed in {dotted(path[:-1])!r} does not exist in "
                    f"overlay {overlay['source']!r} (looked for {(folder / name).absolute()}); "
                    "add it to the overlay or remove the entry",
                )
            )
    return problems


def _missing_inside(
    base: Path, relative: str, kind: str, path: DocPath, exists: Callable[[Path], bool]
) -> str | None:
    """Why `relative` is not a usable template or overlay under base, or None."""
    folder = f"{base.name}/"
    escape = _escape_problem(relative, folder, path)
    if escape:
        return escape
    candidate = (base / relative).absolute()
    if not exists(candidate):
        what = "folder" if exists is Path.is_dir else "file"
        return (
            f"{kind} {relative!r} does not exist in {folder} (looked for {candidate}); "
            f"create the {what} or fix {dotted(path)!r}"
        )
    if not candidate.resolve().is_relative_to(base.resolve()):
        return (
            f"{kind} {relative!r} is a link that leads out of {folder}; "
            f"put the real {kind} inside {folder}"
        )
    return None


def _escape_problem(relative: str, inside: str, path: DocPath) -> str | None:
    parts = PurePosixPath(relative).parts
    if PurePosixPath(relative).is_absolute() or ".." in parts:
        return (
            f"{dotted(path)!r} is {relative!r}, which leads out of {inside}; "
            f"write a path inside {inside} without '..'"
        )
    return None


def _target_problems(document: Document, path: DocPath, entry: dict[str, Any]) -> list[Problem]:
    target = entry["target"]
    if ".." in PurePosixPath(target).parts:
        return [
            Problem(
                document.origin(path),
                f"field {dotted(path)!r} is {target!r}; write the absolute path it means "
                "without '..'",
            )
        ]
    return []


# --- kernel modules removed from the image -----------------------------------------

# Each entry becomes an `rm -rf` that runs as root on the build machine, so only plain
# names are allowed: nothing the shell would expand, no way out of the module tree.
_MODULE_PATH_PART = re.compile(r"[A-Za-z0-9._-]+")


def _excluded_module_problems(resolved: dict[str, Any], document: Document) -> list[Problem]:
    problems = []
    for index, entry in enumerate(resolved["kernel"]["exclude_modules"]):
        path = ("kernel", "exclude_modules", index)
        if not is_plain_module_path(entry):
            problems.append(Problem(document.origin(path), _module_path_message(path, entry)))
    return problems


def is_plain_module_path(entry: str) -> bool:
    """A relative path of plain names under /usr/lib/modules/<version>/: no leading
    '/', no empty, '.' or '..' parts, no character a shell would expand."""
    parts = entry.split("/")
    return all(
        _MODULE_PATH_PART.fullmatch(part) is not None and part not in (".", "..") for part in parts
    )


def _module_path_message(path: DocPath, entry: str) -> str:
    return (
        f"field {dotted(path)!r} is {entry!r}; write a path inside "
        "/usr/lib/modules/<version>/ such as 'kernel/sound': names of letters, digits, "
        "'.', '_' and '-' joined by single '/', with no leading '/', no '.' or '..' "
        "and no wildcards"
    )


# --- files named next to the definition --------------------------------------------


def _file_problems(resolved: dict[str, Any], document: Document) -> list[Problem]:
    """Files named relative to the definition (trust root, baked config, archives) exist,
    and no container name is used twice."""
    named: list[tuple[DocPath, str]] = [
        (("update", "root"), resolved["update"]["root"]),
        (("provisioning", "config"), resolved["provisioning"]["config"]),
    ]
    named += [
        (("containers", "archives", index), archive)
        for index, archive in enumerate(resolved["containers"]["archives"])
    ]
    problems = []
    for path, value in named:
        found = document.next_to_definition(path, value)
        if found is not None and not found.is_file():
            problems.append(
                Problem(
                    document.origin(path),
                    f"field {dotted(path)!r} names {value!r}, but {found} does not exist; "
                    "paths here are relative to the definition file that writes them",
                )
            )
    return [*problems, *_duplicate_service_problems(resolved, document)]


def _duplicate_service_problems(resolved: dict[str, Any], document: Document) -> list[Problem]:
    names = [service["name"] for service in resolved["containers"]["services"]]
    problems = []
    for index, name in enumerate(names):
        if name in names[:index]:
            path = ("containers", "services", index, "name")
            problems.append(
                Problem(document.origin(path), f"container name {name!r} is used twice")
            )
    return problems


# --- the update trust root ---------------------------------------------------------


def _trust_root_problems(resolved: dict[str, Any], document: Document) -> list[Problem]:
    """The root metadata the build will bake is TUF root metadata signed by its own keys.

    Checked here so a wrong file costs a second, not a build that fails when it bakes
    the root minutes later (or an image whose every update is refused)."""
    written = resolved["update"]["root"]
    root = update_root(resolved["update"], document)
    if root is None or (written and not root.is_file()):
        return []  # no trust root, or a missing file _file_problems already reports
    try:
        load_root(root)
    except KeelError as error:
        path = ("update", "root")
        return [Problem(document.origin(path), _trust_root_message(written, root, error))]
    return []


def _trust_root_message(written: str, root: Path, error: KeelError) -> str:
    advice = "the root.json that `keel keygen` wrote, unchanged"
    if written:
        return (
            f"field 'update.root' names {written!r}, which is not a usable trust root: "
            f"{error.message}; point it at {advice}"
        )
    return (
        f"field 'update.root' is empty, so the trust root is $KEEL_UPDATE_ROOT ({root}), "
        f"which is not usable: {error.message}; point $KEEL_UPDATE_ROOT at {advice}, "
        "or unset it"
    )
