"""A minimal HTTP/1.1 server on asyncio for the node API (plain HTTP; TLS comes later).

Owns request parsing, routing and bearer-token checks. Handlers are async functions that
return (status, json-able body). Must not know anything about Raft or the zone.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 1 << 20
MAX_HEADER_LINES = 64


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    peer: str = ""

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


Handler = Callable[[Request], Awaitable[tuple[int, Any]]]
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    409: "Conflict",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass
class HttpApi:
    check_token: Callable[[str | None], bool]
    on_auth_fail: Callable[[Request], None] = lambda req: None
    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    server: asyncio.base_events.Server | None = None

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self._serve, host, port, reuse_address=True)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            req = await asyncio.wait_for(self._read(reader, writer), timeout=10)
            if req is None:
                return
            status, body = await self._dispatch(req)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            writer.close()
            return
        except ValueError as exc:
            status, body = 400, {"ok": False, "code": "E_BAD_REQUEST", "message": str(exc)}
        payload = json.dumps(body, default=str).encode()
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        try:
            writer.write(head + payload)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request | None:
        line = await reader.readline()
        if not line:
            return None
        try:
            method, target, _ = line.decode("latin-1").split(" ", 2)
        except ValueError:
            raise ValueError("malformed request line") from None
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADER_LINES):
            h = await reader.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        body = await reader.readexactly(length) if length else b""
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        peer = writer.get_extra_info("peername")
        return Request(method.upper(), url.path, query, headers, body, str(peer))

    async def _dispatch(self, req: Request) -> tuple[int, Any]:
        handler = self.routes.get((req.method, req.path))
        if handler is None:
            return 404, {
                "ok": False,
                "code": "E_NOT_FOUND",
                "message": f"no {req.method} {req.path}",
            }
        auth = req.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None
        if not self.check_token(token):
            self.on_auth_fail(req)
            return 401, {
                "ok": False,
                "code": "E_AUTH_FAIL",
                "message": "missing or wrong API token",
            }
        return await handler(req)
