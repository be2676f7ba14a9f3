"""The node's HTTP API server, on aiohttp's low-level server, hardened for a hostile LAN.

Owns routing, HTTPS (a TLS 1.3 context from `adapters.api_tls`), who is asking and with which
role (a verified client certificate or a bearer token, checked before a single body byte is
read; each route names the role it needs: read < operate < admin, 403 E_FORBIDDEN naming it),
a body cap per route (413 beyond it), caps on concurrent connections (in all and per peer address), a
deadline for headers (aiohttp's keep-alive timer also runs before the first request) and
for bodies, JSON answers for every error (400, 401, 404, 405, 408, 413, 500, 503), streamed
answers (`Stream`: server-sent events, at most `max_streams` at once, ended when the server
stops), a token cookie accepted on GET routes of role read (browsers), and
rate-limited logging of authentication failures with the peer addresses. Must not know
anything about Raft or the zone. aiohttp does the HTTP/1.1 parsing (header line and field
caps, chunked bodies); we use its low-level `web.Server` because the per-connection caps
need its `connection_made` hook.
"""

from __future__ import annotations

import asyncio
import json
import time
from asyncio import sslproto
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from meshems.core.access import ROLES, allows
from meshems.logs import Throttled, log

#: defaults sized for an operator API: a few CLI users, a dashboard, a monitoring system
MAX_CONNECTIONS = 256
MAX_CONNECTIONS_PER_PEER = 64
HEADER_TIMEOUT_S = 5.0
BODY_TIMEOUT_S = 5.0
MAX_JSON_DEPTH = 16
TLS_READ_BUFFER_BYTES = 16 * 1024
AUTH_FAILED = "API requests with a missing or wrong token"
#: concurrent streamed answers (server-sent events) per server
MAX_STREAMS = 16
#: the cookie a browser holds its token in (set by the dashboard's login, HttpOnly)
TOKEN_COOKIE = "meshems_token"


class BadRequest(ValueError):
    """A request body that cannot be what the route expects (answered with 400)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request comes from: `name` (a certificate's CN, a token's name), `role`, and
    `via` (cert, token, secret: the cluster secret's own token)."""

    name: str
    role: str
    via: str

    def may(self, role: str) -> bool:
        return allows(self.role, role)


#: (bearer token or None, the verified client certificate as `ssl` gives it or None) -> who
Authorize = Callable[[str | None, dict[str, Any] | None], Principal | None]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    peer: str = ""
    principal: Principal | None = None
    #: the wall clock when the request head arrived (peers' clock-offset measurement)
    received_wall_s: float = 0.0
    #: a streamed route's body, chunk by chunk (capped, each chunk within the body deadline)
    chunks: AsyncIterator[bytes] | None = None

    def json(self) -> Any:
        """The body as JSON (an empty body is `{}`); BadRequest when it is not JSON or nests
        deeper than MAX_JSON_DEPTH."""
        try:
            value = json.loads(self.body or b"{}")
        except (ValueError, RecursionError) as exc:
            raise BadRequest(f"the body is not JSON: {type(exc).__name__}") from None
        if _depth(value) > MAX_JSON_DEPTH:
            raise BadRequest(f"the body nests deeper than {MAX_JSON_DEPTH} levels")
        return value

    def json_object(self) -> dict[str, Any]:
        value = self.json()
        if not isinstance(value, dict):
            raise BadRequest(f"the body must be a JSON object, not {type(value).__name__}")
        return value


def _depth(value: Any) -> int:
    stack, deepest = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        if isinstance(item, dict):
            stack += [(v, depth + 1) for v in item.values()]
        elif isinstance(item, list):
            stack += [(v, depth + 1) for v in item]
    return deepest


@dataclass(frozen=True, slots=True)
class Raw:
    """A handler's payload sent as is, not as JSON: `body` with its own `content_type`
    (e.g. the Prometheus text format)."""

    body: bytes
    content_type: str
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Stream:
    """A handler's streamed payload: each chunk of `source` is written as it comes (e.g.
    server-sent events), until the source ends, the client leaves or the server stops."""

    source: AsyncIterator[bytes]
    content_type: str


Handler = Callable[[Request], Awaitable[tuple[int, Any]]]


@dataclass(frozen=True)
class Route:
    handler: Handler
    max_body: int  # bytes; 0 = the route takes no body
    role: str = "read"
    #: a GET route of role read that also takes `?token=` (a browser's login page)
    query_token: bool = False
    #: the handler reads the body itself from `Request.chunks` (an upload to a file)
    streamed: bool = False


class _TooLarge(Exception):
    """A streamed body went past its route's cap (answered with 413)."""


class _Stalled(Exception):
    """A streamed body's next chunk did not come within the body deadline (answered with 408)."""


def _error(status: int, code: str, message: str, close: bool = False) -> web.Response:
    resp = web.json_response({"ok": False, "code": code, "message": message}, status=status)
    if close:
        resp.force_close()  # do not wait for (or read) the rest of a refused body
    return resp


class _CappedServer(web.Server):
    """aiohttp's low-level server with caps on connections, in all and per peer address."""

    def __init__(self, api: HttpApi, **kwargs: Any) -> None:
        super().__init__(api._handle, **kwargs)
        self._api = api
        self._peer_of: dict[Any, str] = {}
        self._per_peer: Counter[str] = Counter()

    def connection_made(self, handler: Any, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if peer else "?"
        api = self._api
        if len(self._peer_of) >= api.max_connections or self._per_peer[host] >= api.max_per_peer:
            api.refused_connections.note(host, time.monotonic())
            transport.abort()
            return
        self._peer_of[handler] = host
        self._per_peer[host] += 1
        super().connection_made(handler, transport)

    def connection_lost(self, handler: Any, exc: BaseException | None = None) -> None:
        host = self._peer_of.pop(handler, None)
        if host is not None:
            self._per_peer[host] -= 1
            if self._per_peer[host] <= 0:
                del self._per_peer[host]
        super().connection_lost(handler, exc)


@dataclass
class HttpApi:
    check_token: Callable[[str | None], bool] | None = None
    name: str = "API"
    #: who a request comes from; without it a token `check_token` accepts is an admin
    authorize: Authorize | None = None
    max_connections: int = MAX_CONNECTIONS
    max_per_peer: int = MAX_CONNECTIONS_PER_PEER
    header_timeout_s: float = HEADER_TIMEOUT_S
    body_timeout_s: float = BODY_TIMEOUT_S
    max_streams: int = MAX_STREAMS
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    _runner: web.ServerRunner | None = None
    streams: int = 0
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    auth_failures: Throttled = field(
        default_factory=lambda: Throttled(
            "warning", "E_AUTH_FAIL", "API requests with a missing or wrong token"
        )
    )
    refused_connections: Throttled = field(
        default_factory=lambda: Throttled(
            "warning", "W_API_CONNECTIONS", "API connections refused over the caps"
        )
    )

    def route(
        self,
        method: str,
        path: str,
        handler: Handler,
        max_body: int = 0,
        role: str = "read",
        query_token: bool = False,
        streamed: bool = False,
    ) -> None:
        """Route `method path` to `handler`; a path ending in `/*` takes any one last segment."""
        if role not in ROLES:
            raise ValueError(f"{method} {path}: role must be one of {', '.join(ROLES)}, not {role!r}")
        if query_token and (method != "GET" or role != "read"):
            raise ValueError(f"{method} {path}: only a GET route of role read may take ?token=")
        self.routes[(method, path)] = Route(handler, max_body, role, query_token, streamed)

    def _who(self, request: web.BaseRequest, route: Route) -> Principal | None:
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer ") :].strip() if auth.startswith("Bearer ") else None
        browser = request.method == "GET" and route.role == "read"  # never a cookie for a change
        if token is None and browser:
            token = request.cookies.get(TOKEN_COOKIE) or None
        if route.query_token and "token" in request.query:
            token = request.query["token"]  # the one being logged in with is the one checked
        if self.authorize is not None:
            transport = request.transport
            peercert = transport.get_extra_info("peercert") if transport is not None else None
            return self.authorize(token, peercert or None)
        if self.check_token is not None and self.check_token(token):
            return Principal("token", "admin", "token")
        return None

    async def start(self, host: str, port: int, ssl_context: Any = None) -> None:
        if ssl_context is not None:
            # asyncio gives every TLS connection a read buffer of SSLProtocol.max_size (256 KiB)
            # the moment it is accepted, before any cap or credential check: 600 connections
            # of an attacker were 150 MB. Our requests are small; 16 KiB is one TLS record.
            sslproto.SSLProtocol.max_size = TLS_READ_BUFFER_BYTES
        server = _CappedServer(
            self,
            access_log=None,  # one line per request is a disk-filling attack surface
            keepalive_timeout=self.header_timeout_s,  # also the deadline for the first request
            lingering_time=0,  # never read (and buffer) a body we refused
            max_line_size=4096,
            max_field_size=4096,
            max_headers=32,
        )
        self._runner = web.ServerRunner(server, handle_signals=False)
        await self._runner.setup()
        self._stopping = asyncio.Event()
        await web.TCPSite(self._runner, host, port, reuse_address=True, ssl_context=ssl_context).start()

    async def stop(self) -> None:
        self._stopping.set()  # ends every stream first: cleanup waits for open handlers
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        received_wall_s = time.time()
        wild = request.path.rsplit("/", 1)[0] + "/*"
        route = self.routes.get((request.method, request.path)) or self.routes.get((request.method, wild))
        if route is None:
            if any(path in (request.path, wild) for _, path in self.routes):
                return _error(405, "E_METHOD", f"{request.method} is not allowed on {request.path}", True)
            return _error(404, "E_NOT_FOUND", f"no {request.method} {request.path}", True)
        peer = request.remote or "?"
        who = self._who(request, route)
        if who is None:
            self.auth_failures.note(peer, time.monotonic(), api=self.name)
            return _error(401, "E_AUTH_FAIL", "missing, wrong, expired or revoked credentials", close=True)
        if not who.may(route.role):
            msg = f"{request.method} {request.path} needs role {route.role}; "
            msg += f"{who.name} ({who.via}) has {who.role}"
            return _error(403, "E_FORBIDDEN", msg, close=True)
        length = request.content_length
        if length is not None and length > route.max_body:
            return _error(413, "E_TOO_LARGE", f"{request.path} takes at most {route.max_body} bytes", True)
        try:
            body = b"" if route.streamed else await self._read_body(request, route.max_body)
        except TimeoutError:
            return _error(408, "E_TIMEOUT", f"the body did not arrive within {self.body_timeout_s} s", True)
        if body is None:
            return _error(413, "E_TOO_LARGE", f"{request.path} takes at most {route.max_body} bytes", True)
        req = Request(
            request.method, request.path, dict(request.query), dict(request.headers), body, peer, who,
            received_wall_s, self._chunks(request, route.max_body) if route.streamed else None,
        )  # fmt: skip
        try:
            status, payload = await route.handler(req)
        except BadRequest as exc:
            return _error(400, "E_BAD_REQUEST", str(exc))
        except _TooLarge:
            return _error(413, "E_TOO_LARGE", f"{request.path} takes at most {route.max_body} bytes", True)
        except _Stalled:
            return _error(408, "E_TIMEOUT", f"the body stalled for {self.body_timeout_s} s", True)
        except Exception as exc:  # a handler bug must answer, not drop the connection
            log("error", "E_API_INTERNAL", f"{self.name} handler failed: {type(exc).__name__}: {exc}",
                path=request.path, peer=peer)  # fmt: skip
            return _error(500, "E_API_INTERNAL", f"internal error: {type(exc).__name__}")
        if isinstance(payload, Stream):
            return await self._stream(request, status, payload)
        if isinstance(payload, Raw):
            headers = {**(payload.headers or {}), "Content-Type": payload.content_type}
            return web.Response(body=payload.body, status=status, headers=headers)
        return web.json_response(payload, status=status, dumps=lambda v: json.dumps(v, default=str))

    async def _stream(self, request: web.BaseRequest, status: int, payload: Stream) -> web.StreamResponse:
        """Write `payload` chunk by chunk (503 E_BUSY over `max_streams`); a chunk the client
        does not take within `body_timeout_s` ends the stream, as does `stop()`."""
        if self.streams >= self.max_streams or self._stopping.is_set():
            await payload.source.aclose()
            return _error(503, "E_BUSY", f"{self.max_streams} streams are open on {self.name}; retry", True)
        self.streams += 1
        resp = web.StreamResponse(status=status, headers={
            "Content-Type": payload.content_type, "Cache-Control": "no-store", "X-Accel-Buffering": "no",
        })  # fmt: skip
        resp.force_close()  # the connection ends with the stream: it counts against the caps
        stopping = asyncio.ensure_future(self._stopping.wait())
        source = payload.source
        try:
            await resp.prepare(request)
            while True:
                chunk = asyncio.ensure_future(_next(source))
                done, _ = await asyncio.wait({chunk, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if chunk not in done:
                    chunk.cancel()
                    with suppress(asyncio.CancelledError, StopAsyncIteration):
                        await chunk
                    break
                data = chunk.result()
                if data is None:
                    break
                async with asyncio.timeout(self.body_timeout_s):
                    await resp.write(data)
        except (ConnectionError, TimeoutError, RuntimeError):
            pass  # the client left or stalled (aiohttp raises RuntimeError on a closed transport)
        finally:
            self.streams -= 1
            stopping.cancel()
            await source.aclose()
        return resp

    async def _read_body(self, request: web.BaseRequest, cap: int) -> bytes | None:
        """The whole body, or None when it is longer than `cap` (chunked bodies included)."""
        if not request.can_read_body:
            return b""
        chunks, size = [], 0
        async with asyncio.timeout(self.body_timeout_s):
            while True:
                chunk = await request.content.read(min(65536, cap + 1 - size) or 1)
                if not chunk:
                    return b"".join(chunks)
                size += len(chunk)
                if size > cap:
                    return None
                chunks.append(chunk)

    async def _chunks(self, request: web.BaseRequest, cap: int) -> AsyncIterator[bytes]:
        """A streamed body: each chunk within `body_timeout_s`, _TooLarge past `cap` in all."""
        size = 0
        while request.can_read_body:
            try:
                async with asyncio.timeout(self.body_timeout_s):
                    chunk = await request.content.read(1 << 20)
            except TimeoutError:
                raise _Stalled from None
            if not chunk:
                return
            size += len(chunk)
            if size > cap:
                raise _TooLarge
            yield chunk


async def _next(source: AsyncIterator[bytes]) -> bytes | None:
    """The source's next chunk, None at its end."""
    try:
        return await anext(source)
    except StopAsyncIteration:
        return None
