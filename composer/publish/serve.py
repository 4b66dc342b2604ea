"""`keel serve`: an update repository over HTTP, for development and tests.

A repository is plain static files, so any web server can host it in production; this
one is the standard library's, bound to loopback only, since it has no TLS and no
access control. A guest under QEMU user networking reaches the host's loopback as
10.0.2.2, so http://10.0.2.2:PORT/ is the repository URL to bake into a test image."""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from composer.core.errors import KeelError
from composer.core.httpserving import in_thread, server_url

LOOPBACK = "127.0.0.1"


class _QuietHandler(SimpleHTTPRequestHandler):
    """One short line per request on stderr, no banner, no reverse DNS.

    HTTP/1.1, so a client keeps its connection for the next request: a delta update
    fetches thousands of small chunks. Every answer says its length (files, listings,
    redirects) or closes the connection (errors), as keep-alive needs."""

    protocol_version = "HTTP/1.1"
    # A kept-alive connection holds a thread; one whose client went silent is let go.
    timeout = 300

    def log_message(self, format: str, *args: Any) -> None:
        print(f"keel serve: {format % args}", file=sys.stderr, flush=True)

    def log_error(self, format: str, *args: Any) -> None:
        pass  # the request line that follows already shows the status

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.log_message("%s %s %s", self.command, self.path, code)


class _RepositoryServer(ThreadingHTTPServer):
    """Closes the connections clients keep alive when it closes, so a stopped server
    answers nothing more (the handler threads would otherwise go on serving them)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any) -> None:
        super().__init__(address, handler)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client dropping a kept-alive connection (a host rebooting mid-update) is
        # routine, not worth a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def server_close(self) -> None:
        super().server_close()
        with self._open_lock:
            still_open = list(self._open)
        for connection in still_open:
            # Wakes the handler waiting for the next request; it then ends.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


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
        return _RepositoryServer((bind, port), handler)
    except OSError as error:
        raise KeelError(f"cannot listen on {bind}:{port}: {error.strerror}") from None


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
