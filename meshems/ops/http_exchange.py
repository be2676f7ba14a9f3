"""One HTTP/1.1 request and its answer over a socket (TLS when given a context), for the node
API client.

Owns the wire format of one exchange (`Connection: close`, Content-Length or chunked
answers, caps on head and body size). Must not retry or interpret answers (ops.client does).
Exists because `http.client` costs about 45 ms of imports (email, ssl) on every CLI call.
"""

from __future__ import annotations

import socket
from typing import Any

#: an answer's status line and headers; the node API's are a few hundred bytes
MAX_HEAD_BYTES = 64 * 1024
#: an answer's body (status, setpoints and devices of a large zone are well under this)
MAX_BODY_BYTES = 64 * 1024 * 1024
_RECV_BYTES = 65536


class HttpError(Exception):
    """The peer's answer is not a well-formed HTTP/1.1 answer, or it is too large."""


def exchange(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout_s: float = 2.0,
    ssl_context: Any = None,
) -> tuple[int, bytes]:
    """Send one request and return (status, body). `timeout_s` bounds the connect and every
    read, as http.client's timeout does. Raises OSError (refused, reset, timed out) or
    HttpError."""
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {f'[{host}]' if ':' in host else host}:{port}",
        "Accept-Encoding: identity",
        "Connection: close",
    ]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection((host, port), timeout=timeout_s) as raw:
        sock = ssl_context.wrap_socket(raw, server_hostname=host) if ssl_context is not None else raw
        with sock:
            sock.sendall(request)
            return _read_answer(sock)


def _read_answer(sock: socket.socket) -> tuple[int, bytes]:
    buf = bytearray()
    while (end := buf.find(b"\r\n\r\n")) < 0:
        if len(buf) > MAX_HEAD_BYTES:
            raise HttpError(f"answer head longer than {MAX_HEAD_BYTES} bytes")
        chunk = sock.recv(_RECV_BYTES)
        if not chunk:
            raise HttpError("connection closed before an answer" if not buf else "answer cut inside its head")
        buf += chunk
    status_line, *header_lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit() or rest[3:4] not in ("", " "):
        raise HttpError(f"not an HTTP/1.1 status line: {status_line[:60]!r}")
    fields: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(f"malformed header line: {line[:60]!r}")
        fields[name.lower()] = value.strip()
    body = bytearray(buf[end + 4 :])
    if "chunked" in fields.get("transfer-encoding", "").lower():
        return int(code), _dechunk(_read_to_end(sock, body))
    length = fields.get("content-length")
    if length is None:
        return int(code), bytes(_read_to_end(sock, body))
    if not length.isdigit() or int(length) > MAX_BODY_BYTES:
        raise HttpError(f"bad or too large Content-Length: {length[:20]!r}")
    want = int(length)
    while len(body) < want:
        chunk = sock.recv(min(_RECV_BYTES, want - len(body)))
        if not chunk:
            raise HttpError(f"answer cut after {len(body)} of {want} bytes")
        body += chunk
    return int(code), bytes(body[:want])


def _read_to_end(sock: socket.socket, body: bytearray) -> bytearray:
    while True:
        if len(body) > MAX_BODY_BYTES:
            raise HttpError(f"answer body longer than {MAX_BODY_BYTES} bytes")
        chunk = sock.recv(_RECV_BYTES)
        if not chunk:
            return body
        body += chunk


def _dechunk(data: bytearray) -> bytes:
    out = bytearray()
    pos = 0
    while True:
        eol = data.find(b"\r\n", pos)
        size_text = bytes(data[pos:eol]).split(b";", 1)[0].strip() if eol >= 0 else b""
        try:
            size = int(size_text, 16)
        except ValueError:
            raise HttpError(f"bad chunk size {size_text[:20]!r}") from None
        if size == 0:
            return bytes(out)
        start = eol + 2
        if size < 0 or data[start + size : start + size + 2] != b"\r\n":
            raise HttpError("chunked answer cut or malformed")
        out += data[start : start + size]
        pos = start + size + 2
