"""The one crossing from another thread (pysyncobj's tick thread, the cloud worker) into the
node's asyncio loop. Everything that arrives from a thread goes through `Bridge.call`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any


class Bridge:
    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` on the loop soon (from any thread); dropped before the loop runs."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, *args)

    def run(self, coro: Coroutine[Any, Any, Any]) -> Future[Any]:
        """Run a coroutine on the loop from another thread; wait on the returned future."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop)


def settle(fut: asyncio.Future[Any], value: Any) -> None:
    """Resolve a loop future once (a late second answer is ignored)."""
    if not fut.done():
        fut.set_result(value)
