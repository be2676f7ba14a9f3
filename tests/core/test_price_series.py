"""Dated prices (a dynamic tariff): CSV text to quarter-hour series, and the price at a time."""

from __future__ import annotations

import pytest

from meshems.core.price_series import PriceCsvError, parse_csv, price_at

T0 = 1_796_169_600.0  # 2026-12-02 00:00 UTC


def test_hourly_iso_rows_with_offsets_become_quarter_hours() -> None:
    text = "time,import,export\n2026-12-02T01:00+01:00,0.30,0.08\n2026-12-02T01:00Z,0.25,0.07\n"
    start, imp, exp = parse_csv(text)
    assert start == T0  # 01:00+01:00 is midnight UTC
    assert imp == (0.30,) * 4 + (0.25,) * 4 and exp == (0.08,) * 4 + (0.07,) * 4


def test_quarter_hour_unix_rows_without_export_and_comments() -> None:
    rows = "\n".join(f"{T0 + 900 * i:.0f},{0.1 * (i + 1):.1f}" for i in range(3))
    start, imp, exp = parse_csv("# day-ahead\n" + rows + "\n\n")
    assert start == T0 and imp == pytest.approx((0.1, 0.2, 0.3)) and exp == ()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "no price rows"),
        ("2026-12-02T00:00,0.3\n", "line 1: '2026-12-02T00:00' has no UTC offset"),
        ("2026-12-02T00:00Z,cheap\n", "line 1: import price 'cheap'"),
        ("2026-12-02T00:00Z,0.3,0.1,9\n", "line 1: 4 columns"),
        ("2026-12-02T00:05Z,0.3\n", "not on a quarter-hour"),
        ("2026-12-02T01:00Z,0.3\n2026-12-02T00:00Z,0.3\n", "times must rise"),
        ("2026-12-02T00:00Z,0.3\n2026-12-02T00:20Z,0.3\n", "a quarter-hour or an hour apart"),
        ("2026-12-02T00:00Z,1e9\n", "not a price per kWh"),
        ("".join(f"{T0 + 3600 * i:.0f},0.3\n" for i in range(49)), "at most 192"),
        ("x" * (1 << 21), "bytes"),
    ],
)
def test_bad_csv_names_the_line_or_the_rule(text: str, words: str) -> None:
    with pytest.raises(PriceCsvError, match=words.replace("(", r"\(")):
        parse_csv(text)


def test_price_at_prefers_the_series_then_the_daily_profile_then_the_series_days_away() -> None:
    series = tuple(float(i) for i in range(96))  # one day, each quarter-hour its own price
    daily = tuple(100.0 + h for h in range(24))
    assert price_at(series, T0, daily, T0 + 5 * 900) == 5.0
    assert price_at(series, T0, daily, T0 + 86400 + 3600) == 101.0  # past the series: the profile
    assert price_at(series, T0, (), T0 + 86400 + 3600) == 4.0  # no profile: the series a day before
    assert price_at(series, T0, (), T0 - 900) == 95.0  # before it: its first day, same time
    assert price_at(series[:8], T0, (), T0 + 86400 * 3) == 0.0  # the same time of day, day 1
    assert price_at(series[:8], T0, (), T0 + 3600 * 5) == 7.0  # no such time: its last value
    assert price_at((), 0.0, (), T0) is None
