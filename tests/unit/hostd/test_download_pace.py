"""A mirror that trickles a bundle (issue 12, item 7) must not hold the update lock for
hours: each download has a minimum rate and an overall deadline. The repository is
served over HTTP on loopback; the limits are shortened so each test takes seconds."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from hostd import tufclient
from hostd.policy import Policy
from hostd.updater import Refused
from tests.unit.hostd.hosts import Host, bounded, entries, leftovers, lock_is_free


@dataclass
class Mirror:
    """How the mirror sends a bundle: step bytes, then a pause of pause seconds."""

    step: int
    pause: float
    stop: threading.Event
    # Close the connection after this many bytes of a bundle (a broken-off download).
    cut_at: int | None = None


def serve(repo: Path, mirror: Mirror) -> ThreadingHTTPServer:
    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(repo), **kwargs)

        def do_GET(self) -> None:
            if not self.path.startswith("/targets/"):
                super().do_GET()  # metadata at full speed
                return
            data = (repo / unquote(self.path.lstrip("/"))).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            for start in range(0, len(data), mirror.step):
                if mirror.stop.is_set() or (mirror.cut_at is not None and start >= mirror.cut_at):
                    return
                self.wfile.write(data[start : start + mirror.step])
                self.wfile.flush()
                time.sleep(mirror.pause)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


@pytest.fixture
def mirrored(host: Host) -> Iterator[tuple[Host, Mirror]]:
    """The host's repository served over HTTP, bundles at the mirror's pace."""
    mirror = Mirror(step=1, pause=0.0, stop=threading.Event())
    server = serve(host.repo, mirror)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    host.updater.paths.policy = lambda: Policy(repository=url, delta=False)
    yield host, mirror
    mirror.stop.set()  # ends a trickle still running
    server.shutdown()
    server.server_close()


def limits(monkeypatch: pytest.MonkeyPatch, **values: float) -> None:
    for name, value in values.items():
        monkeypatch.setattr(tufclient, name, value, raising=False)


def assert_ended_cleanly(host: Host, before: str, reason: str) -> None:
    assert lock_is_free(host.updater)
    status = host.updater.status()
    assert status["phase"] == "idle"
    assert status["last_result"]["result"] == "refused"
    assert reason in status["last_result"]["reason"]
    assert host.slot_digest("b") == before
    assert entries(host) == ["keel-1.0.0-a.conf"]
    assert leftovers(host) == []


def test_a_mirror_below_the_minimum_rate_is_given_up(
    mirrored: tuple[Host, Mirror], monkeypatch: pytest.MonkeyPatch
) -> None:
    host, mirror = mirrored
    host.publish("2.0.0")  # a bundle of about 70 kB
    mirror.step, mirror.pause = 16, 0.02  # under 1 KiB/s: over a minute for the bundle
    limits(
        monkeypatch,
        MIN_RATE=8 * 1024,
        RATE_WINDOW=0.5,
        RATE_GRACE=0.5,
        DEADLINE_FLOOR=60.0,
        DEADLINE_RATE=1e12,
    )
    before = host.slot_digest("b")
    started = time.monotonic()
    with pytest.raises(Refused, match=r"KiB/s over the last"):
        bounded(host.updater.update, 20)
    assert time.monotonic() - started < 5
    assert_ended_cleanly(host, before, "KiB/s over the last")


def test_a_download_past_its_deadline_is_given_up(
    mirrored: tuple[Host, Mirror], monkeypatch: pytest.MonkeyPatch
) -> None:
    host, mirror = mirrored
    host.publish("2.0.0", root_size=256 * 1024)
    mirror.step, mirror.pause = 4096, 0.05  # a steady 80 kB/s: about 3 s for the bundle
    limits(
        monkeypatch,
        MIN_RATE=1,
        RATE_WINDOW=0.5,
        RATE_GRACE=0.5,
        DEADLINE_FLOOR=1.0,
        DEADLINE_RATE=1e12,
    )
    before = host.slot_digest("b")
    with pytest.raises(Refused, match="did not finish within 1 s"):
        bounded(host.updater.update, 20)
    assert_ended_cleanly(host, before, "did not finish within 1 s")


def test_a_mirror_at_a_fair_pace_delivers(
    mirrored: tuple[Host, Mirror], monkeypatch: pytest.MonkeyPatch
) -> None:
    host, mirror = mirrored
    host.publish("2.0.0")
    mirror.step, mirror.pause = 16 * 1024, 0.01
    limits(monkeypatch, MIN_RATE=64 * 1024, RATE_WINDOW=0.2, RATE_GRACE=0.2)
    assert bounded(host.updater.update, 20)["result"] == "installed"
    assert leftovers(host) == []


def test_a_mirror_that_breaks_off_mid_bundle_ends_with_a_result(
    mirrored: tuple[Host, Mirror],
) -> None:
    host, mirror = mirrored
    host.publish("2.0.0")
    mirror.step, mirror.cut_at = 4096, 32 * 1024
    before = host.slot_digest("b")
    with pytest.raises(Refused, match="cannot download from the repository"):
        bounded(host.updater.update, 20)
    assert_ended_cleanly(host, before, "the download broke off")
