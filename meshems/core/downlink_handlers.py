"""What a `cloud_command` (a signed command from the cloud, `core.downlink`) does to the zone
state: refused with E_CMD_REPLAY unless its seq is above the last applied one, else its action
runs through the zone command it maps to and the seq is consumed (also when the action is
refused, so a sequence applies at most once). Pure (the rules of `core.cluster`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshems.core import deploy_handlers, zone_handlers
from meshems.core.commands import Command
from meshems.core.zone_records import Result

if TYPE_CHECKING:
    from meshems.core.cluster import ZoneState

#: action -> the handler of the zone command it maps to
_ACTIONS = {"set_policy": zone_handlers.set_policy, "deploy": deploy_handlers.deploy}


def cloud_command(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
    f = cmd.fields
    if f["seq"] <= state.cloud_command_seq:
        msg = f"cloud command seq {f['seq']} is not above the last applied {state.cloud_command_seq}"
        return {}, Result(False, "E_CMD_REPLAY", msg, term, index)
    changes, result = _ACTIONS[f["action"]](state, Command(f["action"], cmd.rid, f["args"]), term, index)
    return {**changes, "cloud_command_seq": f["seq"]}, result
