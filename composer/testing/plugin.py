"""pytest plugin for testing booted Keel images (registered as the `keel` entry point).

Fixtures (session-scoped, so one build and one boot serve the whole run):
  keel_definition  the image definition under test: --keel-definition YAML, else the
              ini setting keel_definition, else images/docker-host.yaml
  keel_image  the artifact directory under test: --keel-image PATH or KEEL_TEST_IMAGE,
              else keel_definition built once
  keel_vm     a composer.testing.KeelVM booted from it, stopped at the end of the
              session (also when the session is interrupted)
  keel_host   a testinfra host for keel_vm over paramiko
A failing test that used keel_vm gets the last lines of the serial log in its report."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from composer.core.paths import DEFAULT_IMAGE, vm_root
from composer.testing.machine import KeelVM
from composer.vm import runner
from composer.vm.accel import ACCELS

SERIAL_LINES = 50

# Every VM this process started, so that exit paths pytest does not cover (atexit after
# an internal error) still end them; QEMU also gets SIGTERM if this process is killed.
_started: list[KeelVM] = []


def _kill_leftovers() -> None:
    for vm in _started:
        vm.kill()


atexit.register(_kill_leftovers)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("keel", "Keel image tests")
    group.addoption(
        "--keel-image",
        metavar="PATH",
        default=os.environ.get("KEEL_TEST_IMAGE"),
        help="boot this artifact directory or disk file instead of building "
        "(default: $KEEL_TEST_IMAGE)",
    )
    group.addoption(
        "--keel-definition",
        metavar="YAML",
        default=None,
        help="image definition to build when no --keel-image is given (default: the "
        f"keel_definition ini setting, else {DEFAULT_IMAGE})",
    )
    parser.addini(
        "keel_definition",
        "image definition the Keel fixtures build when the command line names none, "
        "relative to the ini file (a test image with debug_shell: true, say)",
        default="",
    )
    group.addoption("--keel-accel", choices=ACCELS, default=None, help="force the accelerator")
    group.addoption(
        "--keel-boot-timeout",
        type=float,
        default=runner.DEFAULT_BOOT_TIMEOUT,
        help="seconds to wait for SSH (default: %(default)s)",
    )
    group.addoption(
        "--keel-keep-vm", action="store_true", help="keep the VM folder (logs, disk) afterwards"
    )


def definition_under_test(config: pytest.Config) -> Path:
    """--keel-definition, else the keel_definition ini setting, else docker-host;
    absolute, as tests hand it to processes that run in other folders."""
    given = config.getoption("--keel-definition")
    if given:
        return Path(given).resolve()
    configured = str(config.getini("keel_definition"))
    if configured:
        base = config.inipath.parent if config.inipath is not None else config.rootpath
        return (base / configured).resolve()
    return DEFAULT_IMAGE


@pytest.fixture(scope="session")
def keel_definition(pytestconfig: pytest.Config) -> Path:
    """The image definition under test: keel_image is built from it (with --keel-image,
    it is the definition that image is taken to come from)."""
    return definition_under_test(pytestconfig)


@pytest.fixture(scope="session")
def keel_image(pytestconfig: pytest.Config, keel_definition: Path) -> Path:
    """The artifact directory (or disk file) the session tests."""
    given = pytestconfig.getoption("--keel-image")
    if given:
        path = Path(given)
        if not path.exists():
            raise pytest.UsageError(f"--keel-image {path} does not exist")
        return path.resolve()
    from composer.build.pipeline import build_image  # only needed when building

    # Absolute: tests hand it to other processes that run in other folders.
    return build_image(keel_definition, quiet=False).out_dir.resolve()


@pytest.fixture(scope="session")
def keel_vm(pytestconfig: pytest.Config, keel_image: Path) -> Iterator[KeelVM]:
    """A VM booted from keel_image, reachable over SSH, stopped after the session."""
    options = runner.RunOptions(
        image=keel_image,
        name=f"pytest-{secrets.token_hex(3)}",
        accel=pytestconfig.getoption("--keel-accel"),
        boot_timeout=pytestconfig.getoption("--keel-boot-timeout"),
        die_with_parent=True,
    )
    vm = KeelVM.start(options, vm_root())
    _started.append(vm)
    try:
        yield vm
    finally:
        # try/finally, not only fixture teardown order: a KeyboardInterrupt during the
        # shutdown must still end QEMU.
        try:
            vm.stop()
        finally:
            vm.kill()
        if not pytestconfig.getoption("--keel-keep-vm"):
            shutil.rmtree(vm.vm_dir.path, ignore_errors=True)


@pytest.fixture(scope="session")
def keel_host(keel_vm: KeelVM) -> Any:
    """A testinfra host for keel_vm (paramiko backend, host-key checking off)."""
    import testinfra

    return testinfra.get_host(
        f"paramiko://root@127.0.0.1:{keel_vm.ssh_port}",
        ssh_identity_file=str(keel_vm.key),
        # The VM's ssh_config says StrictHostKeyChecking no: a throwaway VM has a new
        # host key on every first boot, and nothing should land in known_hosts.
        ssh_config=str(keel_vm.ssh_config),
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    vm = getattr(item, "funcargs", {}).get("keel_vm")
    if report.failed and isinstance(vm, KeelVM):
        report.sections.append(
            (f"keel serial log of {vm.name} (last {SERIAL_LINES} lines)", vm.serial_tail())
        )
