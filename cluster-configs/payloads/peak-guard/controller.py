"""peak-guard: keep the zone's grid import under the policy's limit by discharging the
batteries in proportion to their headroom.

The contract a controller payload fulfils: `decide(image, policy)` gets the cycle's frozen
process image and the active policy as plain dicts (JSON types) and returns the setpoints
it wants; it keeps no state between cycles, reads no clock, opens no file or socket. Its
decisions still pass the core's checks (device limits, envelope, fencing) before anything
is written, so a wrong answer here is refused, never actuated.

    image  = {"grid_kw": 42.0,
              "batteries": [{"id": "n1-bat", "ok": True, "power_kw": 0.0, "soc_pct": 60.0,
                             "max_discharge_kw": 50.0, "max_charge_kw": 50.0}, ...]}
    policy = {"import_limit_kw": 30.0, "soc_min_pct": 10.0}
    decide(image, policy) -> {"setpoints": {"n1-bat": 12.0}, "reason": "..."}   # kW, + discharge
"""

from __future__ import annotations

from typing import Any


def decide(image: dict[str, Any], policy: dict[str, Any]) -> dict[str, Any]:
    limit_kw = float(policy.get("import_limit_kw", 1e9))
    soc_min_pct = float(policy.get("soc_min_pct", 10.0))
    usable = [
        b for b in image.get("batteries", []) if b.get("ok") and float(b.get("soc_pct", 0.0)) > soc_min_pct
    ]
    # the import the batteries' present power hides: grid + what they already discharge
    base_kw = float(image.get("grid_kw", 0.0)) + sum(float(b.get("power_kw", 0.0)) for b in usable)
    need_kw = max(0.0, base_kw - limit_kw)
    room = {b["id"]: max(0.0, float(b.get("max_discharge_kw", 0.0))) for b in usable}
    total_room = sum(room.values())
    if need_kw <= 0.0 or total_room <= 0.0:
        return {"setpoints": {b["id"]: 0.0 for b in usable}, "reason": "import within the limit"}
    share = min(1.0, need_kw / total_room)
    setpoints = {bid: round(r * share, 3) for bid, r in room.items()}
    return {"setpoints": setpoints, "reason": f"import {base_kw:.1f} kW over the {limit_kw:.1f} kW limit"}
