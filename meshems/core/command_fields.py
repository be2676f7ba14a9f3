"""What every command validator shares: the refusal types and the checks of one field
(`core.commands` and `core.plan_commands` use them). Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meshems.core.policy import policy_problems

MAX_ID_LEN = 63


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a command was refused: a stable code and a message for humans."""

    code: str
    message: str


class Invalid(Exception):
    """Raised inside validation; turned into a Rejection by `decode`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def text(cmd: Mapping[str, Any], key: str, max_len: int = MAX_ID_LEN) -> str:
    val = cmd.get(key)
    if not isinstance(val, str) or not val or len(val) > max_len:
        raise Invalid("E_CMD_MALFORMED", f"field {key!r} must be a non-empty string of <= {max_len}")
    return val


def number(cmd: Mapping[str, Any], key: str) -> float:
    val = cmd.get(key)
    if isinstance(val, bool) or not isinstance(val, int | float) or not math.isfinite(val):
        raise Invalid("E_CMD_MALFORMED", f"field {key!r} must be a finite number")
    return float(val)


def policy_values(cmd: Mapping[str, Any]) -> dict[str, Any]:
    """A command's `values`: a non-empty map of policy fields that pass `policy_problems`
    (`set_policy` and `deploy_apply` take the same)."""
    values = cmd.get("values")
    if not isinstance(values, dict) or not values:
        raise Invalid("E_CMD_MALFORMED", "field 'values' must be a non-empty map of policy fields")
    problems = policy_problems(values)
    if problems:
        raise Invalid("E_POLICY", "; ".join(problems))
    return values
