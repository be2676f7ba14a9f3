"""What the node API shows: read-only bodies built from the node's parts (its Raft view, the
zone state, the state machine's bookkeeping, the field devices, the cloud worker).

Owns the shape of `GET /v1/status`, `/v1/devices`, `/v1/control`, `/v1/explain`,
`/v1/setpoints`, `/v1/forecast` and `/v1/plan` answers. Reads only; changes nothing.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meshems.core.clock import ClockWatch
from meshems.core.cluster import ZoneState
from meshems.core.config import ClusterConfig
from meshems.core.days_off import policy_days_off
from meshems.core.node import Node
from meshems.core.plan_records import plan_dict, plan_step
from meshems.core.pv_forecast import base_forecast
from meshems.core.snapshot import state_hash
from meshems.core.zone_records import setpoint_dict
from meshems.node.consensus import RaftService
from meshems.node.field import FieldService


@dataclass
class Views:
    cfg: ClusterConfig
    node_id: str
    raft: RaftService
    machine: Node
    field: FieldService | None
    cloud_status: Callable[[], dict[str, Any] | None]
    overlay_peers: Callable[[], Any]
    clock: ClockWatch = field(default_factory=ClockWatch)
    started: float = field(default_factory=time.monotonic)
    _hash_cache: tuple[ZoneState | None, str] = (None, "")

    def _state_hash(self, state: ZoneState) -> str:
        """Hash of the zone state, cached per (immutable) state object."""
        cached_state, cached_hash = self._hash_cache
        if cached_state is not state:
            cached_hash = state_hash(state)
            self._hash_cache = (state, cached_hash)
        return cached_hash

    def _clock_alarms(self) -> list[str]:
        return ["A_CLOCK_SKEW"] if self.clock.alarm else []

    def status(self) -> dict[str, Any]:
        st = self.raft.raft.status()
        state = self.raft.state
        cloud = self.cloud_status()
        readings = self.field.snapshot() if self.field is not None else []
        return {
            "id": self.node_id,
            "cluster": self.cfg.cluster,
            "zone": self.cfg.zone,
            "role": st.role,
            "term": st.term,
            "commit_index": st.commit_index,
            "applied_index": st.applied_index,
            "leader": st.leader,
            "has_quorum": st.has_quorum,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "raft_uptime_s": st.uptime_s,
            "partners": st.partners,
            "match_index": st.match_index,
            "members": sorted(state.members),
            "devices": len(state.devices),
            "setpoints": len(state.setpoints),
            "state_index": state.last_index,
            "state_hash": self._state_hash(state),
            "telemetry_seq": state.telemetry_seq,
            "cloud_acked": state.cloud_acked,
            "cloud_command_seq": state.cloud_command_seq,  # the last signed cloud command applied
            "alarms": [*(cloud.get("alarms", []) if cloud is not None else []), *self._clock_alarms()],
            "clock_offsets_s": {p: round(o, 4) for p, o in self.clock.current(time.monotonic()).items()},
            "overlay": self.overlay_peers(),
            "cloud": cloud,
            "forecasts": {
                k: {"version": r.version, "digest": r.digest[:16], "bytes": len(r.data), "index": r.index}
                for k, r in state.forecasts.items()
            },
            "forecast_basis": self.machine.forecast_basis,
            "node_forecasts": {  # the committed forecasts the leader plans from
                k: {"start_s": f.start_s, "basis": f.basis, "index": f.index}
                for k, f in state.node_forecasts.items()
            },
            "zone_reports": {
                r.node_id: {"seq": r.seq, "term": r.term, "index": r.index, "devices": len(r.readings)}
                for r in state.reports.values()
            },
            "readings": {
                d["id"]: {"state": d["state"], "age_s": d["age_s"], "values": d["values"]} for d in readings
            },
            "pid": os.getpid(),
        }

    def devices(self) -> dict[str, Any]:
        devices = self.field.snapshot() if self.field is not None else []
        actuation = None
        if self.field is not None:
            a = self.machine.actuation
            actuation = {
                "applied": {k: list(v) for k, v in a.applied.items()},
                "refused_stale": a.refused_stale,
                "refused_outside_config_limits": a.refused_limit,
                "last_writes": a.writes,
            }
        return {"node": self.node_id, "devices": devices, "actuation": actuation}

    def control(self) -> dict[str, Any]:
        state = self.raft.state
        rec = state.last_dispatch
        return {
            "node": self.node_id,
            "mode": self.machine.mode,
            "policy": state.policy.to_dict() if state.policy else None,
            "envelopes": {
                k: {
                    "import_limit_kw": e.import_limit_kw,
                    "export_limit_kw": e.export_limit_kw,
                    "soc_reserve_pct": e.soc_reserve_pct,
                    "shed": list(e.shed),
                }
                for k, e in state.envelopes.items()
            },
            "last_dispatch": None
            if rec is None
            else {
                "cycle": rec.cycle,
                "term": rec.term,
                "index": rec.index,
                "inputs": dict(rec.inputs),
                "decisions": {d: {"controller": c, "reason": r} for d, c, r in rec.decisions},
            },
            "relays": {
                k: {"closed": r.closed, "controller": r.controller, "term": r.term, "index": r.index}
                for k, r in state.relays.items()
            },
            "overrides": {
                k: {"closed": o.closed, "until_s": o.until_s, "source": o.source, "index": o.index}
                for k, o in state.overrides.items()
            },
            "trips": self.machine.trips,
            "shared": {
                k: {"owner": state.devices[k].owner if k in state.devices else None, "reachable": list(v)}
                for k, v in state.shared.items()
            },
        }

    def forecast(self) -> dict[str, Any]:
        """The node's load forecast for the coming day, from its own history and fitted
        model as its reserve duty computes it (kW per step, null where unknown)."""
        m = self.machine
        model = m.spec.forecast.model if m.spec.forecast is not None else None
        now = m.wall_s if m.started else time.time()
        f = base_forecast(m.history, m.pv_history, now, model, policy_days_off(m.zone.policy))
        return {
            "node_id": self.node_id,
            "basis": f.basis,
            "step_s": f.step_s,
            "start_s": f.start_s,
            "kw": [round(float(v), 3) if math.isfinite(v) else None for v in f.kw],
        }

    def plan(self) -> tuple[int, dict[str, Any]]:
        """The committed zone plan (`core.plan_records.plan_dict`) with its age and what
        dispatch tracks now; 404 E_NO_PLAN while there is none."""
        state, now = self.raft.state, time.time()
        if state.plan is None:
            policy = state.policy
            mode = policy.mode if policy is not None else None
            why = "the policy's mode is reactive" if mode == "reactive" else "no plan committed yet"
            return 404, {"ok": False, "code": "E_NO_PLAN", "message": why, "mode": mode}
        step = plan_step(state.plan, now)
        body = {**plan_dict(state.plan), "age_s": round(now - state.plan.made_s, 1)}
        ceiling = None if step is None or step.mode != "peak" else step.peak_kw
        tracking = None if step is None else {"ceiling_kw": ceiling, "target_kw": step.target_import_kw}
        body["tracking"] = tracking
        body["import_limit_kw"] = state.policy.import_limit_kw if state.policy is not None else None
        return 200, body

    def explain(self, target: str) -> tuple[int, dict[str, Any]]:
        state = self.raft.state
        sp, relay = state.setpoints.get(target), state.relays.get(target)
        if sp is None and relay is None and target not in state.devices:
            return 404, {
                "ok": False,
                "code": "E_UNKNOWN_DEVICE",
                "message": f"the zone knows no {target!r}",
                "known": sorted([*state.devices, *state.relays]),
            }
        out: dict[str, Any] = {"device": target, "node": self.node_id, "applied_index": state.last_index}
        if sp is not None:
            out["setpoint"] = setpoint_dict(sp)
        override = state.overrides.get(target)
        if override is not None:
            out["override"] = {
                "closed": override.closed,
                "until_s": override.until_s,
                "term": override.term,
                "index": override.index,
                "rid": override.rid,
                "source": override.source,
            }
        if relay is not None:
            out["relay"] = {
                "closed": relay.closed,
                "term": relay.term,
                "index": relay.index,
                "controller": relay.controller,
                "expected_kw": relay.expected_kw,
            }
        rec = state.last_dispatch
        if rec is not None:
            decision = next((d for d in rec.decisions if d[0] == target), None)
            out["dispatch"] = {
                "cycle": rec.cycle,
                "term": rec.term,
                "index": rec.index,
                "inputs": dict(rec.inputs),
                "controller": decision[1] if decision else None,
                "reason": decision[2] if decision else None,
            }
        readings = {r.device_id: dict(r.values) for rep in state.reports.values() for r in rep.readings}
        if target in readings:
            out["reading"] = readings[target]
        return 200, out

    def setpoints(self, device: str | None) -> tuple[int, dict[str, Any]]:
        state = self.raft.state
        if device is not None and device not in state.devices:
            return 404, {
                "ok": False,
                "code": "E_UNKNOWN_DEVICE",
                "message": f"the zone knows no device {device!r}",
                "known": sorted(state.devices),
            }
        rows = [
            setpoint_dict(sp) for d, sp in sorted(state.setpoints.items()) if device is None or d == device
        ]
        return 200, {"node": self.node_id, "applied_index": state.last_index, "setpoints": rows}
