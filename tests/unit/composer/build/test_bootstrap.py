import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from composer.build import bootstrap
from composer.core.errors import KeelError
from composer.definition.model import ImageDefinition
from tests.unit.conftest import Project


def test_cache_key_follows_the_package_set_not_its_order(
    project: Project, minimal: Callable[[str], str]
) -> None:
    one = project.load(minimal("packages: [openssh-server, docker.io]\n"), "one.yaml")
    same = project.load(minimal("packages: [docker.io, openssh-server]\n"), "same.yaml")
    other = project.load(minimal("packages: [docker.io]\n"), "other.yaml")
    assert bootstrap.cache_key(one) == bootstrap.cache_key(same)
    assert bootstrap.cache_key(one) != bootstrap.cache_key(other)


def test_cache_key_changes_with_initrd_modules_and_suite(
    project: Project, minimal: Callable[[str], str]
) -> None:
    base = project.load(minimal(""), "base.yaml")
    modules = project.load(minimal("kernel: {initrd_modules: [nvme]}\n"), "modules.yaml")
    suite = project.load(minimal("debian: {suite: bookworm}\n"), "suite.yaml")
    keys = {bootstrap.cache_key(d) for d in (base, modules, suite)}
    assert len(keys) == 3


def test_cache_key_changes_with_the_shell_run_after_install(
    project: Project, minimal: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    defn = project.load(minimal(""))
    before = bootstrap.cache_key(defn)
    monkeypatch.setattr(
        bootstrap, "_RECOMPRESS_MODULES", bootstrap._RECOMPRESS_MODULES.replace("-12", "-19")
    )
    assert "-19" in bootstrap._prune_modules_hook(defn)
    assert bootstrap.cache_key(defn) != before


def test_mmdebstrap_command_names_no_mirror_unless_the_definition_does(
    project: Project, minimal: Callable[[str], str], tmp_path
) -> None:
    plain = project.load(minimal("packages: [docker.io]\n"), "plain.yaml")
    cmd = bootstrap.mmdebstrap_command(plain, tmp_path, tmp_path / "out.tar")
    assert cmd[-2:] == ["trixie", str(tmp_path / "out.tar")]
    # trixie split the docker command out of docker.io; naming docker.io gets both.
    assert "--include=linux-image-amd64,docker.io,docker-cli" in cmd
    assert "--architectures=amd64" in cmd
    mirrored = project.load(minimal('debian: {mirror: "http://127.0.0.1:9/debian"}\n'), "m.yaml")
    cmd = bootstrap.mmdebstrap_command(mirrored, tmp_path, tmp_path / "out.tar")
    assert cmd[-1] == "http://127.0.0.1:9/debian"


def test_missing_package_is_reported_by_name_and_line(
    project: Project, minimal: Callable[[str], str]
) -> None:
    defn = project.load(minimal("packages:\n  - openssh-server\n  - no-such-pkg\n"))
    failure = KeelError("command failed\n    E: Unable to locate package no-such-pkg")
    explained = bootstrap._explain_missing_packages(defn, failure)
    assert "test.yaml:6" in explained.message
    assert "'no-such-pkg' is not in Debian trixie" in explained.message


def test_bookworm_installs_docker_io_whole(
    project: Project, minimal: Callable[[str], str], tmp_path
) -> None:
    defn = project.load(minimal("debian: {suite: bookworm}\npackages: [docker.io]\n"))
    cmd = bootstrap.mmdebstrap_command(defn, tmp_path, tmp_path / "out.tar")
    assert "--include=linux-image-amd64,docker.io" in cmd
    assert cmd[-2] == "bookworm"


def test_a_missing_part_of_a_split_package_names_the_package_the_definition_lists(
    project: Project, minimal: Callable[[str], str]
) -> None:
    defn = project.load(minimal("packages:\n  - docker.io\n"))
    failure = KeelError("E: Unable to locate package docker-cli")
    explained = bootstrap._explain_missing_packages(defn, failure)
    assert "test.yaml:5: package 'docker-cli' (part of 'docker.io' in trixie)" in explained.message


# --- the hook that removes excluded kernel modules ---------------------------------

KERNEL = "6.1.0-test-amd64"


def _module_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A new root with one kernel's modules, a fake `chroot` first on PATH (the real
    one needs root and a root with depmod in it), and a folder next to the root that
    a '..' entry would reach."""
    root = tmp_path / "root"
    modules = root / "usr/lib/modules" / KERNEL
    for relative in ("kernel/sound/snd.ko", "kernel/drivers/gpu/drm.ko", "kernel/fs/ext4.ko"):
        (modules / relative).parent.mkdir(parents=True, exist_ok=True)
        (modules / relative).write_bytes(b"\x7fELF")
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    outside = tmp_path / "home"
    (outside / "user").mkdir(parents=True)
    (outside / "user/notes").write_text("keep me\n")
    (modules / "kernel/escape").symlink_to(outside)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    chroot = bin_dir / "chroot"
    # It logs the SOURCE_DATE_EPOCH it was given too (the initrd's is fixed).
    log = tmp_path / "chroot.log"
    chroot.write_text(
        f'#!/bin/sh\necho "${{SOURCE_DATE_EPOCH:+@$SOURCE_DATE_EPOCH }}$*" >> {log}\n'
    )
    chroot.chmod(0o755)
    return root, outside


def _run_hook(
    defn: ImageDefinition, root: Path, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    path = f"{tmp_path / 'bin'}:{os.environ['PATH']}"
    return subprocess.run(
        ["sh", "-c", bootstrap._prune_modules_hook(defn), "exec", str(root)],
        env={**{k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}, "PATH": path},
        capture_output=True,
        text=True,
        check=False,
    )


def _reindexed(root: Path) -> str:
    """What the hook runs in the root for one kernel: depmod, then the initrd made
    again at the fixed time."""
    return f"{root} depmod -a {KERNEL}\n@0 {root} update-initramfs -u -k {KERNEL}\n"


def _excluding(defn: ImageDefinition, *entries: str) -> ImageDefinition:
    """The definition with these exclude_modules, past the definition checks (which
    refuse the malicious ones): what the hook does if validation were bypassed."""
    return replace(defn, kernel=replace(defn.kernel, exclude_modules=entries))


def test_module_hook_removes_the_listed_module_folders_and_reindexes(
    project: Project, minimal: Callable[[str], str], tmp_path: Path
) -> None:
    root, _outside = _module_tree(tmp_path)
    defn = project.load(minimal("kernel: {exclude_modules: [kernel/sound, kernel/drivers/gpu]}\n"))
    result = _run_hook(defn, root, tmp_path)
    assert result.returncode == 0, result.stderr
    modules = root / "usr/lib/modules" / KERNEL
    assert not (modules / "kernel/sound").exists()
    assert not (modules / "kernel/drivers/gpu").exists()
    assert (modules / "kernel/fs/ext4.ko").is_file()
    assert (modules / "kernel/drivers").is_dir()
    assert (tmp_path / "chroot.log").read_text() == _reindexed(root)


@pytest.mark.parametrize(
    "malicious",
    [
        "../../../../../home",  # up from usr/lib/modules/VERSION/ to beside the root
        "../../../../etc",  # inside the new root, but not a kernel module
        "kernel/../../../../../../home/user",
        "kernel/escape/user",  # through a symlink in the module tree
        "kernel/..",
        "..",
    ],
)
def test_module_hook_never_removes_anything_outside_the_module_tree(
    project: Project, minimal: Callable[[str], str], tmp_path: Path, malicious: str
) -> None:
    root, outside = _module_tree(tmp_path)
    defn = _excluding(project.load(minimal("")), "kernel/sound", malicious, "kernel/drivers/gpu")
    result = _run_hook(defn, root, tmp_path)
    assert (outside / "user/notes").read_text() == "keep me\n"
    assert (root / "etc/passwd").is_file()
    modules = root / "usr/lib/modules" / KERNEL
    assert (modules / "kernel/fs/ext4.ko").is_file()
    assert (modules / "kernel/escape").is_symlink()
    # The build fails rather than quietly skip an entry.
    assert result.returncode != 0
    assert f"not removing kernel module path '{malicious}'" in result.stderr
    # The entries that are fine are still removed, and the modules still re-indexed.
    assert not (modules / "kernel/sound").exists()
    assert not (modules / "kernel/drivers/gpu").exists()
    assert (tmp_path / "chroot.log").read_text() == _reindexed(root)


def test_module_hook_removes_a_symlink_it_names_not_its_target(
    project: Project, minimal: Callable[[str], str], tmp_path: Path
) -> None:
    root, outside = _module_tree(tmp_path)
    defn = _excluding(project.load(minimal("")), "kernel/escape")
    result = _run_hook(defn, root, tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (root / "usr/lib/modules" / KERNEL / "kernel/escape").is_symlink()
    assert (outside / "user/notes").read_text() == "keep me\n"


def test_microcode_goes_in_early_mode_and_the_initrd_is_made_again(
    project: Project, minimal: Callable[[str], str], tmp_path: Path
) -> None:
    """In their default "auto" mode the microcode packages would put into the initrd
    only what the build machine's own CPU needs."""
    root, _ = _module_tree(tmp_path)
    defaults = root / "etc/default"
    defaults.mkdir(parents=True)
    (defaults / "amd64-microcode").write_text("#AMD64UCODE_INITRAMFS=auto\n")
    (defaults / "intel-microcode").write_text("#IUCODE_TOOL_INITRAMFS=auto\n")
    result = _run_hook(project.load(minimal("")), root, tmp_path)
    assert result.returncode == 0, result.stderr

    def sourced(name: str, *variables: str) -> list[str]:
        script = f". {defaults / name}; " + "; ".join(f'echo "${v}"' for v in variables)
        return subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout.split()

    assert sourced("amd64-microcode", "AMD64UCODE_INITRAMFS") == ["early"]
    assert sourced("intel-microcode", "IUCODE_TOOL_INITRAMFS", "IUCODE_TOOL_SCANCPUS") == [
        "early",
        "no",
    ]
    assert (tmp_path / "chroot.log").read_text() == _reindexed(root)


def test_the_initrd_is_made_again_at_a_fixed_time_whatever_the_build_has(
    project: Project, minimal: Callable[[str], str], tmp_path: Path
) -> None:
    """Plain .ko files and no microcode: nothing else to do, but the initrd the kernel
    package made is replaced by one whose bytes do not depend on when it was made, so
    a release that only adds a package keeps the same initrd blocks (delta updates)."""
    root, _ = _module_tree(tmp_path)
    result = _run_hook(project.load(minimal("")), root, tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (root / "etc/default").exists()
    assert (tmp_path / "chroot.log").read_text() == _reindexed(root)


def test_mmdebstrap_reads_and_refills_the_download_cache_of_its_suite(
    project: Project, minimal: Callable[[str], str], tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("KEEL_CACHE_DIR", str(tmp_path / "cache"))
    cmd = bootstrap.mmdebstrap_command(project.load(minimal("")), tmp_path, tmp_path / "o.tar")
    cache = str(tmp_path / "cache/debs/trixie")
    setup = [a for a in cmd if a.startswith("--setup-hook=") and cache in a]
    assert len(setup) == 1
    # Without it the essential packages' files are gone before they are linked out.
    assert "--skip=essential/unlink" in cmd
    # Last, after the hook that remakes the initrd: what apt fetched is all there.
    hooks = [a for a in cmd if a.startswith("--customize-hook=")]
    assert cache in hooks[-1]
    bookworm = project.load(minimal("debian: {suite: bookworm}\n"), "b.yaml")
    other = bootstrap.mmdebstrap_command(bookworm, tmp_path, tmp_path / "o.tar")
    assert any(str(tmp_path / "cache/debs/bookworm") in a for a in other)


def run_hook(option: str, root: Path) -> None:
    script = option.split("=", 1)[1]
    subprocess.run(["sh", "-c", script, "exec", str(root)], check=True)


@pytest.mark.parametrize("same_filesystem", [True, False])
def test_the_download_cache_hooks_fill_the_chroot_and_keep_new_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, same_filesystem: bool
) -> None:
    from composer.build import debcache

    monkeypatch.setenv("KEEL_CACHE_DIR", str(tmp_path / "my cache"))  # a space: quoting
    cache = debcache.folder("trixie")
    cache.mkdir(parents=True)
    (cache / "old_1.0_amd64.deb").write_bytes(b"cached")
    # /dev/shm is another filesystem than tmp_path's: the hooks copy instead of link.
    root = tmp_path / "chroot" if same_filesystem else Path(tempfile.mkdtemp(dir="/dev/shm"))
    root.mkdir(exist_ok=True)
    try:
        link_in, link_out = [o for o in debcache.mmdebstrap_options("trixie") if "hook" in o]
        run_hook(link_in, root)
        archives = root / "var/cache/apt/archives"
        assert (archives / "old_1.0_amd64.deb").read_bytes() == b"cached"
        assert ((archives / "old_1.0_amd64.deb").stat().st_ino
                == (cache / "old_1.0_amd64.deb").stat().st_ino) == same_filesystem  # fmt: skip
        (archives / "new_2.0_amd64.deb").write_bytes(b"fetched")
        (archives / "partial").mkdir()
        run_hook(link_out, root)
        assert sorted(p.name for p in cache.iterdir()) == ["new_2.0_amd64.deb", "old_1.0_amd64.deb"]
        assert (cache / "new_2.0_amd64.deb").read_bytes() == b"fetched"
    finally:
        shutil.rmtree(root, ignore_errors=True)
