"""hostd units started with `python3 -S` (no site module, so nothing from dist-packages)
import only the standard library and hostd: a later import of a Debian python3-*
package there would fail on the host at boot."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from composer.core.paths import OVERLAYS_DIR, PROJECT_ROOT

NO_SITE = re.compile(r"^ExecStart=/usr/bin/python3 -S -m (\S+)", re.MULTILINE)
UNITS = sorted(OVERLAYS_DIR.glob("*/usr/lib/systemd/system/*.service"))
NO_SITE_MODULES = [
    (unit.name, found.group(1))
    for unit in UNITS
    if (found := NO_SITE.search(unit.read_text())) is not None
]

CHECK = """
import importlib, sys
importlib.import_module(sys.argv[1])
outside = sorted(
    name for name in sys.modules
    if name.split(".")[0] not in (*sys.stdlib_module_names, "hostd", "__main__")
)
print(" ".join(outside))
"""


def test_the_boot_units_run_without_site() -> None:
    names = {unit for unit, _ in NO_SITE_MODULES}
    assert {"keel-provision.service", "keel-health.service", "keel-grow-var.service"} <= names


@pytest.mark.parametrize(("unit", "module"), NO_SITE_MODULES)
def test_a_no_site_unit_imports_only_the_standard_library_and_hostd(unit: str, module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-S", "-c", CHECK, module],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(PROJECT_ROOT), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, f"{unit}: {result.stderr}"
    assert result.stdout.strip() == "", f"{unit} imports {result.stdout.strip()}"


def test_provisioning_imports_tls_and_http_only_for_a_config_that_fetches() -> None:
    # keel-provision.service is on the way to sshd at first boot, where each import
    # is slow; a config with nothing remote needs neither module.
    result = subprocess.run(
        [sys.executable, "-S", "-c",
         "import sys, hostd.provision; print(sorted({'ssl', 'http.client'} & set(sys.modules)))"],
        capture_output=True, text=True, env={"PYTHONPATH": str(PROJECT_ROOT)}, check=True,
    )  # fmt: skip
    assert result.stdout.strip() == "[]"
