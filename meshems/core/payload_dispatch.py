"""The active controller payload in the leader's dispatch: its checked decisions (an `Advice`
the node's rollout duty made in the last cycle) replace the built-in setpoints of the batteries
and PV it decided; relays, envelopes and every other device stay the built-in controllers'.
No advice, or advice older than its age limit (a timeout, a crash, no worker yet): the built-in
result as it is. Protection and the last good setpoints never depend on it. Which payload a
leader runs: `active_payload`. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from meshems.core.cluster import ZoneState
from meshems.core.deploy_records import Deployment
from meshems.core.dispatch import DispatchResult
from meshems.core.rollout_records import PROMOTED


@dataclass(frozen=True, slots=True)
class Advice:
    """One cycle's decisions of the active payload `name`, checked (`payload_decisions`)."""

    name: str
    setpoints: tuple[tuple[str, float, str], ...]  # Checked.accepted: device, kW, reason
    made_s: float  # the node's monotonic clock


def with_advice(
    result: DispatchResult, advice: Advice | None, now_s: float, max_age_s: float
) -> DispatchResult:
    """`result` with the payload's setpoints in place of the built-in ones of the same devices."""
    if advice is None or not advice.setpoints or now_s - advice.made_s > max_age_s:
        return result
    theirs = {d: (d, kw, f"payload:{advice.name}", why) for d, kw, why in advice.setpoints}
    rows = [theirs.pop(sp[0], sp) for sp in result.setpoints]
    return replace(result, setpoints=(*rows, *(theirs[d] for d in sorted(theirs))))


def active_payload(state: ZoneState, node_id: str) -> Deployment | None:
    """The controller payload `node_id` dispatches with while it leads: the latest deployment
    whose rollout ended done (not aborted since), or that promoted this node and still runs."""

    def counts(d: Deployment) -> bool:
        if d.kind != "controller" or d.aborted or node_id not in d.targets:
            return False
        if d.rollout.outcome:
            return d.rollout.outcome == "done"
        return d.rollout.phase_of(node_id) in PROMOTED

    return max((d for d in state.deployments.values() if counts(d)), key=lambda d: d.index, default=None)
