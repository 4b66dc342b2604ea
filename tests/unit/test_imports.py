"""The import rule between the two programs: the build side uses only what hostd names
as shared (hostd.formats, hostd.ignition, and the target checks both installers make),
and the host agent never imports the build side, which is not in the image."""

import ast
from pathlib import Path

import pytest

from composer.core.paths import PROJECT_ROOT

SHARED = ("hostd.formats", "hostd.ignition", "hostd.install.target", "hostd.install.errors")


def imported_modules(source: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def python_files(package: str) -> list[Path]:
    files = sorted((PROJECT_ROOT / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    return files


def is_under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def forbidden_hostd_imports(source: Path) -> list[str]:
    """hostd modules a build-side file imports outside the shared packages. The bare
    package name (`from hostd import formats` also names `hostd`) says nothing itself:
    its submodules are checked."""
    return sorted(
        module
        for module in imported_modules(source)
        if is_under(module, "hostd")
        and module != "hostd"
        and not any(is_under(module, shared) for shared in SHARED)
    )


@pytest.mark.parametrize("source", python_files("composer"), ids=str)
def test_composer_imports_only_the_shared_part_of_hostd(source: Path) -> None:
    assert forbidden_hostd_imports(source) == []


@pytest.mark.parametrize("source", python_files("hostd"), ids=str)
def test_hostd_never_imports_composer(source: Path) -> None:
    for module in imported_modules(source):
        assert not is_under(module, "composer"), f"{source} imports {module}"


def test_the_rule_sees_a_forbidden_import_at_any_depth(tmp_path: Path) -> None:
    offender = tmp_path / "x.py"
    offender.write_text(
        "from hostd import formats\nfrom hostd.ignition import config\n"
        "def f():\n    from hostd import updater\n    import hostd.slots\n"
    )
    assert forbidden_hostd_imports(offender) == ["hostd.slots", "hostd.updater"]
