"""The Docker command line of an image's own packages, for the build machine.

`docker -H ssh://HOST` needs a client here, and the best match for a host's engine is
the client of its own packages (docker-cli in trixie, docker.io in bookworm). The build
already has it, in the cached root tarball of the image's package set, so it is taken
out of there: nothing is installed on the build machine (no engine gets set up) and no
package mirror is named."""

from __future__ import annotations

import tarfile
from pathlib import Path

from composer.build.bootstrap import root_tarball
from composer.core.errors import KeelError
from composer.core.files import replacing
from composer.core.paths import DEFAULT_IMAGE, cache_root
from composer.definition.load import load_definition

MEMBER = "./usr/bin/docker"


def docker_client(definition: Path = DEFAULT_IMAGE) -> Path:
    """The image's docker command, extracted once per package set into the cache."""
    defn = load_definition(definition)
    tarball = root_tarball(defn)
    if not tarball.exists():
        raise KeelError(
            f"{definition}: its packages are not in the package cache yet",
            hint=f"build it first: keel build {definition}",
        )
    dest = cache_root() / "docker-cli" / tarball.stem / "docker"
    if dest.exists():
        return dest
    with tarfile.open(tarball) as tar:
        try:
            member = tar.getmember(MEMBER)
        except KeyError:
            raise KeelError(
                f"{definition}: the image has no /usr/bin/docker",
                hint="add docker.io to its packages",
            ) from None
        source = tar.extractfile(member)
        if source is None:
            raise KeelError(f"{tarball}: {MEMBER} is not a regular file")
        with source, replacing(dest, mode=0o755) as out:
            while block := source.read(1 << 20):
                out.write(block)
    return dest
