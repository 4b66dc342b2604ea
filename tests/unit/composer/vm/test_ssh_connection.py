"""The login probe's connection: a second one when the first stays silent (QEMU holds
a connection opened before the guest had its address), and the first that answers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from composer.vm import ssh

BANNER = b"SSH-2.0-test\r\n"


class Listener:
    """A loopback server that treats its n-th connection (from 0) as on_connection says."""

    def __init__(self, on_connection: Callable[[int, socket.socket], None]) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.on_connection = on_connection
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.accepted.append(conn)
            self.on_connection(len(self.accepted) - 1, conn)

    def close(self) -> None:
        self.server.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def listen(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Listener]]:
    monkeypatch.setattr(ssh, "LOCALHOST", "127.0.0.1")
    monkeypatch.setattr(ssh, "NEXT_CONNECTION_AFTER", 0.3)
    made: list[Listener] = []

    def make(on_connection: Callable[[int, socket.socket], None]) -> Listener:
        made.append(Listener(on_connection))
        return made[-1]

    yield make
    for listener in made:
        listener.close()


def _is_closed_by_peer(conn: socket.socket) -> bool:
    """Whether the peer closed conn within 2 s (what it sent before is skipped)."""
    conn.settimeout(2)
    try:
        while conn.recv(4096):
            pass
    except TimeoutError:
        return False
    except OSError:
        pass
    return True


def test_the_banner_on_the_first_connection_is_left_for_the_login(
    listen: Callable[..., Listener],
) -> None:
    listener = listen(lambda n, conn: conn.sendall(BANNER))
    sock = ssh.first_answering_connection(listener.port, timeout=5)
    assert sock is not None
    with sock:
        assert sock.recv(64) == BANNER  # peeked, not consumed
    assert len(listener.accepted) == 1


def test_a_silent_connection_gets_another_and_is_closed(
    listen: Callable[..., Listener],
) -> None:
    # The first connection never answers (QEMU holding it); the second does.
    listener = listen(lambda n, conn: conn.sendall(BANNER) if n == 1 else None)
    sock = ssh.first_answering_connection(listener.port, timeout=5)
    assert sock is not None
    with sock:
        assert sock.recv(64) == BANNER
    assert len(listener.accepted) == 2
    assert _is_closed_by_peer(listener.accepted[0])


def test_a_connection_closed_at_once_is_retried(listen: Callable[..., Listener]) -> None:
    # Nothing listened in the guest: QEMU closes the connection without a word.
    listener = listen(lambda n, conn: conn.close() if n == 0 else conn.sendall(BANNER))
    sock = ssh.first_answering_connection(listener.port, timeout=5)
    assert sock is not None
    with sock:
        assert sock.recv(64) == BANNER


def test_no_answer_within_the_timeout_leaves_no_connection_open(
    listen: Callable[..., Listener],
) -> None:
    listener = listen(lambda n, conn: None)
    assert ssh.first_answering_connection(listener.port, timeout=2.0) is None
    # One every 0.3 s while none answers, but never more than MAX_CONNECTIONS at once.
    assert len(listener.accepted) == ssh.MAX_CONNECTIONS
    assert all(_is_closed_by_peer(conn) for conn in listener.accepted)


def test_nothing_on_the_port_is_no_connection(listen: Callable[..., Listener]) -> None:
    listener = listen(lambda n, conn: None)
    port = listener.port
    listener.close()
    assert ssh.first_answering_connection(port, timeout=0.5) is None


def test_banner_answers_only_for_ssh(listen: Callable[..., Listener]) -> None:
    assert ssh.banner_answers(listen(lambda n, conn: conn.sendall(BANNER)).port, timeout=5)
    assert not ssh.banner_answers(listen(lambda n, conn: conn.sendall(b"HTTP/1.1")).port, 5)
    assert not ssh.banner_answers(listen(lambda n, conn: None).port, timeout=0.5)


def test_a_failed_login_closes_its_connection(
    listen: Callable[..., Listener], tmp_path: Path
) -> None:
    # A banner, then no SSH: the login fails, and the connection it used is closed.
    listener = listen(lambda n, conn: conn.sendall(BANNER + b"not ssh\r\n" * 4))
    key = tmp_path / "id_ed25519"  # never read: the handshake fails first
    assert ssh.try_login(listener.port, key, timeout=3) == "waiting for the SSH banner"
    assert _is_closed_by_peer(listener.accepted[0])
