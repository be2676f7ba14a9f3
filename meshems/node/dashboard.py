"""The live web dashboard's routes (role read): the page and its assets, the browser login
that turns `/dashboard?token=T` into an HttpOnly cookie, and `GET /v1/events`, server-sent
events with one snapshot a second (the first event seeds the chart with the node's history).

Owns the HTTP side only; what a snapshot holds is `dashboard_feed`, the files are package data
under `meshems/dashboard/`.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any

from meshems.node.dashboard_feed import ImportHistory, snapshot
from meshems.node.views import Views
from meshems.ops.http import TOKEN_COOKIE, HttpApi, Raw, Request, Stream

#: path -> (file under meshems/dashboard, content type)
ASSETS = {
    "/dashboard/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/dashboard/app.css": ("app.css", "text/css; charset=utf-8"),
    "/dashboard/vendor/uPlot.iife.min.js": ("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "/dashboard/vendor/uPlot.min.css": ("vendor/uPlot.min.css", "text/css; charset=utf-8"),
    "/dashboard/vendor/uPlot.LICENSE": ("vendor/uPlot.LICENSE", "text/plain; charset=utf-8"),
}
EVENT_INTERVAL_S = 1.0
#: how long a browser keeps its login cookie
COOKIE_MAX_AGE_S = 12 * 3600
#: what a token may look like before it goes into a Set-Cookie header
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9._~+/=:-]{1,512}")
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def read_file(name: str) -> bytes:
    return resources.files("meshems").joinpath("dashboard", *name.split("/")).read_bytes()


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event: an optional `event:` line and the JSON on one `data:` line."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'), default=str)}\n\n".encode()


def login_cookie(token: str) -> str:
    return f"{TOKEN_COOKIE}={token}; Path=/; Max-Age={COOKIE_MAX_AGE_S}; HttpOnly; Secure; SameSite=Strict"


class Dashboard:
    """The dashboard of one node: its routes, its import history and its event feed."""

    def __init__(
        self,
        views: Views,
        interval_s: float = EVENT_INTERVAL_S,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.views, self.interval_s, self.wall = views, interval_s, wall
        self.clock = clock
        self._latest: tuple[float, bytes] | None = None  # (monotonic s, the encoded event)
        self.history = ImportHistory(views, wall)
        self.files = {path: (read_file(name), ctype) for path, (name, ctype) in ASSETS.items()}
        self.page_html = read_file("index.html")

    def install(self, api: HttpApi) -> None:
        api.route("GET", "/dashboard", self.page, query_token=True)
        for path in ASSETS:
            api.route("GET", path, self.asset)
        api.route("GET", "/v1/events", self.events)

    async def page(self, req: Request) -> tuple[int, Any]:
        """The page; with `?token=` (already checked by the API) the login: a cookie and a
        redirect to the bare URL, so the token leaves the address bar and the history."""
        token = req.query.get("token")
        if token is None:
            return 200, Raw(self.page_html, "text/html; charset=utf-8", PAGE_HEADERS)
        if not TOKEN_SHAPE.fullmatch(token):
            return 400, {
                "ok": False,
                "code": "E_BAD_REQUEST",
                "message": "the token has characters no token has",
            }
        headers = {"Location": "/dashboard", "Set-Cookie": login_cookie(token), **PAGE_HEADERS}
        return 303, Raw(b"logged in; go to /dashboard\n", "text/plain; charset=utf-8", headers)

    async def asset(self, req: Request) -> tuple[int, Any]:
        body, ctype = self.files[req.path]
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "max-age=300"}
        return 200, Raw(body, ctype, headers)

    async def events(self, req: Request) -> tuple[int, Any]:
        return 200, Stream(self.feed(), "text/event-stream; charset=utf-8")

    async def feed(self) -> AsyncIterator[bytes]:
        """`history` first (the node's last hour), then one snapshot every `interval_s`."""
        yield b"retry: 2000\n\n" + sse(self.history.columns(), "history")
        while True:
            yield self.latest()
            await asyncio.sleep(self.interval_s)

    def latest(self) -> bytes:
        """The current snapshot's event, built at most once per `interval_s` whatever the number
        of open streams (a zone of 2,000 devices takes ~30 ms to build and encode)."""
        now = self.clock()
        if self._latest is None or now - self._latest[0] >= self.interval_s:
            self._latest = (now, sse(snapshot(self.views, self.wall())))
        return self._latest[1]

    async def sample_loop(self) -> None:
        """Sample the zone import once a second for the chart's history (until cancelled)."""
        while True:
            self.history.sample()
            await asyncio.sleep(1.0)
