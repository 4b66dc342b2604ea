"""`keel serve`: an update repository over HTTP, for development and tests.

A repository is plain static files, so any web server can host it in production; this
one is the standard library's, bound to loopback only, since it has no TLS and no
access control. A guest under QEMU user networking reaches the host's loopback as
10.0.2.2, so http://10.0.2.2:PORT/ is the repository URL to bake into a test image."""

from __future__ import annotations

import functools
import ipaddress
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from composer.core.errors import KeelError
from composer.core.httpserving import in_thread, server_url

LOOPBACK = "127.0.0.1"


class _QuietHandler(SimpleHTTPRequestHandler):
    """One short line per request on stderr, no banner, no reverse DNS."""

    def log_message(self, format: str, *args: Any) -> None:
        print(f"keel serve: {format % args}", file=sys.stderr, flush=True)

    def log_error(self, format: str, *args: Any) -> None:
        pass  # the request line that follows already shows the status

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.log_message("%s %s %s", self.command, self.path, code)


def _check_loopback(bind: str) -> None:
    try:
        loopback = bind == "localhost" or ipaddress.ip_address(bind).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise KeelError(
            f"refusing to serve on {bind}: `keel serve` binds to loopback only",
            hint="host a repository for other machines with any static web server",
        )


def make_server(repo: Path, bind: str = LOOPBACK, port: int = 0) -> ThreadingHTTPServer:
    """A server for repo's files on bind:port (port 0: any free port)."""
    _check_loopback(bind)
    if not (repo / "metadata" / "root.json").is_file():
        raise KeelError(
            f"{repo} is not an update repository (no metadata/root.json)",
            hint="create one with `keel publish ARTIFACT --repo DIR --keys KEYDIR`",
        )
    handler = functools.partial(_QuietHandler, directory=str(repo))
    try:
        server = ThreadingHTTPServer((bind, port), handler)
    except OSError as error:
        raise KeelError(f"cannot listen on {bind}:{port}: {error.strerror}") from None
    server.daemon_threads = True
    return server


@contextmanager
def serving(repo: Path, bind: str = LOOPBACK, port: int = 0) -> Iterator[str]:
    """Serve repo in a background thread for the duration of the block; yields the URL."""
    with in_thread(make_server(repo, bind, port), "keel-serve") as url:
        yield url


def serve_forever(repo: Path, bind: str = LOOPBACK, port: int = 0) -> None:
    """Serve until interrupted; the URL goes to stdout first, for scripts to read."""
    server = make_server(repo, bind, port)
    print(server_url(server), flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
