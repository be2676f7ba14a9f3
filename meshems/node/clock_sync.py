"""Peer clock offsets at run time: every CLOCK_EVERY_S the node asks each peer's `GET
/v1/time` (HTTPS, with the node's own certificate), keeps the NTP-style offset in the
`core.clock.ClockWatch` the status view shows, and logs A_CLOCK_SKEW when the alarm rises or
clears. The rule is `core.clock`; this is the asking.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from meshems.core.clock import ClockWatch
from meshems.core.config import ClusterConfig
from meshems.core.errors import MeshemsError
from meshems.logs import log
from meshems.ops.client import NodeClient

#: how often a node measures its peers' clock offsets
CLOCK_EVERY_S = 2.0


def _measure(client: NodeClient, peer: Any) -> tuple[float, float, float, float] | None:
    """(t1, t2, t3, t4) of one `GET /v1/time`, or None when the peer did not answer well."""
    t1 = time.time()
    try:
        status, body = client.request(peer, "GET", "/v1/time")
    except MeshemsError:
        return None
    t4 = time.time()
    if status != 200 or not isinstance(body, dict):
        return None
    t2, t3 = body.get("t2"), body.get("t3")
    if not all(isinstance(t, int | float) and not isinstance(t, bool) for t in (t2, t3)):
        return None
    return t1, float(t2), float(t3), t4  # type: ignore[arg-type]


async def clock_loop(cfg: ClusterConfig, node_id: str, clock: ClockWatch) -> None:
    """Measure forever (cancelled when the node stops)."""
    peers = [n for n in cfg.nodes if n.id != node_id]
    if not peers:
        return
    tls = cfg.tls_dir
    cert, key = str(tls / f"{node_id}.crt"), str(tls / f"{node_id}.key")
    client = NodeClient(cfg, None, timeout_s=1.0, cert=cert, key=key)
    while True:
        for peer in peers:
            stamps = await asyncio.to_thread(_measure, client, peer)
            if stamps is not None:
                clock.measured(peer.id, *stamps, now_s=time.monotonic())
        changed = clock.update_alarm(time.monotonic())
        if changed is not None:
            offsets = {p: round(o, 3) for p, o in clock.current(time.monotonic()).items()}
            what = "peer clock offsets over the limit" if changed else "peer clock offsets back in step"
            log(
                "warning" if changed else "info",
                "A_CLOCK_SKEW",
                what,
                offsets_s=offsets,
                limit_s=clock.skew_s,
            )
        await asyncio.sleep(CLOCK_EVERY_S)
