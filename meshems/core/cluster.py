"""The replicated zone state and `apply`, the function every replica runs on the Raft log.

Owns `ZoneState`, the request-id dedup window, `apply` and the command -> handler table (the
handlers are `core.zone_handlers`, the snapshot format `core.snapshot`). Pure: no I/O, clock,
randomness or threads; the rules below hold for every handler too.
"""

# Rules of this module (as h11 writes its rules at the top):
# - `apply(state, data, term, index)` is pure: the same state and the same log entry give the
#   same new state and result on every replica; no I/O, clock, randomness or threads.
# - States are immutable; `apply` returns a new one and shares what did not change.
# - A malformed or refused command changes nothing but the applied position and the dedup
#   window, and is refused with the same code everywhere.
# - A command whose request id was already applied returns the first result and changes
#   nothing (client retries after E_LEADER_CHANGED / E_UNKNOWN_OUTCOME are safe).
# - Committed setpoints carry the (term, index) of their log entry: the fencing token.

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from meshems.core import (
    data_handlers,
    deploy_handlers,
    downlink_handlers,
    plan_handlers,
    rollout,
    token_handlers,
)
from meshems.core import zone_handlers as handlers
from meshems.core.commands import Rejection, decode, peek_rid
from meshems.core.deploy_records import Deployment
from meshems.core.plan_records import NodeForecast, PlanRecord
from meshems.core.policy import Envelope, Policy
from meshems.core.zone_records import (
    ApiToken,
    Device,
    DispatchRecord,
    ForecastRecord,
    Member,
    NodeReport,
    RelayOverride,
    RelayState,
    Result,
    Setpoint,
)

#: The dedup window: request ids are remembered in generations of RID_GENERATION ids, the
#: newest RID_GENERATIONS generations are kept, so the window holds between
#: (RID_GENERATIONS - 1) x RID_GENERATION and RID_GENERATIONS x RID_GENERATION ids. Small
#: generations keep `apply` cheap: only the newest one is copied per entry.
RID_GENERATION = 512
RID_GENERATIONS = 16


@dataclass(frozen=True, slots=True)
class ZoneState:
    """The replicated state of one zone (the rules above); a new one comes from `apply`."""

    last_term: int = 0
    last_index: int = 0
    members: Mapping[str, Member] = field(default_factory=dict)
    devices: Mapping[str, Device] = field(default_factory=dict)
    setpoints: Mapping[str, Setpoint] = field(default_factory=dict)
    reports: Mapping[str, NodeReport] = field(default_factory=dict)
    #: shared device -> the nodes that can reach it (its owner among them)
    shared: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    policy: Policy | None = None
    forecasts: Mapping[str, ForecastRecord] = field(default_factory=dict)
    relays: Mapping[str, RelayState] = field(default_factory=dict)
    #: load -> the operator's override (see RelayOverride)
    overrides: Mapping[str, RelayOverride] = field(default_factory=dict)
    envelopes: Mapping[str, Envelope] = field(default_factory=dict)
    last_dispatch: DispatchRecord | None = None
    #: request id -> first result, newest generation first (see RID_GENERATION)
    rids: tuple[Mapping[str, Result], ...] = ()
    #: zone telemetry records derived so far (see core/telemetry.py): one per applied
    #: report, setpoint and dispatch, so every replica numbers the stream the same way
    telemetry_seq: int = 0
    #: the highest telemetry seq the cloud broker acknowledged (all below it too)
    cloud_acked: int = 0
    #: the seq of the last signed cloud command applied (`core.downlink`): replay protection
    cloud_command_seq: int = 0
    #: token id -> scoped API token (digests only; see ApiToken)
    tokens: Mapping[str, ApiToken] = field(default_factory=dict)
    #: node -> its latest forecast of its base load (the planner's input)
    node_forecasts: Mapping[str, NodeForecast] = field(default_factory=dict)
    plan: PlanRecord | None = None  # the committed zone plan (`core.planner`)
    #: deployment id -> a payload deployment and each target's copy (`core.deploy_handlers`)
    deployments: Mapping[str, Deployment] = field(default_factory=dict)


def _remember(state: ZoneState, rid: str | None, result: Result) -> dict[str, Any]:
    """The dedup window after recording `rid` (bounded generations, oldest dropped)."""
    if rid is None:
        return {}
    rids = state.rids
    if not rids or len(rids[0]) >= RID_GENERATION:
        return {"rids": ({rid: result}, *rids[: RID_GENERATIONS - 1])}
    return {"rids": ({**rids[0], rid: result}, *rids[1:])}


def seen(state: ZoneState, rid: str) -> Result | None:
    """The first result of request id `rid`, while it is in the dedup window."""
    for generation in state.rids:
        found = generation.get(rid)
        if found is not None:
            return found
    return None


def apply(state: ZoneState, data: bytes, term: int, index: int) -> tuple[ZoneState, Result]:
    """Apply one committed log entry (command bytes at `term`, `index`)."""
    if index <= state.last_index:
        # A replay of an entry already in the state (e.g. after restore): no effect.
        return state, Result(False, "E_CMD_REPLAYED", "entry already applied", term, index)
    cmd = decode(data)
    # Dedup before anything else, also for a rejected command whose rid is readable: a
    # retry gets the first result, and a reject never overwrites an earlier rid's result.
    rid = peek_rid(data) if isinstance(cmd, Rejection) else cmd.rid
    earlier = seen(state, rid) if rid is not None else None
    if earlier is not None:
        dup = replace(earlier, duplicate=True)
        return replace(state, last_term=term, last_index=index), dup
    if isinstance(cmd, Rejection):
        result = Result(False, cmd.code, cmd.message, term, index)
        return _advance(state, term, index, rid, result, {}), result
    changes, result = _HANDLERS[cmd.type](state, cmd, term, index)
    if result.ok and cmd.type in TELEMETRY_TYPES:
        changes["telemetry_seq"] = state.telemetry_seq + 1
    return _advance(state, term, index, cmd.rid, result, changes), result


def _advance(
    state: ZoneState, term: int, index: int, rid: str | None, result: Result, changes: dict
) -> ZoneState:
    return replace(state, last_term=term, last_index=index, **changes, **_remember(state, rid, result))


_HANDLERS = {
    "forecast_model": handlers.forecast_model,
    "transfer_device": handlers.transfer_device,
    "set_policy": handlers.set_policy,
    "dispatch": handlers.dispatch,
    "report": handlers.report,
    "declare_node": handlers.declare_node,
    "set_setpoint": handlers.set_setpoint,
    "remove_node": handlers.remove_node,
    "barrier": handlers.barrier,
    "cloud_ack": handlers.cloud_ack,
    "relay_override": handlers.relay_override,
    "token_create": token_handlers.token_create,
    "token_revoke": token_handlers.token_revoke,
    "node_forecast": plan_handlers.node_forecast,
    "plan": plan_handlers.plan,
    "deploy": deploy_handlers.deploy,
    "deploy_status": deploy_handlers.deploy_status,
    "deploy_abort": deploy_handlers.deploy_abort,
    "deploy_rollback": deploy_handlers.deploy_rollback,
    "deploy_apply": data_handlers.deploy_apply,
    "rollout_step": rollout.rollout_step,
    "cloud_command": downlink_handlers.cloud_command,
}
#: successfully applied commands of these types each add one record to the telemetry stream
TELEMETRY_TYPES = frozenset({"report", "set_setpoint", "dispatch"})
