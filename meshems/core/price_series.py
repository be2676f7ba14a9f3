"""Dated prices: a dynamic tariff's quarter-hour prices (day-ahead markets, a supplier's
feed) as the policy carries them, read from CSV text, and the price the planner uses at a
time: the dated series where it covers that time, else the daily profile, else the series a
day (or days) earlier, else its last value.

Pure: the CSV text and times come in as arguments; no files or clocks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from datetime import UTC, datetime

STEP_S = 900.0
DAY_S = 86400.0
MAX_VALUES = 192  # two days of quarter-hours: a day-ahead market publishes one day at a time
MAX_PRICE = 1e4
MAX_CSV_BYTES = 1 << 20


class PriceCsvError(ValueError):
    """A CSV that cannot be read as dated prices; the message names the line."""


def _time(text: str, line: int) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise PriceCsvError(f"line {line}: {text!r} is neither unix seconds nor an ISO 8601 time") from None
    if t.tzinfo is None:
        raise PriceCsvError(f"line {line}: {text!r} has no UTC offset (write Z or +01:00)")
    return t.astimezone(UTC).timestamp()


def _price(text: str, line: int, what: str) -> float:
    try:
        v = float(text.strip().replace(",", "."))
    except ValueError:
        raise PriceCsvError(f"line {line}: {what} {text!r} is not a number") from None
    if not math.isfinite(v) or abs(v) > MAX_PRICE:
        raise PriceCsvError(f"line {line}: {what} {v!r} is not a price per kWh (|price| <= {MAX_PRICE:g})")
    return v


def parse_csv(text: str) -> tuple[float, tuple[float, ...], tuple[float, ...]]:
    """(start_s, import per quarter-hour, export per quarter-hour or ()) from rows
    `time,import[,export]`: comma-separated (no quoted commas), a header row skipped, times in
    unix seconds or ISO 8601 with an offset, rows a quarter-hour or an hour apart, each price
    held until the next row's time."""
    if len(text) > MAX_CSV_BYTES:
        raise PriceCsvError(f"more than {MAX_CSV_BYTES} bytes")
    rows: list[tuple[float, float, float | None]] = []
    for line, raw in enumerate(text.splitlines(), start=1):
        row = [cell.strip().strip('"') for cell in raw.split(",")] if raw.strip() else []
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if not rows and not row[0].strip()[:1].isdigit():
            continue  # the header
        if len(row) not in (2, 3):
            raise PriceCsvError(f"line {line}: {len(row)} columns; write time,import[,export]")
        t = _time(row[0], line)
        exp = _price(row[2], line, "export price") if len(row) == 3 and row[2].strip() else None
        rows.append((t, _price(row[1], line, "import price"), exp))
    if not rows:
        raise PriceCsvError("no price rows")
    for (t0, _, _), (t1, _, _) in itertools.pairwise(rows):
        if t1 <= t0:
            raise PriceCsvError(f"times must rise: {t1:.0f} after {t0:.0f}")
    start = rows[0][0]
    if start % STEP_S:
        raise PriceCsvError(f"the first time ({start:.0f}) is not on a quarter-hour")
    gaps = {t1 - t0 for (t0, _, _), (t1, _, _) in itertools.pairwise(rows)}
    step = min(gaps) if gaps else 3600.0
    if step not in (STEP_S, 3600.0) or any(g % step for g in gaps):
        raise PriceCsvError("rows must be a quarter-hour or an hour apart")
    end = rows[-1][0] + step
    n = round((end - start) / STEP_S)
    if n > MAX_VALUES:
        raise PriceCsvError(f"{n} quarter-hours; at most {MAX_VALUES} (two days) at a time")
    imp, exp = [0.0] * n, [0.0] * n
    has_export = all(r[2] is not None for r in rows)
    for k, (t, i_price, e_price) in enumerate(rows):
        until = rows[k + 1][0] if k + 1 < len(rows) else end
        for q in range(round((t - start) / STEP_S), round((until - start) / STEP_S)):
            imp[q], exp[q] = i_price, e_price or 0.0
    return start, tuple(imp), tuple(exp) if has_export else ()


def price_at(series: Sequence[float], start_s: float, daily: Sequence[float], t_s: float) -> float | None:
    """The price at `t_s`: the dated `series` (quarter-hours from `start_s`) where it covers
    it, else the daily profile (24 or 96 values, UTC), else the series whole days earlier or
    later (its first or last day), else None (no prices at all)."""
    if series:
        k = math.floor((t_s - start_s) / STEP_S)
        if 0 <= k < len(series):
            return float(series[k])
    if daily:
        slot = int((t_s % DAY_S) // (DAY_S / len(daily)))
        return float(daily[min(slot, len(daily) - 1)])
    if not series:
        return None
    k, n, day = math.floor((t_s - start_s) / STEP_S), len(series), round(DAY_S / STEP_S)
    if k >= n:  # the series' last day, same time of day
        k -= ((k - (n - 1) + day - 1) // day) * day
    elif k < 0:  # its first day
        k += ((-k + day - 1) // day) * day
    return float(series[k if 0 <= k < n else n - 1])
