"""The pytest plugin's report hook, checked with pytester (no QEMU involved)."""

from __future__ import annotations

import tomllib

import pytest

from composer.core.paths import DEFAULT_IMAGE, PROJECT_ROOT
from composer.definition.load import load_definition

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


DEFINITION_TEST = """
from pathlib import Path

def test_definition(keel_definition):
    assert keel_definition == Path({expected!r})
"""


def test_keel_definition_comes_from_the_ini_setting(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nkeel_definition = images/test.yaml\n")
    expected = pytester.path / "images/test.yaml"
    pytester.makepyfile(DEFINITION_TEST.format(expected=str(expected)))
    pytester.runpytest().assert_outcomes(passed=1)


def test_the_command_line_names_another_definition(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nkeel_definition = images/test.yaml\n")
    expected = pytester.path / "mine.yaml"
    pytester.makepyfile(DEFINITION_TEST.format(expected=str(expected)))
    pytester.runpytest("--keel-definition", "mine.yaml").assert_outcomes(passed=1)


def test_without_either_it_is_docker_host(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(DEFINITION_TEST.format(expected=str(DEFAULT_IMAGE)))
    pytester.runpytest().assert_outcomes(passed=1)


def test_this_repositorys_tests_boot_an_image_with_the_debug_shell() -> None:
    # KeelVM.serial_command and the tests of a machine without SSH need it; the
    # default image, docker-host, must not have it.
    settings = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    configured = settings["tool"]["pytest"]["ini_options"]["keel_definition"]
    tested, default = load_definition(PROJECT_ROOT / configured), load_definition(DEFAULT_IMAGE)
    assert tested.debug_shell and not default.debug_shell
    # Otherwise the very image users get (named apart, so no build of one replaces
    # the other under build/).
    differences = {
        key for key in tested.resolved.keys() | default.resolved.keys()
        if tested.resolved.get(key) != default.resolved.get(key)
    }  # fmt: skip
    assert differences == {"name", "debug_shell"}
