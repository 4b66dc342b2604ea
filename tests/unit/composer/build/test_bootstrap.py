from collections.abc import Callable

from composer.build import bootstrap
from composer.core.errors import KeelError

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
