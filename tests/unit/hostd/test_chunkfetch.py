"""Chunks over HTTP (hostd/chunkfetch.py): a few kept-alive connections, retries on a
busy server's answers, and nothing longer than a chunk read."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from composer.core.httpserving import in_thread
from hostd.chunkfetch import PARALLEL, ChunkFetcher, FetchError, Wanted
from hostd.formats import blockindex
from hostd.formats.blockindex import BLOCK


class ChunkServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ChunkHandler)
        self.files: dict[str, bytes] = {}
        self.connections = 0
        self.requests = 0
        self.busy_answers = 0  # this many requests get a 503 first
        self.trickle = 0.0  # seconds between the bytes of a body
        self.lock = threading.Lock()


class ChunkHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ChunkServer

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests += 1
            busy = self.server.busy_answers > 0
            self.server.busy_answers -= busy
        body = self.server.files.get(self.path.lstrip("/"))
        status = 503 if busy else 200 if body is not None else 404
        body = body if status == 200 else b"no"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not self.server.trickle:
            self.wfile.write(body)
            return
        for byte in body:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(self.server.trickle)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[ChunkServer, str]]:
    chunk_server = ChunkServer()
    with in_thread(chunk_server, "chunks") as url:
        yield chunk_server, url


def publish(server: ChunkServer, count: int) -> list[Wanted]:
    wanted = []
    for number in range(count):
        block = number.to_bytes(4, "little") * (BLOCK // 4)
        digest = hashlib.sha256(block).digest()
        server.files[blockindex.chunk_path(digest)] = blockindex.compress_chunk(block)
        wanted.append(Wanted(digest, BLOCK))
    return wanted


def test_many_chunks_come_over_a_few_kept_alive_connections(
    server: tuple[ChunkServer, str],
) -> None:
    chunk_server, url = server
    wanted = publish(chunk_server, 200)
    got: dict[bytes, bytes] = {}
    fetcher = ChunkFetcher(url)
    fetcher.fetch_all(wanted, lambda item, block: got.__setitem__(item.digest, block))
    fetcher.close()
    assert len(got) == 200
    assert all(hashlib.sha256(block).digest() == digest for digest, block in got.items())
    assert chunk_server.requests == 200
    assert 1 <= chunk_server.connections <= PARALLEL
    assert fetcher.received == sum(len(chunk_server.files[p]) for p in chunk_server.files)


def test_a_busy_server_is_asked_again(server: tuple[ChunkServer, str]) -> None:
    chunk_server, url = server
    wanted = publish(chunk_server, 3)
    chunk_server.busy_answers = 2
    got: list[bytes] = []
    ChunkFetcher(url).fetch_all(wanted, lambda item, block: got.append(item.digest))
    assert sorted(got) == sorted(w.digest for w in wanted)
    assert chunk_server.requests == 5


def test_a_missing_or_oversized_chunk_fails_the_fetch(server: tuple[ChunkServer, str]) -> None:
    chunk_server, url = server
    wanted = publish(chunk_server, 2)
    del chunk_server.files[blockindex.chunk_path(wanted[1].digest)]
    with pytest.raises(FetchError, match="HTTP 404"):
        ChunkFetcher(url).fetch_all(wanted, lambda item, block: None)
    chunk_server.files[blockindex.chunk_path(wanted[1].digest)] = b"z" * (BLOCK * 4)
    with pytest.raises(FetchError, match="longer than any chunk"):
        ChunkFetcher(url).fetch_all(wanted, lambda item, block: None)


def test_a_mirror_that_trickles_is_given_up_at_the_deadline(
    server: tuple[ChunkServer, str],
) -> None:
    """Each byte comes well within the read timeout, so only the deadline ends it."""
    chunk_server, url = server
    wanted = publish(chunk_server, 1)
    chunk_server.trickle = 0.05
    began = time.monotonic()
    with pytest.raises(FetchError, match="did not arrive in time"):
        ChunkFetcher(url, deadline=0.5).fetch_all(wanted, lambda item, block: None)
    assert time.monotonic() - began < 5
