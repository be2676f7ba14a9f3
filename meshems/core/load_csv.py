"""Load history from CSV text: one `time,power` row per sample, resampled to the
forecaster's 15-minute means. Owns the format (separators, header, time and unit rules, DST)
and its error messages, each `NAME:LINE: problem`. Pure: text in, arrays out; the caller
reads the file and passes the time zone as a tzinfo (no files, clocks or tz database here).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

import numpy as np

from meshems.core.errors import MeshemsError

STEP_S = 900.0
#: unix seconds accepted as timestamps: 1970-01-01 .. 2100-01-01 (beyond: milliseconds?)
UNIX_MAX_S = 4_102_444_800.0
#: the longest span a file may cover (more is a wrong timestamp, not ten years of data)
MAX_SPAN_S = 10 * 366 * 86400.0
UNITS = {"kw": 1.0, "w": 0.001}
#: power fields that mean "no sample" (a gap), lower-cased
MISSING = frozenset({"", "nan", "na", "n/a", "null", "none", "-"})
#: a plain decimal number, as unix seconds or power (exponents too: numpy.savetxt writes them)
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class LoadCsvError(MeshemsError):
    """A load history CSV cannot be read: its message names the file and the line."""

    code = "E_LOAD_CSV"
    exit_code = 2


def _error(name: str, line: int | None, problem: str) -> LoadCsvError:
    return LoadCsvError(f"{name if line is None else f'{name}:{line}'}: {problem}", file=name, line=line)


@dataclass(frozen=True)
class LoadSeries:
    """15-minute mean load (kW) from t0_s on, NaN where the file has no sample; and what
    was read, for the summary a command prints."""

    t0_s: float
    kw: np.ndarray
    rows: int  # data rows (one with an empty power field counts)
    source_step_s: float  # the rows' own step
    first_s: float  # the first and the last row's time
    last_s: float
    header: tuple[str, str] | None  # the header row's column names, if it has one
    separator: str
    repeated_hour_rows: int  # naive local times put in the second pass of a DST overlap
    step_s: float = STEP_S

    @property
    def missing_steps(self) -> int:
        return int(np.isnan(self.kw).sum())

    def header_unit(self) -> str | None:
        """`kW` or `W` when the header's power column names one (`power_kw`, `Leistung [W]`)."""
        name = self.header[1].lower() if self.header else ""
        for unit in ("kw", "w"):
            if re.search(rf"(^|[^a-z]){unit}([^a-z]|$)", name) or (unit == "w" and "watt" in name):
                return {"kw": "kW", "w": "W"}[unit]
        return None


def parse_load_csv(text: str, name: str, tz: tzinfo = UTC, unit: str = "kW") -> LoadSeries:
    """Rows of `time<sep>power` as 15-minute means; LoadCsvError naming `name` and the line.

    - separator: `;`, `,` or a tab, whichever the first row has (in that order); with `;` or
      a tab a decimal comma is read (`1,5`); fields may be double-quoted;
    - an optional header row (neither field a time or a number); blank and `#` lines skipped;
    - time: unix seconds, or ISO 8601 with an offset (`Z`, `+02:00`) or without, then read in
      `tz`. A naive time that does not exist in `tz` (skipped by a DST change) is an error; one
      that exists twice (the repeated hour) is taken as its first pass unless that is not
      after the previous row, then as its second: a file in time order comes out right;
    - power in `unit` (kW or W); an empty or `nan` field is a gap;
    - rows strictly in time order at a step that divides 15 minutes (every row a whole number
      of steps after the previous; missing rows are gaps). A timestamp is the start of its
      interval; a 15-minute bin holds the mean of the samples in it, NaN when there is none.
    """
    factor = UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(f"unit must be kW or W, got {unit!r}")
    times: list[float] = []
    values: list[float] = []
    lines: list[int] = []
    sep: str | None = None
    header: tuple[str, str] | None = None
    repeated = 0
    for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if sep is None:
            sep = next((s for s in (";", ",", "\t") if s in line), None)
            if sep is None:
                raise _error(name, number, f"no separator in {_short(line)}; expected 'time,kw'")
        fields = [f.strip().strip('"').strip() for f in line.split(sep)]
        if len(fields) != 2:
            hint = " (a decimal comma? then separate the fields with ';')" if sep == "," else ""
            raise _error(name, number, f"expected 2 fields 'time{sep}power', got {len(fields)}{hint}")
        stamp, value = fields
        if not times and header is None and _is_header(stamp, value, sep):
            header = (stamp, value)
            continue
        try:
            t, second_pass = _timestamp(stamp, tz, times[-1] if times else None)
            kw = _power(value, sep) * factor
        except ValueError as exc:
            raise _error(name, number, str(exc)) from None
        if times and t <= times[-1]:
            raise _error(
                name,
                number,
                f"timestamp {stamp!r} is not after the previous row's (line {lines[-1]}); rows must be in "
                "time order, without duplicates",
            )
        repeated += second_pass
        times.append(t)
        values.append(kw)
        lines.append(number)
    if len(times) < 2:
        raise _error(name, None, f"{len(times)} data rows; need at least 2 'time,power' rows")
    t = np.array(times)
    step_s = _step(t, lines, name)
    t0_s, kw_15 = _resample(t, np.array(values), lines, name)
    return LoadSeries(
        t0_s=t0_s,
        kw=kw_15,
        rows=len(times),
        source_step_s=step_s,
        first_s=times[0],
        last_s=times[-1],
        header=header,
        separator=sep or ",",
        repeated_hour_rows=repeated,
    )


def _short(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _is_header(stamp: str, value: str, sep: str) -> bool:
    """A first row whose fields are neither a time nor a power (`time,kw`)."""
    number = value.replace(",", ".") if sep != "," else value
    if value.lower() in MISSING or _NUMBER.fullmatch(number) or _NUMBER.fullmatch(stamp):
        return False
    try:
        datetime.fromisoformat(stamp)
    except ValueError:
        return True
    return False


def _timestamp(stamp: str, tz: tzinfo, previous_s: float | None) -> tuple[float, bool]:
    """Unix seconds of one time field, and whether it is a naive local time put in the second
    pass of a repeated (DST) hour. ValueError says what is wrong with it."""
    if _NUMBER.fullmatch(stamp):
        t = float(stamp)
        if 0.0 <= t < UNIX_MAX_S:
            return t, False
        hint = " (milliseconds? give seconds)" if 0.0 <= t / 1000.0 < UNIX_MAX_S else ""
        raise ValueError(f"timestamp {stamp!r} is outside 1970..2100 as unix seconds{hint}")
    try:
        dt = datetime.fromisoformat(stamp)
    except ValueError:
        raise ValueError(f"timestamp {_short(stamp)} is neither ISO 8601 nor unix seconds") from None
    if dt.tzinfo is not None:
        return dt.timestamp(), False
    first, second = dt.replace(tzinfo=tz, fold=0), dt.replace(tzinfo=tz, fold=1)
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != dt:
        raise ValueError(
            f"local time {stamp!r} does not exist in {tz} (the clocks skipped it for daylight saving "
            "time); give the time with its UTC offset, or the zone the file was written in (--tz)"
        )
    if first.utcoffset() == second.utcoffset():
        return first.timestamp(), False
    t_first = first.timestamp()  # a time the clocks showed twice: the first pass unless out of order
    if previous_s is None or t_first > previous_s:
        return t_first, False
    return second.timestamp(), True


def _power(value: str, sep: str) -> float:
    if value.lower() in MISSING:
        return math.nan
    text = value.replace(",", ".") if sep != "," and "." not in value else value
    try:
        kw = float(text)
    except ValueError:
        raise ValueError(f"power {_short(value)} is not a number") from None
    if not math.isfinite(kw):
        raise ValueError(f"power {value!r} is not a finite number")
    return kw


def _minutes(s: float) -> str:
    return f"{s / 60:g} min" if s >= 60 else f"{s:g} s"


def _step(t: np.ndarray, lines: list[int], name: str) -> float:
    """The rows' step: their most common spacing in whole seconds (ties: the smallest). It
    must divide 15 minutes, and every spacing must be a whole number of steps."""
    gaps = np.diff(t)
    whole = np.rint(gaps)
    spacings, counts = np.unique(whole, return_counts=True)
    step = float(spacings[np.argmax(counts)])
    if step < 1.0 or step > STEP_S or STEP_S % step:
        i = int(np.argmax(whole == step)) + 1
        raise _error(
            name,
            lines[i],
            f"rows are {_minutes(float(gaps[i - 1]))} apart (the file's usual step); the step must divide "
            "15 minutes (1 s .. 15 min, e.g. 1, 5 or 15 min) to be resampled to 15-minute means",
        )
    tolerance = min(0.25 * step, max(1.0, 0.02 * step))
    off = np.abs(gaps - step * np.maximum(np.rint(gaps / step), 1.0)) > tolerance
    if off.any():
        i = int(np.argmax(off)) + 1
        raise _error(
            name,
            lines[i],
            f"row is {_minutes(float(gaps[i - 1]))} after the previous one (line {lines[i - 1]}), not a "
            f"whole number of the file's {_minutes(step)} steps",
        )
    return step


def _resample(t: np.ndarray, kw: np.ndarray, lines: list[int], name: str) -> tuple[float, np.ndarray]:
    """The first bin's start and the 15-minute means (NaN where no sample)."""
    if t[-1] - t[0] > MAX_SPAN_S:
        years = (t[-1] - t[0]) / (365.25 * 86400)
        problem = f"the rows span {years:.0f} years from line {lines[0]}; at most 10 are read (a typo?)"
        raise _error(name, lines[-1], problem)
    bins = np.floor(t / STEP_S).astype(np.int64)
    t0_s = float(bins[0]) * STEP_S
    bins -= bins[0]
    known = np.isfinite(kw)
    size = int(bins[-1]) + 1
    sums = np.bincount(bins[known], weights=kw[known], minlength=size)
    counts = np.bincount(bins[known], minlength=size)
    means = np.full(size, np.nan)
    np.divide(sums, counts, out=means, where=counts > 0)
    return t0_s, means
