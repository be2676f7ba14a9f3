"""Fast local protection at a node's point of connection: overload sheds relays by priority,
over-export curtails PV, at once, without waiting for the leader or the cloud.

Pure: one meter reading and the node's loads in, the actions out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LoadState:
    id: str  # "RELAY_DEVICE:CHANNEL"
    closed: bool
    power_kw: float


@dataclass(frozen=True, slots=True)
class Trip:
    """A protection action: open a load, or limit PV to `pv_limit_pct`."""

    kind: str  # "shed" | "curtail"
    target: str
    reason: str
    pv_limit_pct: float = 0.0


def protect(
    grid_kw: float,
    max_import_kw: float,
    max_export_kw: float,
    loads: Sequence[LoadState],
    shed_order: Sequence[str],
    pv_ids: Sequence[str] = (),
) -> tuple[Trip, ...]:
    """The actions that bring the point of connection back inside its hard limits."""
    trips: list[Trip] = []
    if grid_kw > max_import_kw:
        excess = grid_kw - max_import_kw
        by_id = {ld.id: ld for ld in loads}
        order = list(shed_order) + sorted(ld.id for ld in loads if ld.id not in shed_order)
        for load_id in order:
            ld = by_id.get(load_id)
            if ld is None or not ld.closed:
                continue
            trips.append(Trip("shed", load_id, f"import {grid_kw:.1f} kW over {max_import_kw:.1f} kW"))
            excess -= max(ld.power_kw, 0.0)
            if excess <= 0:
                break
    elif grid_kw < -max_export_kw:
        for pv in pv_ids:
            trips.append(Trip("curtail", pv, f"export {-grid_kw:.1f} kW over {max_export_kw:.1f} kW", 0.0))
    return tuple(trips)
