"""The core's fence counts a write that was asked for and failed: its outcome is unknown (a
timeout may have landed), so an older token must not follow it (found by the node's
hypothesis property with a failed write and a replayed older state)."""

from __future__ import annotations

from meshems.core.actuation import Actuation
from meshems.core.node_events import Log, Written


def test_an_older_token_never_follows_a_failed_newer_write() -> None:
    a = Actuation({})
    assert a._due("n1-bat", (2, 5), 0.0, 10.0, [])
    a.written(Written("n1-bat", (2, 5), True, "OK", "", 0.0), None)
    assert a._due("n1-bat", (2, 7), 1.0, 10.0, [])
    a.written(Written("n1-bat", (2, 7), False, "E_TIMEOUT", "", 1.0), None)
    out: list[Log] = []
    assert not a._due("n1-bat", (2, 6), 2.0, 10.0, out)  # the replayed older state
    assert [o.code for o in out] == ["W_STALE_SETPOINT"] and a.refused_stale == 1
    assert a._due("n1-bat", (2, 7), 2.0, 10.0, [])  # the failed one is tried again
    assert a._due("n1-bat", (3, 1), 2.0, 10.0, [])
