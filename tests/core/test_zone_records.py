"""Unit tests for `meshems.core.zone_records`: the plain-dict forms status answers use."""

from __future__ import annotations

from meshems.core.zone_records import Result


def test_result_to_dict() -> None:
    res = Result(False, "E_LIMIT", "too much", 2, 9, duplicate=True)
    assert res.to_dict() == {
        "ok": False,
        "code": "E_LIMIT",
        "message": "too much",
        "term": 2,
        "index": 9,
        "duplicate": True,
    }
