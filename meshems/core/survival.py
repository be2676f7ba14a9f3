"""Survival and liveness: what a node does without quorum, and which peers are gone.

Rules (pure; time comes in as `now_s`):
- A node without quorum (or without a known leader) for `survival_after_s` enters survival
  mode: it runs the zone's dispatch on its own site, inside the envelope the leader last
  committed for it (its share of the import and export limits, a SoC reserve at least the
  policy's floor, its own shed order). Without an envelope, protection alone keeps the site
  safe. Quorum back: normal mode at once, following the leader's setpoints again.
- A node whose replicated report has not advanced for `stale_report_s` is gone (its
  gateway stopped): dispatch counts its batteries as reverted, ownership moves its shared
  devices. Every node tracks this from the applied reports, so a new leader knows at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshems.core.cluster import ZoneState
from meshems.core.policy import Envelope, Policy


def survival_policy(base: Policy, envelope: Envelope) -> Policy:
    """The policy a node runs on its own inside its envelope."""
    return Policy(
        import_limit_kw=envelope.import_limit_kw,
        export_limit_kw=envelope.export_limit_kw,
        soc_floor_pct=max(base.soc_floor_pct, envelope.soc_reserve_pct),
        soc_ceiling_pct=base.soc_ceiling_pct,
        shed_order=envelope.shed,
        margin_kw=base.margin_kw,
        restore_margin_kw=base.restore_margin_kw,
        reserve_forecast=base.reserve_forecast,
        cycle_s=base.cycle_s,
        mode="reactive",  # alone, a node has no zone plan: its envelope and the rules
    )


@dataclass
class QuorumWatch:
    """When quorum was lost, and whether the node is in survival mode."""

    survival_after_s: float
    lost_since_s: float | None = None
    survival: bool = False

    def update(self, quorum: bool, now_s: float) -> str | None:
        """Feed the current view; returns "survival" or "normal" when the mode changes."""
        if quorum:
            self.lost_since_s = None
            if self.survival:
                self.survival = False
                return "normal"
            return None
        if self.lost_since_s is None:
            self.lost_since_s = now_s
        if not self.survival and now_s - self.lost_since_s >= self.survival_after_s:
            self.survival = True
            return "survival"
        return None


@dataclass
class Liveness:
    """Each node's last report seq and since when it has not moved."""

    stale_after_s: float
    seen: dict[str, tuple[int, float]] = field(default_factory=dict)

    def update(self, state: ZoneState, now_s: float) -> None:
        for node, rep in state.reports.items():
            last = self.seen.get(node)
            if last is None or last[0] != rep.seq:
                self.seen[node] = (rep.seq, now_s)

    def stale(self, state: ZoneState, now_s: float) -> frozenset[str]:
        return frozenset(
            node
            for node in state.reports
            if node in self.seen and now_s - self.seen[node][1] > self.stale_after_s
        )
