"""What a node owes the zone's deployments: for each open deployment that targets it and whose
copy here is not final, fetch the bundle (from which peers, in which order) or, once it is in
the store, say so. A node that was offline finds the same deployments in the state when it
returns. Pure: the store's digests and the work in flight come in; `node.payload_duty` acts.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshems.core.cluster import ZoneState
from meshems.core.deploy_records import FINAL, Deployment


@dataclass(frozen=True, slots=True)
class Duty:
    """`fetch` the bundle of `deployment` from `sources` (peers, best first), or `report` it
    verified (its digest is in the store)."""

    kind: str  # fetch | report
    deployment: Deployment
    sources: tuple[str, ...] = ()


def sources(state: ZoneState, dep: Deployment, node_id: str) -> tuple[str, ...]:
    """Peers that may have the bundle: the node that accepted the deploy, then targets that
    verified it, then every other member."""
    verified = [t for t in dep.targets if dep.status_of(t) == "verified"]
    order = [dep.origin, *verified, *sorted(state.members)]
    return tuple(dict.fromkeys(n for n in order if n != node_id and n in state.members))


def duties(state: ZoneState, node_id: str, stored: frozenset[str], busy: frozenset[str]) -> list[Duty]:
    """The work due now, oldest deployment first; a deployment id in `busy` is in flight."""
    out: list[Duty] = []
    for dep in sorted(state.deployments.values(), key=lambda d: d.index):
        if dep.aborted or node_id not in dep.targets or dep.id in busy:
            continue
        if dep.status_of(node_id) in FINAL:
            continue
        if dep.digest in stored:
            out.append(Duty("report", dep))
        else:
            out.append(Duty("fetch", dep, sources(state, dep, node_id)))
    return out
