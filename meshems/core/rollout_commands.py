"""Validation of the rollout commands: `rollout_step` (a node's or the leader's step of a
controller payload's rollout, with the health figures and the proposer's clock) and
`deploy_rollback` (an operator's return to a version the zone had active before). Every
replica checks the same bytes the same way. Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from meshems.core import deploy_commands as dc
from meshems.core.command_fields import Invalid, number, text
from meshems.core.deploy_commands import deployment_id
from meshems.core.errors import PayloadError
from meshems.core.payload_manifest import parse_version
from meshems.core.rollout_records import FIGURES

#: leader steps: start a node's shadow, promote it, end a rollout past its deadline;
#: node steps: its shadow was healthy, its watch was healthy (active), it failed
STEPS = ("shadow", "watch", "deadline", "healthy", "active", "failed")
_CODE = re.compile(r"^(OK|E_[A-Z0-9_]{1,40})$")


def rollout_step(cmd: Mapping[str, Any]) -> dict[str, Any]:
    phase = text(cmd, "phase", 16)
    if phase not in STEPS:
        raise Invalid("E_CMD_MALFORMED", f"phase {phase!r} is none of {', '.join(STEPS)}")
    figures = cmd.get("figures", {})
    if not isinstance(figures, Mapping) or any(k not in FIGURES for k in figures):
        raise Invalid("E_CMD_MALFORMED", f"field 'figures' must be a map of {', '.join(FIGURES)}")
    for k, v in figures.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise Invalid("E_CMD_MALFORMED", f"figure {k!r} must be a finite number")
    code, reason = cmd.get("code", "OK"), cmd.get("reason", "")
    if not isinstance(code, str) or not _CODE.match(code):
        raise Invalid("E_CMD_MALFORMED", "field 'code' must be OK or E_... (e.g. E_PAYLOAD_CRASH)")
    if phase == "failed" and code == "OK":
        raise Invalid("E_CMD_MALFORMED", "a failed step needs a code E_...")
    if not isinstance(reason, str) or len(reason) > 300:
        raise Invalid("E_CMD_MALFORMED", "field 'reason' must be text of at most 300 characters")
    return {"deployment_id": deployment_id(cmd), "node_id": text(cmd, "node_id"), "phase": phase,
            "figures": {k: float(figures[k]) for k in sorted(figures)}, "code": code, "reason": reason,
            "now_s": number(cmd, "now_s")}  # fmt: skip


def deploy_rollback(cmd: Mapping[str, Any]) -> dict[str, Any]:
    to = cmd.get("to_version", "")
    if to:
        try:
            to = str(parse_version(to, "to_version"))
        except PayloadError as exc:
            raise Invalid("E_CMD_MALFORMED", exc.message) from None
    return {"deployment_id": deployment_id(cmd), "name": text(cmd, "name"), "to_version": to,
            "by": text(cmd, "by", 80)}  # fmt: skip


STEP_FIELDS = frozenset({"deployment_id", "node_id", "phase", "figures", "code", "reason", "now_s"})
ROLLBACK_FIELDS = frozenset({"deployment_id", "name", "to_version", "by"})


def schemas() -> dict[str, tuple[Any, frozenset[str]]]:
    """The deployment and rollout commands' validators and fields (`core.commands.SCHEMAS`)."""
    return {"deploy": (dc.deploy, dc.DEPLOY_FIELDS), "deploy_status": (dc.deploy_status, dc.STATUS_FIELDS),
            "deploy_abort": (dc.deploy_abort, dc.ABORT_FIELDS),
            "deploy_apply": (dc.deploy_apply, dc.APPLY_FIELDS),
            "deploy_rollback": (deploy_rollback, ROLLBACK_FIELDS),
            "rollout_step": (rollout_step, STEP_FIELDS)}  # fmt: skip


#: the largest encoded command of each type (`core.commands.MAX_BYTES_BY_TYPE`); a deploy's is
#: the command cap
MAX_BYTES = {"deploy_status": 1024, "deploy_abort": 256, "deploy_rollback": 512, "rollout_step": 2048,
             "deploy_apply": 32 * 1024}  # fmt: skip
