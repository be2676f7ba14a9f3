"""HttpApi's streamed answers (`Stream`: server-sent events) and the browser's credentials:
a token cookie counts on GET routes of role read only, `?token=` only on a route that takes
it; streams are capped and end when the server stops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from meshems.ops.http import TOKEN_COOKIE, HttpApi, Principal, Request, Stream
from tests.conftest import free_ports

TOKEN = "s3cret"


async def _ticks() -> AsyncIterator[bytes]:
    n = 0
    while True:
        yield f"data: {n}\n\n".encode()
        n += 1
        await asyncio.sleep(0.02)


async def _events(req: Request) -> tuple[int, Any]:
    return 200, Stream(_ticks(), "text/event-stream")


async def _finite_source() -> AsyncIterator[bytes]:
    for n in range(3):
        yield f"data: {n}\n\n".encode()


async def _finite(req: Request) -> tuple[int, Any]:
    return 200, Stream(_finite_source(), "text/event-stream")


async def _json(req: Request) -> tuple[int, Any]:
    return 200, {"ok": True, "who": req.principal.name if req.principal else None}


def _authorize(token: str | None, peercert: dict[str, Any] | None) -> Principal | None:
    return Principal("op", "admin", "token") if token == TOKEN else None


async def _api(**kwargs: Any) -> tuple[HttpApi, str]:
    (port,) = free_ports(1)
    api = HttpApi(authorize=_authorize, **kwargs)
    api.route("GET", "/v1/events", _events)
    api.route("GET", "/v1/finite", _finite)
    api.route("GET", "/v1/read", _json)
    api.route("GET", "/v1/admin", _json, role="admin")
    api.route("POST", "/v1/change", _json, max_body=64)
    api.route("GET", "/login", _json, query_token=True)
    await api.start("127.0.0.1", port)
    return api, f"http://127.0.0.1:{port}"


async def _read_events(resp: aiohttp.ClientResponse, n: int) -> list[bytes]:
    out: list[bytes] = []
    async with asyncio.timeout(5):
        while len(out) < n:
            line = await resp.content.readline()
            if not line:
                break
            if line.startswith(b"data:"):
                out.append(line.strip())
    return out


def test_a_stream_is_written_chunk_by_chunk_and_a_finite_one_ends() -> None:
    async def go() -> tuple[str, list[bytes], list[bytes]]:
        api, url = await _api()
        try:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with aiohttp.ClientSession(headers=headers) as s:
                async with s.get(f"{url}/v1/events") as r:
                    ctype = r.headers["Content-Type"]
                    live = await _read_events(r, 5)
                async with s.get(f"{url}/v1/finite") as r:
                    finite = await _read_events(r, 10)
            await asyncio.sleep(0.1)
            assert api.streams == 0  # both ended: the client left, the source ran out
        finally:
            await api.stop()
        return ctype, live, finite

    ctype, live, finite = asyncio.run(go())
    assert ctype == "text/event-stream"
    assert live == [f"data: {n}".encode() for n in range(5)]
    assert finite == [b"data: 0", b"data: 1", b"data: 2"]


def test_streams_over_the_cap_get_503_and_stop_ends_the_open_ones() -> None:
    async def go() -> tuple[list[int], float]:
        api, url = await _api(max_streams=2)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as s:
            open_ = [await s.get(f"{url}/v1/events") for _ in range(2)]
            for r in open_:
                await _read_events(r, 1)
            async with s.get(f"{url}/v1/events") as third:
                statuses = [r.status for r in open_] + [third.status]
            started = time.monotonic()
            async with asyncio.timeout(5):  # aiohttp would wait 60 s for open handlers
                await api.stop()  # must not wait for the streams' clients to leave
            took = time.monotonic() - started
            for r in open_:
                async with asyncio.timeout(5):
                    rest = await r.content.read()  # ends: the server closed the stream
                assert rest is not None
                r.release()
        assert api.streams == 0
        return statuses, took

    statuses, took = asyncio.run(go())
    assert statuses == [200, 200, 503]
    assert took < 3.0, f"stop() took {took:.1f} s with two streams open"


@pytest.mark.parametrize(
    ("method", "path", "cookie", "status"),
    [
        ("GET", "/v1/read", TOKEN, 200),  # a read GET takes the cookie
        ("GET", "/v1/events", "wrong", 401),  # a wrong cookie is no credential
        ("GET", "/v1/admin", TOKEN, 401),  # not for a route above read
        ("POST", "/v1/change", TOKEN, 401),  # never for a change
    ],
)
def test_the_token_cookie_counts_on_read_gets_only(method: str, path: str, cookie: str, status: int) -> None:
    async def go() -> int:
        api, url = await _api()
        try:
            async with (
                aiohttp.ClientSession(cookies={TOKEN_COOKIE: cookie}) as s,
                s.request(method, f"{url}{path}") as r,
            ):
                return r.status
        finally:
            await api.stop()

    assert asyncio.run(go()) == status


def test_query_token_counts_only_where_the_route_takes_it_and_is_the_one_checked() -> None:
    async def go() -> list[int]:
        api, url = await _api()
        out = []
        try:
            async with aiohttp.ClientSession() as s:
                for path in (f"/login?token={TOKEN}", f"/v1/read?token={TOKEN}", "/login?token=wrong"):
                    headers = {"Authorization": f"Bearer {TOKEN}"} if "wrong" in path else {}
                    async with s.get(f"{url}{path}", headers=headers) as r:
                        out.append(r.status)
        finally:
            await api.stop()
        return out

    # a wrong ?token= is refused even beside a good bearer: the login must not set a bad cookie
    assert asyncio.run(go()) == [200, 401, 401]


def test_only_a_read_get_route_may_take_a_query_token() -> None:
    api = HttpApi(authorize=_authorize)
    with pytest.raises(ValueError, match="only a GET route of role read"):
        api.route("POST", "/x", _json, max_body=1, query_token=True)
    with pytest.raises(ValueError, match="only a GET route of role read"):
        api.route("GET", "/x", _json, role="operate", query_token=True)
