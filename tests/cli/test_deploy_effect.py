"""`meshems deploy status` says what a data payload's copy does: a policy is applying, applied
or refused by the zone; a forecast model applied; device profiles at the next start."""

from __future__ import annotations

from meshems.cli.deploy import effect

VERIFIED = {"status": "verified"}


def test_each_data_kind_says_what_its_verified_copy_does() -> None:
    policy = {"kind": "policy", "state": "done", "applied": ""}
    assert effect(policy, VERIFIED) == "applying"
    assert effect({**policy, "applied": "OK"}, VERIFIED) == "applied"
    assert effect({**policy, "state": "failed", "applied": "E_POLICY: shed_order"}, VERIFIED) == "refused"
    assert effect({**policy, "state": "active"}, {"status": "stored"}) == ""
    assert effect({"kind": "forecast-model", "state": "done"}, VERIFIED) == "applied"
    assert effect({"kind": "profiles", "state": "done"}, VERIFIED) == "at next start"
    assert effect({"kind": "profiles", "state": "aborted"}, VERIFIED) == ""
    assert effect({"kind": "profiles", "state": "active"}, {"status": "stored"}) == ""
