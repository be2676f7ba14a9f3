"""What a controller payload sees each cycle: the frozen process image and the active policy as
plain maps of JSON types (what the sandbox sends its worker, msgpack-ready), the same values the
built-in controllers read from `core.process_image` and `core.policy`.

Pure: no I/O. `devices` adds each device's declared limits, the ones its decisions must keep.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from meshems.core.policy import Policy
from meshems.core.process_image import ProcessImage
from meshems.core.zone_records import Device


def image_doc(image: ProcessImage, devices: Mapping[str, Device] | None = None) -> dict[str, Any]:
    """The image as {grid_kw, complete, nodes, batteries, pvs, loads[, devices]}, every list
    sorted as in the image; a battery's max_charge_kw and max_discharge_kw are positive."""
    doc: dict[str, Any] = {
        "grid_kw": image.grid_kw,
        "complete": image.complete,
        "nodes": [asdict(n) for n in image.nodes],
        "batteries": [asdict(b) for b in image.batteries],
        "pvs": [asdict(p) for p in image.pvs],
        "loads": [asdict(ld) for ld in image.loads],
    }
    if devices is not None:
        doc["devices"] = [
            {"id": d.id, "kind": d.kind, "owner": d.owner, "min_kw": d.min_kw, "max_kw": d.max_kw}
            for d in sorted(devices.values(), key=lambda d: d.id)
        ]
    return doc


def policy_doc(policy: Policy) -> dict[str, Any]:
    """The policy's fields (`Policy.to_dict`: lists for tuples, soc_targets as {at, pct})."""
    return policy.to_dict()
