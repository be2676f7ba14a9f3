"""The edges of a node, as typing.Protocols: what drives `core.node.Node` needs of the outside.

A driver (the daemon in `meshems.node`, the harness in `meshems.sim.harness`) feeds the
machine from a `Clock`, a `Consensus` and a `FieldBus`, and carries the machine's actions
out through them. The real ones wrap pysyncobj and the polling engine (`node.consensus`,
`node.field`); the fakes in `meshems.sim.fakes` are shipped as product code, as
`trio.testing` ships its fakes. Callbacks, not coroutines: a fake answers at once, the real
ones later, on the driver's loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from meshems.core.cluster import ZoneState
from meshems.core.node_events import RaftChanged, Write, Written

#: (result of apply as a dict, or None; error code or None; error text)
ProposeDone = Callable[[dict[str, Any] | None, str | None, str], None]


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds for intervals and deadlines."""
        ...

    def time(self) -> float:
        """Seconds since the epoch, for the load history's time of day."""
        ...


class Consensus(Protocol):
    """One member of the zone's replicated log."""

    @property
    def state(self) -> ZoneState:
        """The zone state this member has applied."""
        ...

    def view(self) -> RaftChanged:
        """Role, term, leader, quorum, caught up, connected peers."""
        ...

    def propose(self, data: bytes, done: ProposeDone, timeout_s: float | None = None) -> None:
        """Propose command bytes; `done` is called once (committed, refused or failed)."""
        ...


class FieldBus(Protocol):
    """A gateway's own field devices, by point role."""

    def roles(self) -> dict[str, frozenset[str]]:
        """The point roles each wired device offers."""
        ...

    def write(self, action: Write, done: Callable[[Written], None]) -> None:
        """Write one value by role (read back and verified); `done` is called once."""
        ...

    def pause(self, devices: frozenset[str]) -> None:
        """Stop polling these (shared devices another gateway owns)."""
        ...
