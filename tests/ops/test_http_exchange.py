"""One HTTP/1.1 exchange over a plain socket: what is sent, the answers the node API gives
(Content-Length, chunked, close-delimited), and cut, malformed or oversized answers refused."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from meshems.ops import http_exchange
from meshems.ops.http_exchange import HttpError, exchange


class OneShot:
    """A server on 127.0.0.1 that reads one request head (and body) and answers `reply`."""

    def __init__(self, reply: bytes) -> None:
        self.reply, self.request = reply, b""
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(5)
            while b"\r\n\r\n" not in self.request:
                self.request += conn.recv(4096)
            head, _, body = self.request.partition(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    while len(body) < int(line.split(b":")[1]):
                        body += conn.recv(4096)
            self.request = head + b"\r\n\r\n" + body
            conn.sendall(self.reply)

    def close(self) -> None:
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def serve() -> Iterator:
    servers: list[OneShot] = []

    def start(reply: bytes) -> OneShot:
        servers.append(OneShot(reply))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def test_a_post_sends_its_body_and_headers_and_reads_a_sized_answer(serve) -> None:  # type: ignore[no-untyped-def]
    s = serve(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok": true}')
    status, body = exchange(
        "127.0.0.1", s.port, "POST", "/v1/propose", b"\x81\xa1", {"Authorization": "Bearer t"}
    )
    assert (status, body) == (200, b'{"ok": true')  # exactly Content-Length bytes
    head = s.request.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"POST /v1/propose HTTP/1.1"
    assert {b"Host: 127.0.0.1:%d" % s.port, b"Content-Length: 2", b"Authorization: Bearer t",
            b"Connection: close"} <= set(head)  # fmt: skip
    assert s.request.endswith(b"\r\n\r\n\x81\xa1")


def test_a_get_has_no_body_and_reads_chunked_or_close_delimited_answers(serve) -> None:  # type: ignore[no-untyped-def]
    s = serve(
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnull\r\n3;x=y\r\n[1]\r\n0\r\n\r\n"
    )
    assert exchange("127.0.0.1", s.port, "GET", "/v1/x") == (404, b"null[1]")
    assert b"Content-Length" not in s.request
    s = serve(b"HTTP/1.1 200 OK\r\n\r\n{}")
    assert exchange("127.0.0.1", s.port, "GET", "/") == (200, b"{}")


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (b"", "closed before an answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "cut inside its head"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.1 status line"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "cut after 3 of 10 bytes"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad or too large Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nabc", "cut or malformed"),
    ],
    ids=["empty", "cut head", "not http", "bad header", "cut body", "bad length", "bad chunk", "cut chunk"],
)
def test_bad_answers_are_refused(serve, reply: bytes, match: str) -> None:  # type: ignore[no-untyped-def]
    s = serve(reply)
    with pytest.raises(HttpError, match=match):
        exchange("127.0.0.1", s.port, "GET", "/")


def test_oversized_answers_are_refused(serve, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(http_exchange, "MAX_HEAD_BYTES", 100)
    s = serve(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 100)
    with pytest.raises(HttpError, match="head longer than 100"):
        exchange("127.0.0.1", s.port, "GET", "/")
    monkeypatch.setattr(http_exchange, "MAX_BODY_BYTES", 100)
    s = serve(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 200)
    with pytest.raises(HttpError, match="body longer than 100"):
        exchange("127.0.0.1", s.port, "GET", "/")


def test_a_refused_connection_is_an_os_error() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(OSError):
        exchange("127.0.0.1", port, "GET", "/", timeout_s=1)
