"""A repository server for the update tests and bench/delta.py: static files over
HTTP/1.1 on loopback, as `keel serve` gives them, counting every byte it sends
(headers included), so a test can tell what a delta update really transferred."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO

from composer.core.httpserving import in_thread


class CountingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, repo: Path) -> None:
        handler = functools.partial(CountingHandler, directory=str(repo))
        super().__init__(("127.0.0.1", 0), handler)
        self.lock = threading.Lock()
        self.sent = 0
        self.requests = 0
        self.connections = 0

    def count(self, sent: int = 0, requests: int = 0, connections: int = 0) -> None:
        with self.lock:
            self.sent += sent
            self.requests += requests
            self.connections += connections

    def reset(self) -> None:
        with self.lock:
            self.sent = self.requests = self.connections = 0


class _CountingWriter:
    def __init__(self, inner: BinaryIO, server: CountingServer) -> None:
        self.inner = inner
        self.server = server

    def write(self, data: bytes) -> int:
        self.server.count(sent=len(data))
        return self.inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class CountingHandler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CountingServer

    def setup(self) -> None:
        super().setup()
        self.server.count(connections=1)
        self.wfile = _CountingWriter(self.wfile, self.server)  # type: ignore[assignment,arg-type]

    def send_response(self, code: int, message: str | None = None) -> None:
        self.server.count(requests=1)
        super().send_response(code, message)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def counting(repo: Path) -> Iterator[tuple[CountingServer, str]]:
    server = CountingServer(repo)
    with in_thread(server, "keel-test-repo") as url:
        yield server, url
