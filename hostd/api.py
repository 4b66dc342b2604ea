"""hostd's JSON API on a unix socket (/run/keel/hostd.sock), for keelctl.

Plain HTTP/1.1 over a unix stream socket with the standard library: GET for reading,
POST for verbs. The socket is root-only (mode 0600): every verb changes the OS.

  GET  /v1/status     booted and other slot, update phase, last result, policy
  GET  /v1/history    the recorded update events
  POST /v1/check      ask the repository for a newer version
  POST /v1/update     {"bundle": path?, "metadata": url?, "reboot": bool}
  POST /v1/rollback   {"reboot": bool}
A refusal is HTTP 409 with {"error": reason}."""

from __future__ import annotations

import json
import logging
import os
import socketserver
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

from hostd.updater import Refused, Updater

log = logging.getLogger("keel.hostd")

SOCKET = Path("/run/keel/hostd.sock")


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

    def _dispatch(self, method: str) -> None:
        route = self.table.get((method, self.path))
        if route is None:
            self._answer(404, {"error": f"no such endpoint: {method} {self.path}"})
            return
        body: dict[str, Any] = {}
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError:
                self._answer(400, {"error": "the request body is not JSON"})
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


def serve(updater: Updater, path: Path = SOCKET) -> UnixServer:
    """Bind the socket (root only) and return the server; the caller runs it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    handler = type("BoundHandler", (Handler,), {"table": routes(updater)})
    old_umask = os.umask(0o177)
    try:
        server = UnixServer(str(path), handler)
    finally:
        os.umask(old_umask)
    return server
