"""The suites table and the schema agree, and split packages expand."""

import json

from composer.core.paths import SCHEMA_FILE
from composer.definition.suites import DEFAULT_SUITE, SUITES, package_source, packages_to_install


def test_schema_lists_exactly_the_known_suites_with_the_same_default() -> None:
    suite = json.loads(SCHEMA_FILE.read_text())["properties"]["debian"]["properties"]["suite"]
    assert sorted(suite["enum"]) == sorted(SUITES)
    assert suite["default"] == DEFAULT_SUITE


def test_split_package_expands_in_place_once() -> None:
    listed = ("openssh-server", "docker.io", "docker-cli", "iptables")
    assert packages_to_install("trixie", listed) == (
        "openssh-server",
        "docker.io",
        "docker-cli",
        "iptables",
    )
    assert packages_to_install("bookworm", ("docker.io",)) == ("docker.io",)
    assert package_source("trixie", "docker-cli") == "docker.io"
    assert package_source("trixie", "iptables") == "iptables"


def test_trixie_gets_systemd_repart_with_systemd_and_bookworm_nothing_more() -> None:
    # keel-grow-var.service runs systemd-repart: its own package since trixie.
    assert packages_to_install("trixie", ("systemd", "udev")) == (
        "systemd",
        "systemd-repart",
        "udev",
    )
    assert packages_to_install("bookworm", ("systemd", "udev")) == ("systemd", "udev")
    assert package_source("trixie", "systemd-repart") == "systemd"
