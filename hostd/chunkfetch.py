"""Fetching a delta update's chunks from the repository: a few thousand small static
files, each checked against the signed index before anyone sees its block.

Over http(s) a handful of kept-alive connections (urllib3, which reconnects when a
server drops an idle one) serve the requests in parallel, with retries on the errors a
busy mirror or object store gives. file:// repositories (a copy on a USB stick) are
read through open_untrusted, as the metadata is."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import urllib3
from urllib3.util import Retry, Timeout

from hostd.files import UnsafeFile, open_untrusted
from hostd.formats import blockindex

# Parallel requests: enough to hide a round trip per 4 KiB chunk, few enough that a
# small mirror does not take it for abuse.
PARALLEL = 4
USER_AGENT = "keel-hostd"
RETRY = Retry(
    total=4,
    backoff_factor=0.5,
    status_forcelist=(429, 500, 502, 503, 504),
    allowed_methods=frozenset({"GET"}),
    raise_on_status=False,
)
TIMEOUT = Timeout(connect=10, read=30)


class FetchError(Exception):
    """A chunk could not be had or was not the block the index names."""


@dataclass(frozen=True)
class Wanted:
    digest: bytes
    size: int  # the block's bytes (the last block of a file may be short)


class ChunkFetcher:
    """deadline: seconds from now by which every fetch must be done. Each read returns
    within the read timeout, but a mirror sending a byte now and then passes that for
    hours; past the deadline the delta gives up (and the full bundle, with its own
    pace checks, is taken)."""

    def __init__(self, base_url: str, parallel: int = PARALLEL, deadline: float = 3600.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.parallel = parallel
        self.deadline = time.monotonic() + deadline
        self.received = 0  # compressed bytes, as they came over the wire
        self._count_lock = threading.Lock()
        self._pool: urllib3.PoolManager | None = None
        if not self.base_url.startswith("file://"):
            self._pool = _pool_for(self.base_url, parallel)

    def fetch_all(self, wanted: Iterable[Wanted], deliver: Callable[[Wanted, bytes], None]) -> None:
        """Fetch and check every wanted chunk; deliver(wanted, block) is called once per
        chunk, from one thread at a time, with the verified block. The first failure
        stops the rest and is raised as FetchError."""
        deliver_lock = threading.Lock()

        def one(item: Wanted) -> None:
            data = self._get(blockindex.chunk_path(item.digest))
            try:
                block = blockindex.decompress_chunk(data, item.digest, item.size)
            except blockindex.BlockIndexError as error:
                raise FetchError(str(error)) from None
            with deliver_lock:
                deliver(item, block)

        with ThreadPoolExecutor(self.parallel, thread_name_prefix="keel-chunk") as pool:
            futures = [pool.submit(one, item) for item in wanted]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    def _check_deadline(self, url: str) -> None:
        if time.monotonic() > self.deadline:
            raise FetchError(f"the chunks did not arrive in time (too slow at {url})")

    def _get(self, path: str) -> bytes:
        url = f"{self.base_url}/{path}"
        self._check_deadline(url)
        data = _read_file(url) if self._pool is None else self._get_http(url)
        with self._count_lock:
            self.received += len(data)
        return data

    def _get_http(self, url: str) -> bytes:
        assert self._pool is not None
        try:
            response = self._pool.request(
                "GET", url, preload_content=False, retries=RETRY, timeout=TIMEOUT
            )
        except urllib3.exceptions.HTTPError as error:
            raise FetchError(f"cannot fetch {url}: {error}") from None
        try:
            if response.status != 200:
                raise FetchError(f"{url} answered HTTP {response.status}")
            # At most one byte more than a chunk may be: a longer answer is not a chunk.
            data = b""
            while len(data) <= blockindex.MAX_CHUNK:
                piece = response.read1(blockindex.MAX_CHUNK + 1 - len(data))
                if not piece:
                    break
                data += piece
                self._check_deadline(url)
            if len(data) > blockindex.MAX_CHUNK:
                raise FetchError(f"{url} is longer than any chunk")
            return data
        except urllib3.exceptions.HTTPError as error:
            raise FetchError(f"fetching {url} broke off: {error}") from None
        finally:
            response.release_conn()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.clear()


def _pool_for(url: str, parallel: int) -> urllib3.PoolManager:
    """Kept-alive connections to the repository, through the proxy the environment
    names for its scheme (as ngclient does for the metadata)."""
    headers = {"User-Agent": USER_AGENT}
    scheme = urlparse(url).scheme
    proxy = urllib.request.getproxies().get(scheme)
    host = urlparse(url).hostname or ""
    if proxy and not urllib.request.proxy_bypass(host):
        return urllib3.ProxyManager(
            proxy, num_pools=2, maxsize=parallel, block=True, headers=headers
        )
    return urllib3.PoolManager(num_pools=2, maxsize=parallel, block=True, headers=headers)


def _read_file(url: str) -> bytes:
    path = Path(unquote(urlparse(url).path))
    try:
        with open_untrusted(path) as handle:
            data = handle.read(blockindex.MAX_CHUNK + 1)
    except FileNotFoundError:
        raise FetchError(f"{path} not found") from None
    except (UnsafeFile, OSError) as error:
        raise FetchError(f"cannot read {path}: {error}") from None
    if len(data) > blockindex.MAX_CHUNK:
        raise FetchError(f"{path} is longer than any chunk")
    return data
