"""`meshems policy set` values on the command line (no processes)."""

from __future__ import annotations

import pytest

from meshems.cli.control import parse_policy_values
from meshems.core.errors import ConfigError


# Found by an attack probe: `reserve_forecast=maybe` became False without a word.
def test_policy_values_are_parsed_strictly() -> None:
    assert parse_policy_values(["reserve_forecast=off", "import_limit_kw=40", "shed_order=r1:1,r1:2"]) == {
        "reserve_forecast": False,
        "import_limit_kw": 40.0,
        "shed_order": ["r1:1", "r1:2"],
    }
    assert parse_policy_values(["reserve_forecast=TRUE"]) == {"reserve_forecast": True}
    for bad, text in (("reserve_forecast=maybe", "true or false"), ("cycle_s=fast", "needs a number"),
                      ("nope=1", "known key")):  # fmt: skip
        with pytest.raises(ConfigError, match=text):
            parse_policy_values([bad])


def test_lists_words_and_soc_targets_are_parsed() -> None:
    prices = "import_price=" + ",".join(["0.3"] * 24)
    days, targets = "days_off=2026-12-24, 2026-12-25", "soc_targets=07:00@80,17:30@50"
    values = parse_policy_values(["mode=tariff", prices, days, targets])
    assert values["mode"] == "tariff" and values["import_price"] == [0.3] * 24
    assert values["days_off"] == ["2026-12-24", "2026-12-25"]
    assert values["soc_targets"] == [{"at": "07:00", "pct": 80.0}, {"at": "17:30", "pct": 50.0}]
    bad_values = [("import_price=0.3,cheap", "comma-separated numbers"), ("soc_targets=07:00", "HH:MM@PCT"),
                  ("soc_targets=07:00@lots", "HH:MM@PCT")]  # fmt: skip
    for bad, text in bad_values:
        with pytest.raises(ConfigError, match=text):
            parse_policy_values([bad])


def test_a_prices_csv_becomes_policy_values_and_a_bad_one_names_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from meshems.cli.control import price_values

    good = tmp_path / "day-ahead.csv"
    good.write_text("time,import\n2026-12-02T00:00Z,0.30\n2026-12-02T01:00Z,0.25\n")
    values, summary = price_values(str(good))
    assert values["price_series_start_s"] == 1_796_169_600.0
    assert values["import_price_series"] == [0.30] * 4 + [0.25] * 4 and values["export_price_series"] == []
    assert "8 quarter-hours from 2026-12-02 00:00 UTC" in summary and "0.25-0.3" in summary
    bad = tmp_path / "bad.csv"
    bad.write_text("2026-12-02T00:00Z,cheap\n")
    with pytest.raises(ConfigError, match=r"bad\.csv: line 1: import price 'cheap'"):
        price_values(str(bad))
    with pytest.raises(ConfigError, match=r"missing\.csv"):
        price_values(str(tmp_path / "missing.csv"))
