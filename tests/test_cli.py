"""Helpers of the CLI (no processes): the WireGuard cell of `meshems status`, policy values."""

from __future__ import annotations

from meshems.cli import overlay_cell


def test_overlay_cell_shows_age_and_counters_and_marks_stale_peers() -> None:
    cell = overlay_cell(
        [
            {"peer": "n2", "handshake_age_s": 3.2, "rx_bytes": 1_234_567, "tx_bytes": 512, "stale": False},
            {"peer": "n3", "handshake_age_s": None, "rx_bytes": 0, "tx_bytes": 0, "stale": True},
        ]
    )
    assert cell == "n2 3s rx 1.2M tx 512B, [red]n3 never rx 0B tx 0B stale[/red]"


def test_overlay_cell_without_an_overlay_or_with_an_error() -> None:
    assert overlay_cell(None) == "-"
    assert overlay_cell({"error": "E_OVERLAY: wg show failed"}) == "[red]E_OVERLAY: wg show failed[/red]"
    long = overlay_cell({"error": "x" * 100})  # cut, but the markup stays closed
    assert long == "[red]" + "x" * 60 + "[/red]"


# Found by an attack probe: `reserve_forecast=maybe` became False without a word.
def test_policy_values_are_parsed_strictly() -> None:
    import pytest

    from meshems.cli import _parse_policy_values
    from meshems.core.errors import ConfigError

    assert _parse_policy_values(["reserve_forecast=off", "import_limit_kw=40", "shed_order=r1:1,r1:2"]) == {
        "reserve_forecast": False,
        "import_limit_kw": 40.0,
        "shed_order": ["r1:1", "r1:2"],
    }
    assert _parse_policy_values(["reserve_forecast=TRUE"]) == {"reserve_forecast": True}
    for bad, text in (("reserve_forecast=maybe", "true or false"), ("cycle_s=fast", "needs a number"),
                      ("nope=1", "known key")):  # fmt: skip
        with pytest.raises(ConfigError, match=text):
            _parse_policy_values([bad])
