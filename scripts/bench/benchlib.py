"""What the benchmark scripts share: the percentile they all quote. Imported as `benchlib`
(a script's own folder is on sys.path when it runs); must not measure anything itself."""

from __future__ import annotations


def pct(values: list[float], q: float) -> float:
    """The q-th percentile by nearest rank; NaN when there is nothing to rank."""
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))] if s else float("nan")
