"""What clients may hold of the API listener: a request's head must arrive
within `--header-timeout`, an idle keep-alive connection is closed after as
long, and at most `--max-connections` are open at once, the rest waiting in
the kernel's backlog; so that slow or idle clients cannot take the
descriptors the node's own work needs."""

import socket
import urllib.parse

import pytest

from conftest import Server

PARTIAL = b"GET /console/ HTTP/1.1\r\nHost: x\r\n"
WHOLE = b"GET /console/ HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def node(tmp_path):
    s = Server(tmp_path / "data", args=["--isolation", "process", "--header-timeout", "2",
                                        "--max-connections", "8"]).start()
    yield s
    s.stop()


def connect(node):
    host, port = urllib.parse.urlsplit(node.endpoint).netloc.split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def read_to_close(sock):
    """Everything the server sends until it closes the connection."""
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def closed_by_server(sock):
    """Whether the server has closed the connection by now (never waits)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False


def test_a_head_that_never_ends_and_an_idle_connection_are_closed(node):
    with connect(node) as slow:
        slow.sendall(PARTIAL)
        # Closed without an answer: the request never began.
        assert read_to_close(slow) == b""
    with connect(node) as idle:
        idle.sendall(WHOLE)
        # Answered, kept alive, and closed by the server once idle.
        answer = read_to_close(idle)
        assert answer.startswith(b"HTTP/1.1 200 OK") and answer.count(b"HTTP/1.1 ") == 1, answer[:200]


def test_clients_past_the_most_connections_wait_for_a_free_one(node):
    hogs = [connect(node) for _ in range(8)]
    try:
        for h in hogs:
            h.sendall(PARTIAL)
        with connect(node) as late:
            # Connected by the kernel, but not taken up by the node until a
            # slot frees: the first hog's head timeout is what frees one.
            late.sendall(WHOLE)
            answer = late.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 OK"), answer[:200]
            assert any(closed_by_server(h) for h in hogs), "answered while every slot was taken"
    finally:
        for h in hogs:
            h.close()
