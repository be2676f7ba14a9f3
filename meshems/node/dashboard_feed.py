"""What the live dashboard shows: one compact JSON snapshot of the zone as this node sees it,
and the node's last hour of zone import against its limit (sampled once a second).

Owns the snapshot's shape (`snapshot`) and `ImportHistory`. Reads the node's parts through
`Views`; changes nothing, and does no I/O of its own.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meshems.core.cluster import ZoneState
from meshems.core.process_image import build_image
from meshems.node.views import Views

#: one sample a second for an hour
HISTORY_S = 3600
#: the longest reason text a snapshot carries per decision
MAX_REASON_CHARS = 200


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def members(views: Views) -> list[dict[str, Any]]:
    """Every member of the zone with its role as this node knows it: the leader, this node's
    own role, `follower` for a peer this node is connected to, `unreachable` otherwise (Raft
    names peers by node id; by Raft endpoint before it knows their ids)."""
    st = views.raft.raft.status()
    state = views.raft.state
    out = []
    for node_id, m in sorted(state.members.items()):
        if node_id == views.node_id:
            role = st.role
        elif st.leader is not None and st.leader in (node_id, m.raft):
            role = "leader"
        else:
            role = "follower" if st.partners.get(node_id) or st.partners.get(m.raft) else "unreachable"
        out.append({"id": node_id, "role": role, "self": node_id == views.node_id})
    return out


def leader_id(views: Views) -> str | None:
    st = views.raft.raft.status()
    if st.role == "leader":
        return views.node_id
    return next((n for n, m in views.raft.state.members.items() if st.leader in (n, m.raft)), None)


def zone_figures(state: ZoneState) -> dict[str, float | None]:
    """Zone import (+) / export (-) now, from the members' latest reports, and its limits (the
    policy's, else the last dispatch's)."""
    image = build_image(state)
    inputs = dict(state.last_dispatch.inputs) if state.last_dispatch is not None else {}
    policy = state.policy
    metered = any(n.meter_ok for n in image.nodes)
    return {
        "import_kw": _r(image.grid_kw) if metered else _r(inputs.get("zone_import_kw")),
        "import_limit_kw": policy.import_limit_kw if policy else inputs.get("import_limit_kw"),
        "export_limit_kw": policy.export_limit_kw if policy else inputs.get("export_limit_kw"),
    }


def _dispatch(state: ZoneState) -> dict[str, Any] | None:
    rec = state.last_dispatch
    if rec is None:
        return None
    return {
        "cycle": rec.cycle,
        "term": rec.term,
        "index": rec.index,
        "inputs": dict(rec.inputs),
        "decisions": [
            {"target": t, "controller": c, "reason": r[:MAX_REASON_CHARS]} for t, c, r in rec.decisions
        ],
    }


def _cloud(status: dict[str, Any] | None) -> dict[str, Any] | None:
    if not status:
        return None
    keys = ("link", "broker", "publishing", "backlog", "oldest_unsent_age_s", "acked_through", "error")
    return {k: status[k] for k in keys if k in status}


def snapshot(views: Views, wall_s: float) -> dict[str, Any]:
    """The dashboard's view of the zone now (`wall_s`: this node's wall clock)."""
    state = views.raft.state
    st = views.raft.raft.status()
    image = build_image(state)
    cloud = views.cloud_status()
    alarms = [*(cloud.get("alarms", []) if cloud else []), *(["A_CLOCK_SKEW"] if views.clock.alarm else [])]
    return {
        "t": round(wall_s, 3),
        "node": views.node_id,
        "zone": views.cfg.zone,
        "role": st.role,
        "term": st.term,
        "leader": leader_id(views),
        "has_quorum": st.has_quorum,
        "mode": views.machine.mode,
        "members": members(views),
        "grid": zone_figures(state),
        "batteries": [
            {"id": b.id, "node": b.node, "ok": b.ok, "power_kw": _r(b.power_kw), "soc_pct": _r(b.soc_pct, 1)}
            for b in image.batteries
        ],
        "pv": [{"id": p.id, "node": p.node, "ok": p.ok, "power_kw": _r(p.power_kw)} for p in image.pvs],
        "pv_kw": _r(sum(p.power_kw for p in image.pvs)),
        "shed": sorted(ld.id for ld in image.loads if not ld.closed),
        "alarms": sorted(set(alarms)),
        "dispatch": _dispatch(state),
        "cloud": _cloud(cloud),
    }


@dataclass
class ImportHistory:
    """The last `HISTORY_S` seconds of (wall time, zone import, import limit), one sample per
    `sample()` call (once a second): what a page seeds its chart with."""

    views: Views
    wall: Callable[[], float] = time.time
    samples: deque[tuple[float, float | None, float | None]] = field(
        default_factory=lambda: deque(maxlen=HISTORY_S)
    )

    def sample(self) -> None:
        figures = zone_figures(self.views.raft.state)
        self.samples.append((round(self.wall(), 3), figures["import_kw"], figures["import_limit_kw"]))

    def columns(self) -> dict[str, list[float | None]]:
        """The samples as columns (uPlot's data layout): t, import_kw, import_limit_kw."""
        return {
            "t": [s[0] for s in self.samples],
            "import_kw": [s[1] for s in self.samples],
            "import_limit_kw": [s[2] for s in self.samples],
        }
