"""The pytest plugin's report hook, checked with pytester (no QEMU involved)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

CONFTEST = """
import subprocess
from pathlib import Path

import pytest

from composer.testing import KeelVM
from composer.vm import runner, state
from composer.vm.vmdir import VmDir


@pytest.fixture(scope="session")
def keel_vm(tmp_path_factory):
    # Overrides the plugin's fixture: a KeelVM around a dummy process and a serial log.
    vm = VmDir(tmp_path_factory.mktemp("vms") / "fake")
    vm.path.mkdir()
    vm.serial_log.write_text("".join(f"boot line {i}\\n" for i in range(100)))
    s = state.VmState(name="fake", image="/x", accel="tcg", memory_mib=1, cpus=1)
    process = subprocess.Popen(["true"])
    process.wait()
    return KeelVM(runner.RunningVm(vm, s, process))
"""

TESTS = """
def test_fails_with_vm(keel_vm):
    assert False, "guest misbehaved"

def test_passes_with_vm(keel_vm):
    pass

def test_fails_without_vm():
    assert False
"""


def test_serial_log_attached_to_failing_vm_tests(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(TESTS)
    result = pytester.runpytest("-rA")
    result.assert_outcomes(passed=1, failed=2)
    text = result.stdout.str()
    section = "keel serial log of fake (last 50 lines)"
    assert text.count(section) == 1  # only the failing test that used the VM
    assert "boot line 99" in text and "boot line 50" in text
    assert "boot line 49\n" not in text


def test_plugin_options_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--keel-image=PATH*", "*--keel-definition=YAML*"])
