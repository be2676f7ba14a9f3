"""The core's checks of a controller payload's decisions: each refusal with its code, and the
same verdict as the dispatch command a built-in controller's setpoint goes through."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshems.core import commands
from meshems.core import zone_handlers as handlers
from meshems.core.cluster import ZoneState
from meshems.core.commands import Rejection
from meshems.core.payload_decisions import MAX_DECISIONS, as_setpoints, check_decisions
from meshems.core.zone_records import Device

DEVICES = {
    "n1-bat": Device("n1-bat", "battery", "n1", -50.0, 50.0),
    "n1-pv": Device("n1-pv", "pv", "n1", 0.0, 40.0),
    "n1-meter": Device("n1-meter", "meter", "n1", 0.0, 0.0),
    "n1-relay": Device("n1-relay", "relay", "n1", 0.0, 0.0),
}


def one(d: object) -> tuple[str, str]:
    checked = check_decisions([d], DEVICES)
    if checked.accepted:
        return ("ok", "")
    (r,) = checked.refused
    return (r.code, r.reason)


@pytest.mark.parametrize(
    ("decision", "code", "words"),
    [
        ({"device_id": "n1-bat", "kw": 12.5, "reason": "peak"}, "ok", ""),
        ({"device_id": "n1-bat", "kw": -50, "reason": ""}, "ok", ""),  # the limit itself, an int
        ({"device_id": "n1-pv", "kw": 40.0}, "ok", ""),  # no reason: ""
        ({"device_id": "n1-bat", "kw": 50.001, "reason": ""}, "E_LIMIT", "outside [-50.0, 50.0]"),
        ({"device_id": "n1-pv", "kw": -1.0, "reason": ""}, "E_LIMIT", "n1-pv"),
        ({"device_id": "ghost", "kw": 1.0, "reason": ""}, "E_UNKNOWN_DEVICE", "'ghost'"),
        ({"device_id": "n1-meter", "kw": 0.0, "reason": ""}, "E_UNKNOWN_DEVICE", "n1-meter"),
        ({"device_id": "n1-relay", "kw": 0.0, "reason": ""}, "E_UNKNOWN_DEVICE", "n1-relay"),
        ({"device_id": "n1-bat", "kw": math.nan, "reason": ""}, "E_CMD_MALFORMED", "finite"),
        ({"device_id": "n1-bat", "kw": math.inf, "reason": ""}, "E_CMD_MALFORMED", "finite"),
        ({"device_id": "n1-bat", "kw": True, "reason": ""}, "E_CMD_MALFORMED", "finite"),
        ({"device_id": "n1-bat", "kw": "12", "reason": ""}, "E_CMD_MALFORMED", "finite"),
        ({"device_id": "n1-bat", "kw": 10**30, "reason": ""}, "E_CMD_MALFORMED", "not encodable"),
        ({"device_id": 7, "kw": 1.0, "reason": ""}, "E_CMD_MALFORMED", "wrong type"),
        ({"kw": 1.0}, "E_CMD_MALFORMED", "wrong type"),
        ({"device_id": "n1-bat", "kw": 1.0, "reason": 5}, "E_CMD_MALFORMED", "reason must be text"),
        ({"device_id": "n1-bat", "kw": 1.0, "relay": True}, "E_CMD_MALFORMED", "unknown keys ['relay']"),
        (["n1-bat", 1.0], "E_CMD_MALFORMED", "not a map"),
    ],
)
def test_each_decision_is_accepted_or_refused_with_its_code(decision: object, code: str, words: str) -> None:
    got_code, reason = one(decision)
    assert got_code == code, reason
    assert words in reason


def test_the_answer_as_a_whole_must_be_a_bounded_list() -> None:
    for bad in ({"n1-bat": 1.0}, None, "n1-bat"):
        checked = check_decisions(bad, DEVICES)
        assert not checked.accepted and checked.refused[0].index == -1
    many = [{"device_id": "n1-bat", "kw": 0.0}] * (MAX_DECISIONS + 1)
    assert "at most 2000" in check_decisions(many, DEVICES).refused[0].reason


def test_a_device_decided_twice_keeps_the_first_and_refuses_the_second() -> None:
    checked = check_decisions(
        [
            {"device_id": "n1-bat", "kw": 1.0},
            {"device_id": "n1-bat", "kw": 2.0},
            {"device_id": "n1-pv", "kw": 3},
        ],
        DEVICES,
    )
    assert checked.accepted == (("n1-bat", 1.0, ""), ("n1-pv", 3.0, ""))
    assert [(r.index, r.code) for r in checked.refused] == [(1, "E_CMD_MALFORMED")]
    assert "decided twice" in checked.refused[0].reason


def test_accepted_decisions_become_dispatch_setpoints_of_the_payload() -> None:
    long_reason = "x" * 500
    checked = check_decisions([{"device_id": "n1-pv", "kw": 5, "reason": long_reason},
                               {"device_id": "n1-bat", "kw": -3.0, "reason": "charge"}], DEVICES)  # fmt: skip
    assert as_setpoints(checked, "peak-guard") == (
        ("n1-bat", -3.0, "payload:peak-guard", "charge"),
        ("n1-pv", 5.0, "payload:peak-guard", "x" * 200),
    )


def _dispatch_verdict(d: dict[str, object]) -> str:
    """What a built-in dispatch carrying this one setpoint gets: decoded, then applied."""
    row = {"device_id": d["device_id"], "kw": d["kw"], "controller": "c", "reason": ""}
    try:
        data = commands.encode("dispatch", "r", cycle=1, setpoints=[row], relays=[], envelopes=[], inputs={})
    except OverflowError:
        return "E_CMD_MALFORMED"
    cmd = commands.decode(data)
    if isinstance(cmd, Rejection):
        return cmd.code
    _, result = handlers.dispatch(ZoneState(devices=DEVICES), cmd, 1, 1)
    return "ok" if result.ok else result.code


KW = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-100, 100), st.booleans())


@given(st.fixed_dictionaries({"device_id": st.sampled_from([*DEVICES, "ghost", ""]), "kw": KW}))
def test_the_payload_check_agrees_with_the_dispatch_command_a_built_in_setpoint_meets(d: dict) -> None:
    assert one(d)[0] == _dispatch_verdict(d)
