"""Shadow runs of a controller payload: per cycle, how its decisions differ from the built-in (or
active) controller's, and over N cycles the health verdict a rolling deploy promotes or rolls
back on: no crash, no error, at most `max_timeouts` cycles past the budget, every cycle's round
trip within the budget, every output within limits (none refused by `core.payload_decisions`).

Pure: no I/O, no clock; the cycles' outcomes and times come from `adapters.sandbox`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from meshems.core.payload_decisions import Checked

#: a sandboxed cycle's outcome: answered, decide() raised or answered nonsense, past the budget
#: (worker killed), the worker died, no worker while it waits to restart, it would not start
STATUSES = ("ok", "error", "timeout", "crash", "backoff", "start_failed")
_FAILED = {"error": "errors", "crash": "crashes", "start_failed": "start_failures"}


@dataclass(frozen=True, slots=True)
class DeviceDiff:
    device_id: str
    builtin_kw: float | None  # None: the built-in controller set nothing for it
    payload_kw: float | None

    @property
    def diff_kw(self) -> float:
        """Payload minus built-in, a missing side counted as 0 kW."""
        return (self.payload_kw or 0.0) - (self.builtin_kw or 0.0)


def compare(builtin: Iterable[Sequence[Any]], payload: Iterable[Sequence[Any]]) -> tuple[DeviceDiff, ...]:
    """Per device (sorted), the two setpoints of one cycle. Each side is rows that start with
    (device id, kW): DispatchResult.setpoints, Checked.accepted."""
    a = {row[0]: float(row[1]) for row in builtin}
    b = {row[0]: float(row[1]) for row in payload}
    return tuple(DeviceDiff(d, a.get(d), b.get(d)) for d in sorted(a.keys() | b.keys()))


@dataclass(frozen=True, slots=True)
class ShadowCycle:
    status: str  # one of STATUSES
    elapsed_ms: float
    refused: int = 0  # decisions refused by the core's checks
    max_diff_kw: float = 0.0  # the largest |payload - built-in| of the cycle
    message: str = ""  # the first problem: the sandbox's message or a refusal's reason


def shadow_cycle(
    status: str, elapsed_ms: float, checked: Checked | None, builtin: Iterable[Sequence[Any]] = (),
    message: str = "",
) -> ShadowCycle:  # fmt: skip
    """One cycle's record from the sandbox's outcome and the checked decisions (None when the
    payload gave none)."""
    if status not in STATUSES:
        raise ValueError(f"{status!r} is not a shadow cycle status ({', '.join(STATUSES)})")
    if checked is None:
        return ShadowCycle(status, elapsed_ms, message=message)
    diffs = compare(builtin, checked.accepted)
    max_diff = max((abs(d.diff_kw) for d in diffs), default=0.0)
    if checked.refused and not message:
        r = checked.refused[0]
        message = f"{r.code}: {r.reason}"
    return ShadowCycle(status, elapsed_ms, len(checked.refused), max_diff, message)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile by nearest rank (as the benchmarks quote it); 0 of nothing."""
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))] if s else 0.0


@dataclass(frozen=True, slots=True)
class Verdict:
    state: str  # pending (too few cycles yet), healthy, failed (stop at once: roll back)
    reasons: tuple[str, ...]
    cycles: int
    ok: int
    errors: int
    timeouts: int
    crashes: int
    start_failures: int
    refused: int
    p50_ms: float
    p99_ms: float
    max_diff_kw: float

    @property
    def healthy(self) -> bool:
        return self.state == "healthy"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reasons": list(self.reasons)}


def verdict(
    cycles: Sequence[ShadowCycle], want_cycles: int, budget_ms: float, max_timeouts: int = 0
) -> Verdict:
    """The health of a shadow (or watch) phase so far: failed as soon as one rule is broken,
    healthy once `want_cycles` cycles kept them all, pending before."""
    counts = {"errors": 0, "crashes": 0, "start_failures": 0}
    timeouts = refused = ok = 0
    first: dict[str, str] = {}
    times = [c.elapsed_ms for c in cycles if c.status in ("ok", "error")]
    for c in cycles:
        if c.status in _FAILED:
            counts[_FAILED[c.status]] += 1
            first.setdefault(c.status, c.message)
        timeouts += c.status == "timeout"
        ok += c.status == "ok"
        if c.refused:
            refused += c.refused
            first.setdefault("refused", c.message)
    reasons = [f"{n} {what}{': ' + first[s] if first.get(s) else ''}"
               for s, what in _FAILED.items() for n in [counts[what]] if n]  # fmt: skip
    if timeouts > max_timeouts:
        reasons.append(f"{timeouts} cycles past the {budget_ms:g} ms budget (at most {max_timeouts})")
    slow = sum(t > budget_ms for t in times)
    if slow:
        reasons.append(f"{slow} cycles answered past the {budget_ms:g} ms budget")
    if refused:
        reasons.append(f"{refused} decisions refused by the core's checks: {first['refused']}")
    state = "failed" if reasons else ("healthy" if len(cycles) >= want_cycles else "pending")
    return Verdict(
        state, tuple(reasons), len(cycles), ok, counts["errors"], timeouts, counts["crashes"],
        counts["start_failures"], refused, percentile(times, 50), percentile(times, 99),
        max((c.max_diff_kw for c in cycles), default=0.0),
    )  # fmt: skip
