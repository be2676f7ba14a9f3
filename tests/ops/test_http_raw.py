"""A handler may answer a body of its own content type (`Raw`), e.g. Prometheus' text
format; the role check still runs first, and JSON answers are unchanged."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from meshems.ops.http import HttpApi, Raw, Request
from tests.conftest import free_ports

TEXT = "text/plain; version=0.0.4; charset=utf-8"


async def _raw(req: Request) -> tuple[int, Any]:
    return 200, Raw(b"# TYPE up gauge\nup 1\n", TEXT)


async def _json(req: Request) -> tuple[int, Any]:
    return 200, {"ok": True}


async def _exchange(token: str | None) -> list[tuple[int, str, bytes]]:
    (port,) = free_ports(1)
    api = HttpApi(check_token=lambda t: t == "s3cret")
    api.route("GET", "/metrics", _raw)
    api.route("GET", "/v1/status", _json)
    await api.start("127.0.0.1", port)
    out = []
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession(headers=headers) as s:
            for path in ("/metrics", "/v1/status"):
                async with s.get(f"http://127.0.0.1:{port}{path}") as r:
                    out.append((r.status, r.headers["Content-Type"], await r.read()))
    finally:
        await api.stop()
    return out


def test_a_raw_payload_is_sent_as_is_with_its_content_type() -> None:
    (raw_status, raw_type, raw_body), (json_status, json_type, json_body) = asyncio.run(_exchange("s3cret"))
    assert (raw_status, raw_type, raw_body) == (200, TEXT, b"# TYPE up gauge\nup 1\n")
    assert (json_status, json_type, json_body) == (200, "application/json; charset=utf-8", b'{"ok": true}')


def test_a_raw_route_still_refuses_a_request_without_credentials() -> None:
    (status, ctype, body), _ = asyncio.run(_exchange(None))
    assert status == 401 and ctype.startswith("application/json") and b"E_AUTH_FAIL" in body
