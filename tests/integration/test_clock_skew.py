"""Peer clock offsets with real node processes: one node started under libfaketime (+2 s)
makes every node raise A_CLOCK_SKEW within 10 s (each measures its peers NTP-style over
HTTPS); restarted on the true clock, the alarm clears everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshems.ops.supervisor import LocalCluster
from tests.integration.test_cluster import status_of, wait_until

pytestmark = pytest.mark.integration

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def alarms(c: LocalCluster, node: str) -> set[str]:
    return set(status_of(c, node)["alarms"])


def offsets(c: LocalCluster, node: str) -> dict[str, Any]:
    return status_of(c, node)["clock_offsets_s"]


@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="libfaketime missing (Debian faketime; scripts/setup)")
def test_a_skewed_node_raises_the_alarm_on_every_node_and_it_clears(make_cluster: Any) -> None:
    c = make_cluster()
    wait_until(lambda: all(set(offsets(c, n)) == {"n1", "n2", "n3"} - {n} for n in ("n1", "n2", "n3")),
               timeout_s=15, what="every node measured its peers")  # fmt: skip
    assert all(abs(o) < 0.2 for n in ("n1", "n2", "n3") for o in offsets(c, n).values())
    assert not any("A_CLOCK_SKEW" in alarms(c, n) for n in ("n1", "n2", "n3"))
    c.stop("n3")
    # A constant offset moves the monotonic clock by the same 2 s, which no timer notices.
    # (DONT_FAKE_MONOTONIC=1 would break libfaketime 0.9.10's timed waits: pysyncobj's tick
    # thread died on its first time.sleep, and the skewed node silently left the zone.)
    fake = {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": "+2s"}
    c.start("n3", env=fake)
    c.wait_api("n3")
    wait_until(lambda: status_of(c, "n3")["leader"] is not None, timeout_s=15, what="skewed n3 in the zone")
    wait_until(lambda: all("A_CLOCK_SKEW" in alarms(c, n) for n in ("n1", "n2", "n3")),
               timeout_s=10, what="A_CLOCK_SKEW on every node")  # fmt: skip
    assert 1.5 < offsets(c, "n1")["n3"] < 2.5 and -2.5 < offsets(c, "n3")["n1"] < -1.5
    assert "A_CLOCK_SKEW" in c.log_text("n2")
    c.stop("n3")
    c.start("n3")
    c.wait_api("n3")
    wait_until(lambda: not any("A_CLOCK_SKEW" in alarms(c, n) for n in ("n1", "n2", "n3")),
               timeout_s=15, what="the alarm cleared on every node")  # fmt: skip
