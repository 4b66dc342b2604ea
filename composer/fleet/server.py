"""`keel fleetlock serve`: a FleetLock server that keeps every bit of its state in etcd.

  POST /v1/pre-reboot     take a slot in the client's group (recursive)
  POST /v1/steady-state   give it back (if held)
  GET  /-/healthy         200 when etcd answers

Both POSTs need the header `fleet-lock-protocol: true` and the body
{"client_params": {"id": ID, "group": GROUP}}. 200 with an empty body is success; an
error is {"kind", "value"} with airlock's kinds (invalid_client_identity 400,
failed_lock 500 when the group is full, failed_sem_init 500 when etcd fails).

Nothing is kept between requests, so any number of instances (and airlock servers)
can serve one fleet from one etcd. Each lock and unlock is one line on stderr, with
the time, so a test or an operator can read the order of holders."""

from __future__ import annotations

import json
import re
import ssl
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

from composer.core.errors import KeelError
from composer.core.httpserving import in_thread, server_url
from composer.fleet.etcd import EtcdError
from composer.fleet.semaphore import SemaphoreError, SemaphoreFull, Semaphores

DEFAULT_PORT = 3333
GROUP = re.compile(r"^[a-zA-Z0-9.-]{1,253}$")
# A client id: Zincati and hostd send 32 hex digits; airlock takes any non-empty string.
MAX_ID = 256
MAX_BODY = 8 * 1024
READ_TIMEOUT = 10.0


class Refusal(Exception):
    def __init__(self, status: int, kind: str, value: str) -> None:
        super().__init__(value)
        self.status, self.kind, self.value = status, kind, value


def client_identity(header: str | None, raw: bytes) -> tuple[str, str]:
    """(group, id) of a request, or a Refusal saying what is wrong with it."""
    if header != "true":
        raise Refusal(400, "invalid_client_identity", "wrong 'fleet-lock-protocol' header")
    try:
        body = json.loads(raw)
        params = body["client_params"]
        group, node = params.get("group"), params.get("id")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise Refusal(400, "invalid_client_identity", "the body is not FleetLock JSON") from None
    if not isinstance(group, str) or not group:
        raise Refusal(400, "invalid_client_identity", "empty client group")
    if not GROUP.match(group):
        raise Refusal(400, "invalid_client_identity", f"group must match {GROUP.pattern}")
    if not isinstance(node, str) or not node:
        raise Refusal(400, "invalid_client_identity", "empty client ID")
    if len(node) > MAX_ID or not node.isprintable():
        raise Refusal(
            400, "invalid_client_identity", f"client ID longer than {MAX_ID} or unprintable"
        )
    return group, node


def timestamp(now: float) -> str:
    """UTC with milliseconds, from one reading of the clock (seconds and milliseconds
    read apart could straddle a second and go back in time)."""
    millis = int(now * 1000)
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(millis // 1000))
    return f"{seconds}.{millis % 1000:03d}Z"


def log(message: str) -> None:
    print(f"keel fleetlock: {timestamp(time.time())} {message}", file=sys.stderr, flush=True)


class Handler(BaseHTTPRequestHandler):
    semaphores: ClassVar[Semaphores]
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(READ_TIMEOUT)

    def _answer(self, status: int, payload: dict[str, Any] | None) -> None:
        body = json.dumps(payload).encode() if payload is not None else b""
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        text = self.headers.get("Content-Length") or "0"
        try:
            length = int(text)
        except ValueError:
            raise Refusal(400, "invalid_client_identity", "bad Content-Length") from None
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            raise Refusal(413, "invalid_client_identity", f"body larger than {MAX_BODY} bytes")
        return self.rfile.read(length)

    def do_POST(self) -> None:
        try:
            if self.path not in ("/v1/pre-reboot", "/v1/steady-state"):
                self.close_connection = True
                raise Refusal(404, "not_found", f"no such endpoint: {self.path}")
            group, node = client_identity(self.headers.get("fleet-lock-protocol"), self._body())
            try:
                if self.path == "/v1/pre-reboot":
                    semaphore, new = self.semaphores.lock(group, node)
                    what = "lock" if new else "lock (already held)"
                else:
                    semaphore, new = self.semaphores.unlock(group, node)
                    what = "unlock" if new else "unlock (not held)"
            except SemaphoreFull as full:
                log(f"refused group={group} id={node}: {full}")
                raise Refusal(500, "failed_lock", str(full)) from None
            except (EtcdError, SemaphoreError) as error:
                log(f"etcd failed for group={group} id={node}: {error}")
                raise Refusal(500, "failed_sem_init", str(error)) from None
            log(f"{what} group={group} id={node} holders={','.join(semaphore.holders) or '-'}")
            self._answer(200, None)
        except Refusal as refusal:
            self._answer(refusal.status, {"kind": refusal.kind, "value": refusal.value})
        except TimeoutError:
            self.close_connection = True

    def do_GET(self) -> None:
        if self.path != "/-/healthy":
            self._answer(404, {"kind": "not_found", "value": f"no such endpoint: {self.path}"})
            return
        try:
            self.semaphores.read("default")
        except (EtcdError, SemaphoreError) as error:
            self._answer(503, {"kind": "etcd_unavailable", "value": str(error)})
            return
        self._answer(200, {"status": "ok"})

    def log_message(self, format: str, *args: Any) -> None:
        pass  # every lock and unlock is logged by do_POST


def make_server(
    semaphores: Semaphores,
    bind: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> ThreadingHTTPServer:
    handler = type("FleetLockHandler", (Handler,), {"semaphores": semaphores})
    try:
        server = ThreadingHTTPServer((bind, port), handler)
    except OSError as error:
        raise KeelError(f"cannot listen on {bind}:{port}: {error.strerror}") from None
    server.daemon_threads = True
    if tls_cert is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(tls_cert, tls_key)
        except (OSError, ssl.SSLError) as error:
            server.server_close()
            raise KeelError(f"cannot load the TLS certificate {tls_cert}: {error}") from None
        # The handshake in the request's own thread (at its first read, under its
        # timeout), not in accept(): a client that stalls it holds up nobody else.
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    return server


@contextmanager
def serving(semaphores: Semaphores, bind: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve in a background thread for the block (tests, the benchmark); yields the URL."""
    with in_thread(make_server(semaphores, bind, port), "keel-fleetlock") as url:
        yield url


def serve_forever(server: ThreadingHTTPServer) -> None:
    print(server_url(server), flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
