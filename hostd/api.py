"""hostd's JSON API on a unix socket (/run/keel/hostd.sock), for keelctl.

Plain HTTP/1.1 over a unix stream socket with the standard library: GET for reading,
POST for verbs. The socket is root-only (mode 0600): every verb changes the OS.
On a host, systemd holds the socket (keel-hostd.socket) and passes it to hostd, so a
keelctl started before hostd is up waits for it instead of finding no socket.

  GET  /v1/status     booted and other slot, update phase, last result, policy
  GET  /v1/history    the recorded update events
  POST /v1/check      ask the repository for a newer version
  POST /v1/update     {"bundle": path?, "metadata": url?, "reboot": bool}
  POST /v1/rollback   {"reboot": bool}
A refusal is HTTP 409 with {"error": reason}.

A request is read under bounds, so no client holds one of hostd's threads for long: a
body of at most MAX_BODY bytes (a negative or larger Content-Length is answered 400
or 413 without reading), READ_TIMEOUT for each read, and REQUEST_DEADLINE for the
whole request (a client sending a byte now and then passes every read timeout)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable, MutableMapping
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

from hostd.updater import Refused, Updater

log = logging.getLogger("keel.hostd")

SOCKET = Path("/run/keel/hostd.sock")
# The first file descriptor systemd passes to a socket-activated service (sd_listen_fds(3)).
LISTEN_FDS_START = 3
MAX_BODY = 64 * 1024
# After refusing a request: how much more of it hostd reads (and drops) before closing.
DRAIN_LIMIT = 16 * MAX_BODY
READ_TIMEOUT = 5.0
REQUEST_DEADLINE = 15.0


class BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def routes(updater: Updater) -> dict[tuple[str, str], Callable[[dict[str, Any]], Any]]:
    return {
        ("GET", "/v1/status"): lambda _: updater.status(),
        ("GET", "/v1/history"): lambda _: updater.history(),
        ("POST", "/v1/check"): lambda _: updater.check(),
        ("POST", "/v1/update"): lambda body: updater.update(
            bundle=Path(body["bundle"]) if body.get("bundle") else None,
            metadata=body.get("metadata") or None,
            reboot=bool(body.get("reboot")),
        ),
        ("POST", "/v1/rollback"): lambda body: updater.rollback(
            reboot=bool(body.get("reboot", True))
        ),
    }


class Handler(BaseHTTPRequestHandler):
    # Set on the subclass that serve() makes, so one handler class serves one updater.
    table: ClassVar[dict[tuple[str, str], Callable[[dict[str, Any]], Any]]] = {}

    def _answer(self, status: int, payload: Any) -> None:
        body = json.dumps(payload, indent=2).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def setup(self) -> None:
        super().setup()
        # The module's values at each connection, so tests can shorten them.
        self.connection.settimeout(READ_TIMEOUT)
        self.late = threading.Event()
        self.reading = threading.Timer(REQUEST_DEADLINE, self._stop_reading)
        self.reading.daemon = True
        self.reading.start()

    def _stop_reading(self) -> None:
        """The request took too long to arrive: end its reads (they see end of file,
        which would make a cut request look complete, hence `late`); the connection
        stays open for the answer."""
        self.late.set()
        with contextlib.suppress(OSError):  # already closed
            self.connection.shutdown(socket.SHUT_RD)

    def finish(self) -> None:
        self.reading.cancel()
        super().finish()

    def _body(self) -> dict[str, Any]:
        text = self.headers.get("Content-Length") or "0"
        try:
            length = int(text)
        except ValueError:
            raise BadRequest(400, f"Content-Length {text!r} is not a number") from None
        if length < 0:
            raise BadRequest(400, f"Content-Length {length} is negative")
        if length > MAX_BODY:
            raise BadRequest(413, f"the request body is larger than {MAX_BODY} bytes")
        try:
            raw = self.rfile.read(length)
        except TimeoutError:
            raise BadRequest(408, "the request body did not arrive in time") from None
        if self.late.is_set():
            raise BadRequest(408, f"the request did not arrive within {REQUEST_DEADLINE:.0f} s")
        # The request is read: what follows (an update) may take minutes.
        self.reading.cancel()
        if len(raw) < length:
            raise BadRequest(400, f"the request body ended after {len(raw)} of {length} bytes")
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise BadRequest(400, "the request body is not JSON") from None
        if not isinstance(body, dict):
            raise BadRequest(400, "the request body must be a JSON object")
        return body

    def _drop_the_rest(self) -> None:
        """Read and drop what the client still sends (up to DRAIN_LIMIT) before the
        connection closes: closing a unix socket with unread data resets it, and the
        client would lose the answer. READ_TIMEOUT and the request deadline bound it."""
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)  # the answer is complete
            left = DRAIN_LIMIT
            while left > 0 and (block := self.rfile.read1(min(left, MAX_BODY))):
                left -= len(block)

    def _dispatch(self, method: str) -> None:
        route = self.table.get((method, self.path))
        if route is None:
            self._answer(404, {"error": f"no such endpoint: {method} {self.path}"})
            return
        try:
            body = self._body()
        except BadRequest as bad:
            self.close_connection = True
            self._answer(bad.status, {"error": str(bad)})
            self._drop_the_rest()
            return
        try:
            self._answer(200, route(body))
        except Refused as refusal:
            self._answer(409, {"error": str(refusal)})
        except Exception as error:  # the daemon stays up; the client sees why
            log.exception("API %s %s failed", method, self.path)
            self._answer(500, {"error": f"{type(error).__name__}: {error}"})

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def address_string(self) -> str:
        return "keelctl"  # unix sockets have no client address

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("API: " + format, *args)


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def passed_socket(environ: MutableMapping[str, str] | None = None) -> socket.socket | None:
    """The listening socket systemd passed to this process (LISTEN_PID and LISTEN_FDS,
    sd_listen_fds(3)), or None when it passed none. The variables are removed, so no
    child process takes them for its own."""
    if environ is None:
        environ = os.environ
    if environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = environ.get("LISTEN_FDS", "")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(name, None)
    if count != "1":
        raise RuntimeError(
            f"systemd passed {count or 'no'} sockets; keel-hostd.socket must listen on "
            f"exactly one, {SOCKET}"
        )
    passed = socket.socket(fileno=LISTEN_FDS_START)
    if passed.family != socket.AF_UNIX or passed.type != socket.SOCK_STREAM:
        passed.detach()
        raise RuntimeError(f"the socket systemd passed is not a unix stream socket ({SOCKET})")
    return passed


def serve(
    updater: Updater, path: Path = SOCKET, environ: MutableMapping[str, str] | None = None
) -> UnixServer:
    """The server on the socket systemd passed, or else on path, bound here (root only);
    the caller runs it."""
    handler = type("BoundHandler", (Handler,), {"table": routes(updater)})
    passed = passed_socket(environ)
    if passed is not None:
        server = UnixServer(str(path), handler, bind_and_activate=False)
        server.socket.close()
        server.socket = passed
        return server
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    old_umask = os.umask(0o177)
    try:
        server = UnixServer(str(path), handler)
    finally:
        os.umask(old_umask)
    return server
