"""keel serve speaks HTTP/1.1: a client fetching many chunks keeps one connection."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from composer.publish import serve


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder that looks like a repository, served; yields it and host:port."""
    (tmp_path / "metadata").mkdir()
    (tmp_path / "metadata/root.json").write_text("{}")
    (tmp_path / "chunks/ab").mkdir(parents=True)
    (tmp_path / "chunks/ab/one.z").write_bytes(b"first chunk")
    (tmp_path / "chunks/ab/two.z").write_bytes(b"second")
    with serve.serving(tmp_path) as url:
        yield tmp_path, urlparse(url).netloc


def get(connection: http.client.HTTPConnection, path: str) -> http.client.HTTPResponse:
    connection.request("GET", path)
    response = connection.getresponse()
    response.read()
    return response


def test_two_requests_go_over_one_connection(served: tuple[Path, str]) -> None:
    _, address = served
    connection = http.client.HTTPConnection(address, timeout=10)
    first = get(connection, "/chunks/ab/one.z")
    socket = connection.sock
    assert socket is not None  # still open after the first answer
    second = get(connection, "/chunks/ab/two.z")
    assert connection.sock is socket
    assert (first.version, first.status, first.getheader("Content-Length")) == (11, 200, "11")
    assert (second.status, second.getheader("Content-Length")) == (200, "6")
    connection.close()


def test_a_missing_file_closes_the_connection_cleanly(served: tuple[Path, str]) -> None:
    _, address = served
    connection = http.client.HTTPConnection(address, timeout=10)
    missing = get(connection, "/chunks/ab/none.z")
    assert missing.status == 404
    assert missing.getheader("Connection") == "close"
    assert int(missing.getheader("Content-Length") or -1) > 0
    assert connection.sock is None  # closed, as announced, with the body read whole
    assert get(connection, "/chunks/ab/one.z").status == 200  # a new connection works


def test_a_folder_without_its_slash_is_redirected_on_the_same_connection(
    served: tuple[Path, str],
) -> None:
    _, address = served
    connection = http.client.HTTPConnection(address, timeout=10)
    redirect = get(connection, "/chunks")
    socket = connection.sock
    assert (redirect.status, redirect.getheader("Content-Length")) == (301, "0")
    assert get(connection, "/chunks/ab/one.z").status == 200
    assert connection.sock is socket
    connection.close()


def test_a_stopped_server_drops_the_connections_kept_alive(tmp_path: Path) -> None:
    (tmp_path / "metadata").mkdir()
    (tmp_path / "metadata/root.json").write_text("{}")
    with serve.serving(tmp_path) as url:
        connection = http.client.HTTPConnection(urlparse(url).netloc, timeout=10)
        assert get(connection, "/metadata/root.json").status == 200
    # Nothing answers any more, not even on the connection opened before.
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        get(connection, "/metadata/root.json")
    connection.close()
