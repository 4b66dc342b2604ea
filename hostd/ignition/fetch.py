"""GET an http(s) URL for first boot: a size cap on every body, retries with backoff
on connection errors and 5xx (not on 4xx: asking again will not help), redirects
followed (never from https down to http), and a hard deadline, so a slow or
trickling server cannot stall first boot for ever. Standard library only (this runs
in the image's python3 and on the build side).

Timeouts follow Ignition's: `response_headers` bounds the wait for the response
headers of one attempt; `total` (httpTotal) bounds one fetch with all its retries.
On top, `stop` is the caller's deadline for all fetches of a config.

http.client and ssl are imported by the first fetch, not with the module: first-boot
provisioning imports it for every config, most of which fetch nothing, and the two
take about a tenth of a second to import under emulation, on the way to sshd."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

if TYPE_CHECKING:
    import http.client
    import ssl

from hostd.ignition.remote import url_problem

# Ignition's backoff: 200 ms, doubling, at most 5 s between attempts.
INITIAL_BACKOFF = 0.2
MAX_BACKOFF = 5.0
MAX_REDIRECTS = 10
CHUNK = 64 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)
_USER_AGENT = "keel-provision"


class FetchError(Exception):
    """The URL could not be fetched; the message says why (never a header value)."""


class _Retry(Exception):
    """A failure asking again may cure: connection errors, timeouts, 5xx."""


class _Watchdog:
    """Shuts a connection's socket when time is up: a socket timeout bounds one recv,
    so a server sending a byte at a time would otherwise never time out."""

    def __init__(self, connection: http.client.HTTPConnection) -> None:
        self.connection = connection
        self.fired = False
        self._timer: threading.Timer | None = None

    def arm(self, seconds: float) -> None:
        self.cancel()
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _fire(self) -> None:
        self.fired = True
        sock = self.connection.sock
        if sock is not None:
            # The plain socket's shutdown: SSLSocket's would race the reader.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


@dataclass
class Fetcher:
    stop: float  # time.monotonic() after which nothing more is fetched
    response_headers: float | None = 10.0  # None: no limit but stop
    total: float | None = None  # None: no limit but stop
    tls: ssl.SSLContext | None = None  # None: the system's CAs

    def get(self, url: str, headers: tuple[tuple[str, str], ...], limit: int) -> bytes:
        """The body of url (at most limit bytes), or FetchError."""
        now = time.monotonic()
        stop = self.stop if self.total is None else min(self.stop, now + self.total)
        backoff = INITIAL_BACKOFF
        attempts = 0
        while True:
            attempts += 1
            try:
                return self._follow(url, headers, limit, stop)
            except _Retry as error:
                failure = str(error)
            if time.monotonic() + backoff >= stop:
                raise FetchError(f"{failure} (gave up after {attempts} attempt(s): out of time)")
            time.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _follow(
        self, url: str, headers: tuple[tuple[str, str], ...], limit: int, stop: float
    ) -> bytes:
        for _ in range(MAX_REDIRECTS + 1):
            status, location, body = self._once(url, headers, limit, stop)
            if status not in _REDIRECTS:
                return body
            target = urljoin(url, location)
            parts, old = urlsplit(target), urlsplit(url)
            if parts.scheme not in ("http", "https") or url_problem(target):
                raise FetchError(f"redirected to an unusable URL ({status})")
            if old.scheme == "https" and parts.scheme != "https":
                raise FetchError("redirected from https to plain http; refused")
            if (parts.scheme, parts.netloc) != (old.scheme, old.netloc):
                headers = ()  # headers (credentials) stay with the server they were for
            url = target
        raise FetchError(f"more than {MAX_REDIRECTS} redirects")

    def _connection(self, url: str, timeout: float) -> http.client.HTTPConnection:
        import http.client
        import ssl

        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
        if parts.scheme == "https":
            context = self.tls or ssl.create_default_context()
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _once(
        self, url: str, headers: tuple[tuple[str, str], ...], limit: int, stop: float
    ) -> tuple[int, str, bytes]:
        """One request: (status, Location, body); _Retry or FetchError on failure."""
        import http.client
        import ssl

        remaining = stop - time.monotonic()
        if remaining <= 0:
            raise _Retry("timed out")
        wait = remaining if self.response_headers is None else min(remaining, self.response_headers)
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection = self._connection(url, wait)
        watchdog = _Watchdog(connection)
        try:
            watchdog.arm(wait)
            connection.putrequest("GET", target)
            connection.putheader("User-Agent", _USER_AGENT)
            for name, value in headers:
                connection.putheader(name, value)
            connection.endheaders()
            response = connection.getresponse()
            watchdog.arm(stop - time.monotonic())
            if connection.sock is not None:
                connection.sock.settimeout(max(stop - time.monotonic(), 0.001))
            status = response.status
            if status >= 500:
                raise _Retry(f"the server answered {status} {response.reason}")
            if status in _REDIRECTS:
                return status, response.getheader("Location") or "", b""
            if status not in (200, 204):
                raise FetchError(f"the server answered {status} {response.reason}")
            return status, "", _body(response, limit, stop)
        except ssl.SSLCertVerificationError as error:
            # A certificate will not become trusted by asking again.
            raise FetchError(f"TLS: {error.verify_message or error}") from None
        except (OSError, http.client.HTTPException) as error:
            if watchdog.fired or isinstance(error, TimeoutError):
                raise _Retry("timed out") from None
            raise _Retry(f"{type(error).__name__}: {error}") from None
        finally:
            watchdog.cancel()
            connection.close()


def _body(response: http.client.HTTPResponse, limit: int, stop: float) -> bytes:
    if response.length is not None and response.length > limit:
        raise FetchError(f"the body is {response.length} bytes; at most {limit}")
    chunks: list[bytes] = []
    size = 0
    while chunk := response.read1(CHUNK):  # read1: one recv, so the clock is checked
        size += len(chunk)
        if size > limit:
            raise FetchError(f"the body is more than {limit} bytes")
        if time.monotonic() > stop:
            raise _Retry("timed out")
        chunks.append(chunk)
    if response.length:  # the server closed before Content-Length bytes came
        raise _Retry("the body was cut short")
    return b"".join(chunks)
