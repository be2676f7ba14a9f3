"""The zone state as bytes: a canonical msgpack snapshot, its restore and its hash.

Owns the snapshot format (sorted, versioned, every field a plain list so the bytes are equal
on replicas with equal states) and the refusal of a damaged snapshot. Pure: msgpack and
hashlib only; pysyncobj stores the bytes (`adapters.consensus`).
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack

from meshems.core.cluster import ZoneState
from meshems.core.deploy_records import from_row
from meshems.core.plan_records import NodeForecast, pack, plan_from_fields, unpack
from meshems.core.policy import Envelope, Policy, with_changes
from meshems.core.zone_records import (
    ApiToken,
    Device,
    DispatchRecord,
    ForecastRecord,
    Member,
    NodeReport,
    Reading,
    RelayOverride,
    RelayState,
    Result,
    Setpoint,
)

SNAPSHOT_VERSION = 1


def _result_row(r: Result) -> list:
    return [r.ok, r.code, r.message, r.term, r.index]


def to_snapshot(state: ZoneState) -> dict[str, Any]:
    """A canonical plain-data form of the state (sorted, msgpack-ready)."""
    return {
        "v": SNAPSHOT_VERSION,
        "last_term": state.last_term,
        "last_index": state.last_index,
        "members": [[m.node_id, m.raft, m.api] for _, m in sorted(state.members.items())],
        "devices": [[d.id, d.kind, d.owner, d.min_kw, d.max_kw] for _, d in sorted(state.devices.items())],
        "setpoints": [
            [s.device_id, s.kw, s.term, s.index, s.rid, s.source] for _, s in sorted(state.setpoints.items())
        ],
        "reports": [
            [
                r.node_id,
                r.seq,
                r.term,
                r.index,
                [[x.device_id, x.state, [list(v) for v in x.values]] for x in r.readings],
                r.reserve_kwh,
            ]
            for _, r in sorted(state.reports.items())
        ],
        "shared": [[k, list(v)] for k, v in sorted(state.shared.items())],
        "forecasts": [
            [r.node_id, r.version, r.digest, r.data, r.term, r.index]
            for _, r in sorted(state.forecasts.items())
        ],
        "policy": None if state.policy is None else state.policy.to_dict(),
        "relays": [
            [r.load, r.closed, r.term, r.index, r.controller, r.expected_kw]
            for _, r in sorted(state.relays.items())
        ],
        "overrides": [
            [o.load, o.closed, o.until_s, o.term, o.index, o.rid, o.source]
            for _, o in sorted(state.overrides.items())
        ],
        "tokens": [
            [t.id, t.name, t.role, t.digest, t.expires_s, t.created_by, t.revoked]
            for _, t in sorted(state.tokens.items())
        ],
        "envelopes": [
            [e.node_id, e.import_limit_kw, e.export_limit_kw, e.soc_reserve_pct, list(e.shed)]
            for _, e in sorted(state.envelopes.items())
        ],
        "last_dispatch": None
        if state.last_dispatch is None
        else [
            state.last_dispatch.cycle,
            state.last_dispatch.term,
            state.last_dispatch.index,
            [list(x) for x in state.last_dispatch.inputs],
            [list(x) for x in state.last_dispatch.decisions],
        ],
        # Generations in order (newest first), each in insertion order: eviction depends on it.
        "rids": [[[k, *_result_row(v)] for k, v in gen.items()] for gen in state.rids],
        "telemetry_seq": state.telemetry_seq,
        "cloud_acked": state.cloud_acked,
        "cloud_command_seq": state.cloud_command_seq,
        "node_forecasts": [
            [f.node_id, f.start_s, f.step_s, pack(f.kw), f.basis, f.term, f.index]
            for _, f in sorted(state.node_forecasts.items())
        ],
        "plan": None if state.plan is None else [state.plan.to_fields(), state.plan.term, state.plan.index],
        "deployments": [d.to_row() for _, d in sorted(state.deployments.items())],
    }


def snapshot(state: ZoneState) -> bytes:
    return msgpack.packb(to_snapshot(state))


def restore(data: bytes) -> ZoneState:
    """Rebuild a state from `snapshot` bytes; raises ValueError on a damaged snapshot."""
    try:
        raw = msgpack.unpackb(data, raw=False)
        if raw.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"snapshot version {raw.get('v')!r} is not {SNAPSHOT_VERSION}")
        return ZoneState(
            last_term=raw["last_term"],
            last_index=raw["last_index"],
            members={r[0]: Member(*r) for r in raw["members"]},
            devices={r[0]: Device(*r) for r in raw["devices"]},
            setpoints={r[0]: Setpoint(*r) for r in raw["setpoints"]},
            reports={
                r[0]: NodeReport(
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    tuple(Reading(x[0], x[1], tuple((k, v) for k, v in x[2])) for x in r[4]),
                    float(r[5]) if len(r) > 5 else 0.0,  # snapshots before the field: none asked
                )
                for r in raw["reports"]
            },
            shared={r[0]: tuple(r[1]) for r in raw["shared"]},
            forecasts={r[0]: ForecastRecord(*r) for r in raw["forecasts"]},
            policy=None if raw["policy"] is None else with_changes(Policy(), raw["policy"]),
            relays={r[0]: RelayState(*r) for r in raw["relays"]},
            overrides={o[0]: RelayOverride(*o) for o in raw.get("overrides", [])},
            tokens={t[0]: ApiToken(*t) for t in raw.get("tokens", [])},
            envelopes={e[0]: Envelope(e[0], e[1], e[2], e[3], tuple(e[4])) for e in raw["envelopes"]},
            last_dispatch=None
            if raw["last_dispatch"] is None
            else DispatchRecord(
                raw["last_dispatch"][0],
                raw["last_dispatch"][1],
                raw["last_dispatch"][2],
                tuple((k, v) for k, v in raw["last_dispatch"][3]),
                tuple((a, b, c) for a, b, c in raw["last_dispatch"][4]),
            ),
            rids=tuple({r[0]: Result(*r[1:]) for r in gen} for gen in raw["rids"]),
            telemetry_seq=int(raw.get("telemetry_seq", 0)),
            cloud_acked=int(raw.get("cloud_acked", 0)),
            cloud_command_seq=int(raw.get("cloud_command_seq", 0)),
            node_forecasts={
                f[0]: NodeForecast(f[0], f[1], f[2], unpack(f[3]), f[4], f[5], f[6])
                for f in raw.get("node_forecasts", [])
            },
            plan=_plan(raw.get("plan")),
            deployments={r[0]: from_row(r) for r in raw.get("deployments", [])},
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError, msgpack.UnpackException) as exc:
        raise ValueError(f"damaged snapshot: {type(exc).__name__}: {exc}") from None


def _plan(row: Any) -> Any:
    if row is None:
        return None
    fields, term, index = row
    series = {"import_kw": unpack(fields["import_kw"])}
    batteries = [
        {"id": b["id"], "kw": unpack(b["kw"]), "soc": unpack(b["soc"], 2)} for b in fields["batteries"]
    ]
    return plan_from_fields({**fields, **series, "batteries": batteries}, term, index)


def state_hash(state: ZoneState) -> str:
    """SHA-256 of the canonical snapshot: equal on replicas that applied the same log."""
    return hashlib.sha256(snapshot(state)).hexdigest()
