"""The checks a controller payload's decisions pass before they may be dispatched: exactly those a
built-in controller's setpoints meet, because each decision goes through the same code: the
dispatch command's validation (`core.commands.decode`: a map of device_id, a finite kw, a
reason) and its apply (`core.zone_handlers.dispatch`: a battery or PV device the zone knows,
within its [min_kw, max_kw]). The node's actuator still refuses anything past its own config.

Pure: no I/O. A refused decision is dropped with its code (E_CMD_MALFORMED, E_UNKNOWN_DEVICE,
E_LIMIT) and the reason; the accepted ones become setpoints of controller `payload:NAME`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meshems.core import commands
from meshems.core import zone_handlers as handlers
from meshems.core.cluster import ZoneState
from meshems.core.commands import Rejection
from meshems.core.zone_records import Device

#: what one cycle may return (the dispatch command's own cap on setpoints)
MAX_DECISIONS = 2000
MAX_REASON_CHARS = 200  # as dispatch.command_fields truncates a built-in reason
_FIELDS = frozenset({"device_id", "kw", "reason"})


@dataclass(frozen=True, slots=True)
class Refusal:
    index: int  # the decision's place in the payload's answer (-1: the answer as a whole)
    device_id: str
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class Checked:
    accepted: tuple[tuple[str, float, str], ...]  # (device id, kW, the payload's reason)
    refused: tuple[Refusal, ...]

    @property
    def ok(self) -> bool:
        return not self.refused


def _shape_refusal(i: int, d: object, seen: set[str]) -> Refusal | None:
    """What the dispatch command cannot even carry: not a map, other keys, a duplicate device."""
    if not isinstance(d, Mapping):
        return Refusal(i, "", "E_CMD_MALFORMED", f"decision {i} is not a map of device_id, kw, reason")
    device_id = d.get("device_id")
    shown = device_id if isinstance(device_id, str) else ""
    extra = set(d) - _FIELDS
    if extra:
        keys = sorted(map(str, extra))[:5]
        return Refusal(i, shown[:63], "E_CMD_MALFORMED", f"decision {i}: unknown keys {keys}")
    if "reason" in d and not isinstance(d["reason"], str):
        return Refusal(i, shown[:63], "E_CMD_MALFORMED", f"decision {i}: reason must be text")
    if shown in seen:
        return Refusal(i, shown[:63], "E_CMD_MALFORMED", f"decision {i}: {shown!r} is decided twice")
    return None


def check_one(d: Mapping[str, Any], state: ZoneState, i: int = 0) -> Refusal | tuple[str, float, str]:
    """One decision through the dispatch command's validation and apply, as if it were the
    only setpoint of a built-in dispatch cycle."""
    reason = str(d.get("reason", ""))[:MAX_REASON_CHARS]
    row = {"device_id": d.get("device_id"), "kw": d.get("kw"), "controller": "payload", "reason": reason}
    shown = row["device_id"][:63] if isinstance(row["device_id"], str) else ""
    try:
        data = commands.encode("dispatch", "payload-check", cycle=1, setpoints=[row], relays=[],
                               envelopes=[], inputs={})  # fmt: skip
    except (TypeError, ValueError, OverflowError) as exc:
        return Refusal(i, shown, "E_CMD_MALFORMED", f"decision {i}: not encodable ({exc})")
    cmd = commands.decode(data)
    if isinstance(cmd, Rejection):
        return Refusal(i, shown, cmd.code, f"decision {i}: {cmd.message}")
    _changes, result = handlers.dispatch(state, cmd, 0, 0)
    if not result.ok:
        return Refusal(i, shown, result.code, f"decision {i}: {result.message}")
    sp = cmd.fields["setpoints"][0]
    return sp["device_id"], sp["kw"], reason


def check_decisions(decisions: object, devices: Mapping[str, Device]) -> Checked:
    """Each of a payload's decisions (a list of {device_id, kw, reason}) checked against the
    zone's `devices` (ZoneState.devices): the accepted ones and why the others were refused."""
    if not isinstance(decisions, list | tuple):
        return Checked((), (Refusal(-1, "", "E_CMD_MALFORMED", "the decisions must be a list"),))
    if len(decisions) > MAX_DECISIONS:
        msg = f"{len(decisions)} decisions, at most {MAX_DECISIONS} per cycle"
        return Checked((), (Refusal(-1, "", "E_CMD_MALFORMED", msg),))
    state = ZoneState(devices=devices)
    accepted: list[tuple[str, float, str]] = []
    refused: list[Refusal] = []
    seen: set[str] = set()
    for i, d in enumerate(decisions):
        out = _shape_refusal(i, d, seen) or check_one(d, state, i)
        if isinstance(out, Refusal):
            refused.append(out)
        else:
            accepted.append(out)
            seen.add(out[0])
    return Checked(tuple(accepted), tuple(refused))


def as_setpoints(checked: Checked, name: str) -> tuple[tuple[str, float, str, str], ...]:
    """The accepted decisions as DispatchResult.setpoints (device, kW, controller, reason)."""
    return tuple((dev, kw, f"payload:{name}", why) for dev, kw, why in sorted(checked.accepted))
