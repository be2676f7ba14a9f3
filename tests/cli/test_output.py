"""Helpers of the CLI's output (no processes): the WireGuard cell of `meshems status`."""

from __future__ import annotations

from meshems.cli.output import overlay_cell


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
