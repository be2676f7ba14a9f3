"""Load history CSV text to 15-minute means (core.load_csv): time formats, time zones across
DST, separators, headers, units, resampling, and an error naming file and line for each bad
input."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from meshems.core.load_csv import LoadCsvError, parse_load_csv

BERLIN = ZoneInfo("Europe/Berlin")
T0 = 1_704_067_200  # 2024-01-01 00:00 UTC, on a quarter hour


def unix_rows(values: list[float], step_s: int = 900, t0: int = T0) -> str:
    return "".join(f"{t0 + i * step_s},{v}\n" for i, v in enumerate(values))


def test_unix_seconds_at_15_minutes_as_today() -> None:
    s = parse_load_csv(unix_rows([1.0, 2.0, 3.0]), "load.csv")
    assert s.t0_s == T0 and s.kw.tolist() == [1.0, 2.0, 3.0]
    assert (s.rows, s.source_step_s, s.header, s.separator, s.missing_steps) == (3, 900.0, None, ",", 0)


def test_numpy_savetxt_rows_are_read() -> None:
    rows = np.column_stack([T0 + 900.0 * np.arange(3), [1.5, 2.5, 3.5]])
    text = "\n".join(",".join(f"{x:.18e}" for x in r) for r in rows)  # np.savetxt's default format
    assert parse_load_csv(text, "load.csv").kw.tolist() == [1.5, 2.5, 3.5]


def test_iso_times_with_offsets_are_instants() -> None:
    text = "time,kw\n2024-01-01T01:00:00+01:00,1\n2024-01-01T00:15:00Z,2\n2024-01-01 02:30+02:00,3\n"
    s = parse_load_csv(text, "load.csv", BERLIN)  # the zone does not apply to times with offsets
    assert s.header and s.t0_s == T0 and s.kw.tolist() == [1.0, 2.0, 3.0]


def test_naive_times_are_read_in_utc_by_default() -> None:
    s = parse_load_csv("2024-01-01 00:00,1\n2024-01-01 00:15,2\n", "load.csv")
    assert s.t0_s == T0


def berlin_rows(start: datetime, steps: int, step_s: int = 900, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """Naive Berlin wall-clock rows every `step_s` of real time from `start` (UTC); the value is
    the row's UTC minute of the day, so a misplaced row shows."""
    out = []
    for i in range(steps):
        t = start + timedelta(seconds=i * step_s)
        out.append(f"{t.astimezone(BERLIN).replace(tzinfo=None):{fmt}},{t.hour * 60 + t.minute}")
    return "\n".join(out)


def test_naive_local_times_across_the_spring_gap() -> None:
    start = datetime(2024, 3, 31, 0, 0, tzinfo=UTC)  # 01:00 CET; at 01:00 UTC clocks jump 02:00 -> 03:00
    text = berlin_rows(start, 12)
    assert "2024-03-31 01:45,45\n2024-03-31 03:00,60" in text  # the local hour 02:xx never happens
    s = parse_load_csv(text, "load.csv", BERLIN)
    assert s.t0_s == start.timestamp() and s.missing_steps == 0
    assert s.kw.tolist() == [15.0 * i for i in range(12)]


def test_naive_local_times_across_the_autumn_overlap() -> None:
    start = datetime(2024, 10, 26, 23, 30, tzinfo=UTC)  # 01:30 CEST; 02:00-03:00 local happens twice
    text = berlin_rows(start, 16)
    assert text.count("2024-10-27 02:15,") == 2
    s = parse_load_csv(text, "load.csv", BERLIN)
    assert s.t0_s == start.timestamp() and s.missing_steps == 0 and s.repeated_hour_rows == 4
    assert s.kw.tolist() == [(23 * 60 + 30 + 15 * i) % 1440 for i in range(16)]


def test_a_local_time_the_clocks_skipped_is_an_error() -> None:
    text = "2024-03-31 01:45,1\n2024-03-31 02:15,2\n"
    with pytest.raises(LoadCsvError) as info:
        parse_load_csv(text, "load.csv", BERLIN)
    assert info.value.message.startswith(
        "load.csv:2: local time '2024-03-31 02:15' does not exist in Europe/Berlin"
    )
    assert info.value.exit_code == 2 and str(info.value).startswith("E_LOAD_CSV: ")


def test_five_minute_data_is_averaged_into_quarter_hours_and_gaps_stay_gaps() -> None:
    values = [1, 2, 3, 10, 20, 30] + [None] * 3 + [4, None, 8]
    text = "".join(f"{T0 + 300 * i},{'' if v is None else v}\n" for i, v in enumerate(values))
    s = parse_load_csv(text, "load.csv")
    assert s.source_step_s == 300 and s.rows == 12
    assert s.kw[:2].tolist() == [2.0, 20.0] and math.isnan(s.kw[2]) and s.kw[3] == 6.0
    assert s.missing_steps == 1


def test_missing_rows_are_gaps() -> None:
    s = parse_load_csv(f"{T0},1\n{T0 + 900},2\n{T0 + 3600},5\n", "load.csv")
    assert s.kw.size == 5 and np.isnan(s.kw[2:4]).all() and s.kw[4] == 5.0


def test_watts_semicolons_decimal_commas_quotes_and_a_bom() -> None:
    text = '\ufeff"Zeit";"Leistung [W]"\n# from the meter\n\n"2024-01-01 00:00";"1500,5"\n'
    text += "2024-01-01 00:15;2000\n"
    s = parse_load_csv(text, "load.csv", unit="W")
    assert s.header == ("Zeit", "Leistung [W]") and s.header_unit() == "W"
    assert s.separator == ";" and s.kw.tolist() == [1.5005, 2.0]


def test_without_a_header_the_first_row_is_data() -> None:
    s = parse_load_csv(f"{T0};1,25\n{T0 + 900};2\n", "load.csv")
    assert s.header is None and s.header_unit() is None and s.rows == 2 and s.kw.tolist() == [1.25, 2.0]


@pytest.mark.parametrize(
    ("column", "unit"),
    [("kw", "kW"), ("power_kW", "kW"), ("P (W)", "W"), ("watts", "W"), ("power", None), ("kwh", None)],
)
def test_a_header_may_name_the_unit(column: str, unit: str | None) -> None:
    assert parse_load_csv(f"time,{column}\n{T0},1\n{T0 + 900},2\n", "load.csv").header_unit() == unit


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("time,kw\nx,1\n", "load.csv:2: timestamp 'x' is neither ISO 8601 nor unix seconds"),
        (f"{T0},1\n{T0 + 900},abc\n", "load.csv:2: power 'abc' is not a number"),
        (f"{T0},1\n{T0 + 900},inf\n", "load.csv:2: power 'inf' is not a finite number"),
        (f"{T0},1\n\n{T0 + 900},1,5\n", "load.csv:3: expected 2 fields 'time,power', got 3 (a decimal"),
        ("just text\n", "load.csv:1: no separator in 'just text'"),
        (f"{T0},1\n{T0},2\n", f"load.csv:2: timestamp '{T0}' is not after the previous row's (line 1)"),
        (f"{T0 + 900},1\n{T0},2\n", "load.csv:2: timestamp"),
        (f"{T0 * 1000},1\n", "load.csv:1: timestamp '1704067200000' is outside 1970..2100 as unix seconds "
         "(milliseconds?"),
        (unix_rows([1, 2, 3], step_s=3600), "load.csv:2: rows are 60 min apart (the file's usual step); the "
         "step must divide 15 minutes"),
        (unix_rows([1, 2, 3], step_s=1200), "load.csv:2: rows are 20 min apart"),
        (f"{T0},1\n{T0 + 300},2\n{T0 + 600},3\n{T0 + 1050},4\n", "load.csv:4: row is 7.5 min after the "
         "previous one (line 3), not a whole number of the file's 5 min steps"),
        (f"{T0},1\n{T0 + 900},2\n{T0 + 900 + 11 * 366 * 86400},3\n", "load.csv:3: the rows span 11 years"),
        ("time,kw\n", "load.csv: 0 data rows; need at least 2"),
        (f"# one row\n{T0},1\n", "load.csv: 1 data rows"),
    ],
    ids=["time", "power", "inf", "fields", "separator", "duplicate", "backwards", "millis", "hourly",
         "20-min", "irregular", "span", "empty", "one-row"],
)  # fmt: skip
def test_each_bad_input_names_the_file_and_line(text: str, error: str) -> None:
    with pytest.raises(LoadCsvError) as info:
        parse_load_csv(text, "load.csv", BERLIN)
    assert info.value.message.startswith(error), info.value.message
    assert info.value.exit_code == 2
