"""A few-row unicode bar chart of a time series for the terminal (`meshems forecast show`):
one column per step (or per group of steps when the terminal is narrow), the axis from
min(0, lowest) to the highest value, the min and max labelled with their times.

Presentation only: lines of text out, nothing printed here.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

BLOCKS = " ▁▂▃▄▅▆▇█"
UNKNOWN = "·"


def _groups(values: Sequence[float | None], width: int) -> tuple[int, list[float | None]]:
    """Steps per column and each column's mean of its known values (None: none known)."""
    import math

    per = max(1, math.ceil(len(values) / max(1, width)))
    out: list[float | None] = []
    for i in range(0, len(values), per):
        known = [v for v in values[i : i + per] if v is not None]
        out.append(sum(known) / len(known) if known else None)
    return per, out


def bar_chart(
    values: Sequence[float | None],
    start_s: float,
    step_s: float,
    unit: str = "kW",
    rows: int = 5,
    width: int = 96,
    clock: Callable[[float], time.struct_time] = time.localtime,
) -> list[str]:
    """The chart's lines: `rows` rows of bars (eighth blocks; `·` where nothing is known),
    a time axis with a tick every 6 hours of `clock` time, and a line with the min, max
    and mean. Empty when no value is known."""
    known = [(v, i) for i, v in enumerate(values) if v is not None]
    if not known:
        return []
    per, cols = _groups(values, width)
    lo, hi = min(0.0, min(v for v, _ in known)), max(v for v, _ in known)
    span = hi - lo if hi > lo else 1.0
    eighths = [None if v is None else round((v - lo) / span * rows * 8) for v in cols]
    top, bottom = f"{hi:.1f} {unit}", f"{lo:.1f} {unit}"
    pad = max(len(top), len(bottom))
    lines = []
    for r in range(rows - 1, -1, -1):
        bar = "".join(
            (UNKNOWN if r == 0 else " ") if e is None else BLOCKS[min(8, max(0, e - 8 * r))] for e in eighths
        )
        label = top if r == rows - 1 else bottom if r == 0 else ""
        lines.append(f"{label:>{pad}} ┤{bar}" if label else f"{'':>{pad}} │{bar}")
    axis, names = [], [" "] * (len(cols) + 6)
    for c in range(len(cols)):
        hours = [t.tm_hour for j in range(per) if (t := clock(start_s + (c * per + j) * step_s)).tm_min == 0]
        tick = next((h for h in hours if h % 6 == 0), None)
        axis.append("─" if tick is None else "┬")
        if tick is not None and all(n == " " for n in names[max(0, c - 1) : c + 6]):
            names[c : c + 5] = f"{tick:02d}:00"
    lines.append(f"{'':>{pad}} └{''.join(axis)}")
    lines.append(f"{'':>{pad}}  {''.join(names).rstrip()}")
    v_max, i_max = max(known, key=lambda x: x[0])  # the first of equal ones
    v_min, i_min = min(known, key=lambda x: x[0])
    mean = sum(v for v, _ in known) / len(known)

    def at(i: int) -> str:
        return time.strftime("%H:%M", clock(start_s + i * step_s))

    summary = f"max {v_max:.1f} {unit} at {at(i_max)}, min {v_min:.1f} {unit} at {at(i_min)}"
    summary += f", mean {mean:.1f} {unit}"
    unknown = len(values) - len(known)
    if unknown:
        summary += f"; {unknown} of {len(values)} steps unknown ({UNKNOWN})"
    if per > 1:
        summary += f"; one column per {per * step_s / 60:g} min"
    return [*lines, summary]
