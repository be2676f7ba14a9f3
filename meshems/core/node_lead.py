"""The leader's duties (called by `core.node.Node` on the node that leads with quorum):
commit the configured policy when the zone has none (once its loads are declared), move
shared devices of gateways that are gone, clear operators' overrides whose time is up, ask
for a zone plan when one is due (`core.node_plan`), and dispatch once per policy cycle, at
once after becoming leader, one dispatch in flight, tracking the committed plan (the active
controller payload's fresh decisions in place of the built-in setpoints they cover).

Pure: the zone state, the Raft view and time come from the Node; results are proposals.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from meshems.core import commands
from meshems.core.cluster import ZoneState
from meshems.core.day_peak import quarter_allowance_kw
from meshems.core.dispatch import command_fields, dispatch
from meshems.core.node_events import Action, Propose
from meshems.core.node_plan import replan
from meshems.core.payload_dispatch import with_advice
from meshems.core.plan_records import PlanStep, plan_step
from meshems.core.policy import Policy
from meshems.core.process_image import build_image

if TYPE_CHECKING:
    from meshems.core.node import Node


def lead(node: Node) -> list[Action]:
    if not node.leads:
        node.leading = False
        return []
    out: list[Action] = []
    state, t = node.zone, node.spec.timing
    if state.shared and node.duties["orphans"].due(node.now_s, t.orphans_s):
        node.duties["orphans"].last_s = node.now_s
        out += move_orphans(node)
    out += expire_overrides(node)
    if state.policy is None:
        values = node.spec.policy_values
        if (
            values is not None
            and node.duties["policy"].due(node.now_s, t.policy_retry_s)
            and all(load.rpartition(":")[0] in state.devices for load in values["shed_order"])
        ):
            data = commands.encode("set_policy", f"policy-init-{node.raft.term}", values=dict(values))
            out.append(node.propose("policy", data))
        return out
    out += replan(node)
    duty = node.duties["dispatch"]
    first = not node.leading
    if state.reports and (first or duty.due(node.now_s, state.policy.cycle_s)) and not duty.in_flight:
        node.leading = True
        out.append(dispatch_once(node, state.policy))
    return out


def move_orphans(node: Node) -> list[Action]:
    """A shared device whose owner stopped reporting and whose gateway Raft no longer
    reaches moves to another gateway that can reach it and still reports (a slow report
    alone must not move a single-master device back and forth)."""
    state, out = node.zone, []
    stale = node.liveness.stale(state, node.now_s)
    for dev_id, nodes in sorted(state.shared.items()):
        dev = state.devices.get(dev_id)
        if dev is None or dev.owner not in stale or dev.owner in node.raft.connected:
            continue
        if dev.owner == node.spec.node_id:
            continue
        heir = next((n for n in nodes if n != dev.owner and n not in stale and n in state.reports), None)
        if heir is None:
            continue
        rid = f"transfer-{dev_id}-{heir}-{node.raft.term}-{state.last_index}"
        data = commands.encode("transfer_device", rid, device_id=dev_id, node_id=heir)
        out.append(Propose(data, "transfer", f"{dev_id}:{dev.owner}:{heir}"))
    return out


def expire_overrides(node: Node) -> list[Action]:
    """Clear an operator's override whose time is up (by this leader's clock); one proposal
    per expired override and request id, so a retry or a second leader dedups to one."""
    out: list[Action] = []
    for load, o in sorted(node.zone.overrides.items()):
        if o.until_s is not None and o.until_s <= node.wall_s and load not in node.expiring:
            node.expiring.add(load)
            data = commands.encode(
                "relay_override", f"expire-{load}-{o.index}", load=load, closed=None, source="expired"
            )
            out.append(Propose(data, "expire", load))
    return out


def track_kw(follow: PlanStep, quarter: tuple[float, float, float] | None) -> float | None:
    """Peak mode: the import this cycle that holds the quarter-hour's mean at the plan's peak."""
    if follow.mode != "peak" or quarter is None:
        return None
    return quarter_allowance_kw(follow.peak_kw, *quarter)


def dispatch_once(node: Node, policy: Policy) -> Propose:
    state = node.zone
    image = build_image(state, stale_nodes=node.liveness.stale(state, node.now_s))
    shed_kw = {k: r.expected_kw for k, r in state.relays.items() if not r.closed}
    node.import_peak.add(node.wall_s, image.grid_kw)
    follow = plan_step(state.plan, node.wall_s) if policy.mode != "reactive" else None
    if follow is not None:
        follow = replace(follow, track_kw=track_kw(follow, node.import_peak.quarter(node.wall_s)))
    result = dispatch(
        image,
        policy,
        reserve_kwh=zone_reserve_kwh(state),
        shed_kw=shed_kw,
        overridden=frozenset(state.overrides),
        follow=follow,
    )
    result = with_advice(result, node.payload_advice, node.now_s, 2 * policy.cycle_s)  # the active payload's
    cycle = (state.last_dispatch.cycle + 1) if state.last_dispatch else 1
    data = commands.encode("dispatch", f"dispatch-{node.raft.term}-{cycle}", **command_fields(result, cycle))
    return node.propose("dispatch", data, str(cycle))


def zone_reserve_kwh(state: ZoneState) -> float:
    """The battery energy the nodes' forecasts ask the zone to hold (their reports)."""
    return sum(rep.reserve_kwh for rep in state.reports.values())
