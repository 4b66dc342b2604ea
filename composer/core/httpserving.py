"""What Keel's two HTTP servers (`keel serve`, `keel fleetlock serve`) share: the URL
a bound server answers on, and serving in a background thread for a block."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer


def server_url(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    scheme = "https" if isinstance(server.socket, ssl.SSLSocket) else "http"
    host = f"[{host!s}]" if ":" in str(host) else str(host)
    return f"{scheme}://{host}:{port}/"


@contextmanager
def in_thread(server: ThreadingHTTPServer, name: str) -> Iterator[str]:
    """Serve in a background thread for the block (tests, benchmarks); yields the URL."""
    # A short poll interval: shutdown() waits up to one interval, and tests stop often.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=name, daemon=True)
    thread.start()
    try:
        yield server_url(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
