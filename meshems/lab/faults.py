"""The Jepsen-style fault run: a lab, a client writing setpoints through random nodes, a
seeded fault schedule, then heal, converge and check.

Owns the run's timeline (client threads, the injector, the final sweep) and its summary.
Must not judge the history itself (checker.py) nor know how faults are made (gateways.py).
"""

from __future__ import annotations

import random
import threading
import time
import zlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshems.adapters.apply_trace import read_trace
from meshems.adapters.journal import frame
from meshems.core import commands
from meshems.core.errors import UnreachableError
from meshems.lab.checker import Op, Verdict, Window, check
from meshems.lab.diskfull import disk_full
from meshems.lab.gateways import LIBFAKETIME, Lab
from meshems.lab.limits import GATE_S, LimitReport, over_limit
from meshems.lab.meters import LAB_POLICY, MeterSampler, hold_limit, import_limit_kw
from meshems.lab.powerloss import lossy_ready
from meshems.lab.schedule import KINDS, Fault, clock_jump_s, loss_percent, make_schedule, split

#: answers that prove the write was not committed
DEFINITE_FAILURES = frozenset({"E_QUORUM", "E_BUSY", "E_LIMIT", "E_UNKNOWN_DEVICE", "E_CMD_MALFORMED"})


@dataclass
class RunResult:
    seed: int
    duration_s: float
    verdict: Verdict
    faults: Counter[str] = field(default_factory=Counter)
    injected: list[dict[str, Any]] = field(default_factory=list)
    converged: bool = False
    final: dict[str, tuple[int, str]] = field(default_factory=dict)
    #: the import-limit invariant (lab.limits); None without simulated sites or a limit
    limits: LimitReport | None = None
    import_limit_kw: float | None = None
    meter_rounds_missed: int = 0
    #: what the disk_full faults found (an acknowledgement beyond the journal, a corrupt one)
    disk_problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        v = self.verdict
        lim = self.limits if self.import_limit_kw is not None else None
        return {
            "ok": v.ok and self.converged and (lim is None or lim.ok) and not self.disk_problems,
            "seed": self.seed,
            "duration_s": round(self.duration_s, 1),
            "operations": v.operations,
            "acknowledged": v.acknowledged,
            "failed": v.failed,
            "indeterminate": v.indeterminate,
            "lost": v.lost,
            "divergent": v.divergent,
            "stale_term_actuations": v.stale_term_actuations,
            "minority_commits": v.minority_commits,
            "term_regressions": v.term_regressions,
            "entries_checked": v.entries_checked,
            "actuations_checked": v.actuations_checked,
            "covered_by_snapshot": v.covered_by_snapshot,
            "converged": self.converged,
            "faults": dict(self.faults),
            "injected": self.injected,
            "problems": v.problems + self.disk_problems,
            "disk_full_problems": len(self.disk_problems),
            **_limit_figures(lim, self),
        }


def _limit_figures(lim: LimitReport | None, res: RunResult) -> dict[str, Any]:
    """The import-limit figures of `to_dict`; None where the zone has no import limit."""
    return {
        "import_limit_kw": res.import_limit_kw,
        "limit_samples": res.limits.samples if res.limits else 0,
        "meter_rounds_missed": res.meter_rounds_missed,
        "peak_zone_import_kw": round(res.limits.peak_import_kw, 2) if res.limits else None,
        "limit_violations_over_2s": len(lim.violations) if lim else None,
        "longest_over_limit_s": round(lim.longest_s, 2) if lim else None,
        "longest_over_limit_start_s": lim.longest.start_s if lim and lim.longest else None,
        "limit_excluded_gateway_down_s": round(lim.excluded_s, 1) if lim else None,
        "limit_uncoverable_s": round(lim.uncoverable_s, 1) if lim else None,
        "limit_violations": [
            {"start_s": round(x.start_s, 3), "duration_s": round(x.duration_s, 2),
             "peak_excess_kw": round(x.peak_excess_kw, 2)} for x in lim.violations
        ] if lim else [],
    }  # fmt: skip


class Workload:
    """Client threads: each op writes a setpoint (a unique entry: its request id) through one
    random node, once (no retry on another node, so the answer tells which node committed it).

    It writes the PV limits, at their rating (100 %, no curtailment), not the batteries:
    dispatch owns every battery (and a lab value there would push the import wherever it
    says, whatever the limit), and with no export limit its own PV decision is that same
    100 %, so these writes leave the import alone while each node still actuates them (the
    newest committed token each time the device is free), fenced against dispatch's tokens
    on the same device: the checker's actuation traces see both writers."""

    def __init__(self, lab: Lab, seed: int, threads: int = 3, pause_s: float = 0.02) -> None:
        self.lab = lab
        self.rng = random.Random(seed)
        self.threads = threads
        self.pause_s = pause_s
        self.ops: list[Op] = []
        self._lock = threading.Lock()
        self._next = 0
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self.devices = sorted((d.id, d.max_kw) for n in lab.cfg.nodes for d in n.devices if d.kind == "pv")

    def _one(self) -> None:
        with self._lock:
            op_id = self._next
            self._next += 1
            node = self.rng.choice(self.lab.plan.nodes)
            device, kw = self.rng.choice(self.devices)
        data = commands.encode(
            "set_setpoint", f"lab-{self.lab.plan.tag}-{op_id}", device_id=device, kw=kw, source="lab"
        )
        digest = zlib.crc32(frame(data))
        submit = time.time()
        try:
            _, body = self.lab.client.request(
                self.lab.cfg.node(node), "POST", "/v1/propose", data, timeout_s=3.0
            )
            code = str(body.get("code", ""))
            outcome = "ok" if body.get("ok") else ("fail" if code in DEFINITE_FAILURES else "info")
        except UnreachableError:
            body, code, outcome = {}, "E_UNREACHABLE", "info"
        op = Op(op_id, node, digest, submit, time.time(), outcome,
                int(body.get("term") or 0), int(body.get("index") or 0), code)  # fmt: skip
        with self._lock:
            self.ops.append(op)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._one()
            self._stop.wait(self.pause_s)

    def start(self) -> None:
        for w in range(self.threads):
            t = threading.Thread(target=self._loop, daemon=True, name=f"client-{w}")
            t.start()
            self._workers.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=10)


def current_leader(lab: Lab, timeout_s: float = 10.0) -> str | None:
    try:
        return lab.wait_leader(timeout_s)
    except TimeoutError:
        return None


class Injector:
    """Applies one fault, then undoes it; records what it did and partition windows."""

    def __init__(self, lab: Lab, say: Any) -> None:
        self.lab = lab
        self.say = say
        self.windows: list[Window] = []
        self.log: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        self.disk_problems: list[str] = []

    def run(self, fault: Fault) -> None:
        lab, nodes = self.lab, self.lab.plan.nodes
        leader = current_leader(lab)
        if leader is None:
            self.say(f"  {fault.kind}: skipped, no leader")
            self.log.append({"kind": fault.kind, "skipped": "no leader"})
            return
        followers = [n for n in nodes if n != leader]
        anyone = nodes[fault.pick % len(nodes)]
        peer = followers[fault.pick % len(followers)] if followers else leader
        first = (fault.pick >> 8) % 2 == 0  # a one-way cut's direction, a full disk's node
        entry: dict[str, Any] = {"kind": fault.kind, "at": round(time.time(), 3), "leader": leader}
        if fault.kind == "kill_leader":
            lab.kill(leader)
            entry["target"] = leader
            time.sleep(fault.hold_s)
            lab.start_node(leader)
        elif fault.kind == "pause_node":
            lab.pause(anyone)
            entry["target"] = anyone
            time.sleep(fault.hold_s)
            lab.resume(anyone)
        elif fault.kind == "restart_node":
            lab.restart(anyone)
            entry["target"] = anyone
        elif fault.kind == "cut_link":
            lab.cut(leader, peer)
            entry["target"] = f"{leader}<->{peer}"
            time.sleep(fault.hold_s)
            lab.heal()
        elif fault.kind == "lossy_links":
            percent = loss_percent(fault.pick)
            lab.lossy(percent)
            entry["target"] = f"all links, {percent} % loss"
            time.sleep(fault.hold_s)
            lab.heal()
        elif fault.kind == "clock_jump":
            jump = clock_jump_s(fault.pick)
            lab.set_clock(anyone, jump)
            entry["target"] = f"{anyone} clock {jump:+d} s"
            time.sleep(fault.hold_s)
            lab.set_clock(anyone, 0)
        elif fault.kind in ("blackout_node", "blackout_all"):
            targets = list(nodes) if fault.kind == "blackout_all" else [anyone]
            dropped = lab.blackout(targets, down_s=fault.hold_s)
            lost = sum(d["bytes"] for d in dropped.values())
            entry["target"] = f"{','.join(targets)} power cut, {lost} unsynced bytes dropped"
            entry["dropped"] = dropped
        elif fault.kind == "disk_full":
            entry.update(disk_full(lab, peer if first else leader, leader, fault.hold_s))
            self.disk_problems += entry["problems"]
        elif fault.kind == "oneway_cut":
            src, dst = (leader, peer) if first else (peer, leader)
            lab.cut_oneway(src, dst)
            entry["target"] = f"{src}->{dst}"
            time.sleep(fault.hold_s)
            lab.heal()
        else:
            minority, majority = split(nodes, leader, fault.kind == "partition_leader_minority", fault.pick)
            lab.partition([minority, majority])
            start = time.time()
            entry["target"] = f"{','.join(minority)} | {','.join(majority)}"
            time.sleep(fault.hold_s)
            end = time.time()
            lab.heal()
            self.windows.append(Window(start, end, frozenset(minority)))
        self.counts[fault.kind] += 1
        self.log.append(entry)
        self.say(
            f"  {fault.kind:<27} {entry.get('target', '')} (leader was {leader}, held {fault.hold_s:.1f} s)"
        )


def converge(lab: Lab, timeout_s: float = 60.0) -> tuple[bool, dict[str, tuple[int, str]]]:
    """Wait until every node answers at the same applied index with the same hash (or the
    bound passes); returns (converged, node -> (index, hash)) of the last sweep."""
    end = time.monotonic() + timeout_s
    final: dict[str, tuple[int, str]] = {}
    while time.monotonic() < end:
        rows = lab.status(timeout_s=1.0)
        final = {r["id"]: (int(r["state_index"]), str(r["state_hash"])) for r in rows if r.get("reachable")}
        if len(final) == len(lab.plan.nodes) and len(set(final.values())) == 1:
            return True, final
        time.sleep(0.02)
    return False, final


def run_faults(
    folder: Path,
    seed: int,
    duration_s: float,
    nodes: int = 3,
    kinds: tuple[str, ...] | None = None,
    say: Any = print,
    policy: Mapping[str, Any] | None = LAB_POLICY,
) -> RunResult:
    """Build a lab, commit `policy` (its import limit is the run's gate; None: no policy, no
    dispatch), run the workload under the seeded schedule, heal, check, tear down. Without
    libfaketime there are no clock faults, without FUSE no blackouts (said once); with
    disk_full every node's data lives on its own small tmpfs (lab.diskfull)."""
    kinds = kinds or KINDS
    clocks = "clock_jump" in kinds and LIBFAKETIME.exists()
    if "clock_jump" in kinds and not clocks:
        say(f"no clock faults: {LIBFAKETIME} is missing (Debian faketime; scripts/setup)")
        kinds = tuple(k for k in kinds if k != "clock_jump")
    blackout = any(k.startswith("blackout_") for k in kinds) and lossy_ready()
    if any(k.startswith("blackout_") for k in kinds) and not blackout:
        say("no blackouts: they need /dev/fuse, fusermount3 (Debian fuse3) and mfusepy (scripts/setup)")
        kinds = tuple(k for k in kinds if not k.startswith("blackout_"))
    schedule = make_schedule(seed, duration_s, kinds)
    disks = "disk_full" in kinds
    lab = Lab.create(
        folder, nodes=nodes, sims=True, progress=say, clocks=clocks, blackout=blackout, disks=disks
    )
    started = time.monotonic()
    try:
        say(f"leader: {lab.wait_leader(30)}; {len(schedule)} faults over {duration_s:.0f} s (seed {seed})")
        if policy is not None:
            hold_limit(lab, policy, say)
        workload = Workload(lab, seed)
        injector = Injector(lab, say)
        meters = MeterSampler(lab) if lab.cfg.node(lab.plan.nodes[0]).sim_site else None
        workload.start()
        if meters is not None:
            meters.start()
        t0 = time.monotonic()
        try:
            for fault in schedule:
                delay = t0 + fault.at_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                injector.run(fault)
            rest = t0 + duration_s - time.monotonic()
            if rest > 0:
                time.sleep(rest)
        finally:
            lab.heal()
            for n in lab.plan.nodes if disks else ():
                lab.disk(n).free()
            for n in lab.plan.nodes if clocks else ():
                lab.set_clock(n, 0)
            for n in lab.plan.nodes:
                if lab.running(n):
                    lab.resume(n)
                else:
                    lab.start_node(n)
            workload.stop()
            if meters is not None:
                meters.stop()
        say(f"healed; {len(workload.ops)} operations; waiting for the replicas to converge")
        converged, final = converge(lab)
        traces = {n: read_trace(folder / "traces" / f"{n}.jsonl") for n in lab.plan.nodes}
        verdict = check(workload.ops, traces, injector.windows, final)
        res = RunResult(seed, time.monotonic() - started, verdict, injector.counts, injector.log, converged,
                        final, disk_problems=injector.disk_problems)  # fmt: skip
        if meters is not None:
            res.import_limit_kw = import_limit_kw(lab)
            res.limits = over_limit(meters.samples(res.import_limit_kw or float("inf")))
            res.meter_rounds_missed = meters.missed
            meters.save(folder / "meters.jsonl")
        return res
    finally:
        lab.down()


def summary_table(res: RunResult) -> str:
    d = res.to_dict()
    lines = [
        f"fault run, seed {d['seed']}, {d['duration_s']} s: {'PASS' if d['ok'] else 'FAIL'}",
        f"  {'operations':<28}{d['operations']:>8}",
        f"  {'acknowledged':<28}{d['acknowledged']:>8}",
        f"  {'failed (not committed)':<28}{d['failed']:>8}",
        f"  {'indeterminate':<28}{d['indeterminate']:>8}",
        f"  {'lost (must be 0)':<28}{d['lost']:>8}",
        f"  {'divergent nodes (must be 0)':<28}{d['divergent']:>8}",
        f"  {'stale-term actuations':<28}{d['stale_term_actuations']:>8}",
        f"  {'minority commits':<28}{d['minority_commits']:>8}",
        f"  {'term regressions':<28}{d['term_regressions']:>8}",
        f"  {'entries checked':<28}{d['entries_checked']:>8}",
        f"  {'actuations checked':<28}{d['actuations_checked']:>8}",
        f"  {'converged after heal':<28}{'yes' if d['converged'] else 'NO':>8}",
        f"  {'disk-full problems':<28}{d['disk_full_problems']:>8}",
        *limit_lines(d),
        "  faults by kind:",
        *[f"    {k:<26}{n:>8}" for k, n in sorted(d["faults"].items())],
    ]
    if d["problems"]:
        lines += ["  problems (first 10):", *[f"    {p}" for p in d["problems"][:10]]]
    return "\n".join(lines)


def limit_lines(d: dict[str, Any]) -> list[str]:
    """The import-limit rows of the summary table (from `RunResult.to_dict`)."""
    if not d["limit_samples"]:
        return [f"  {'limit violations > 2 s':<28}{'n/a (no simulated sites)':>8}"]
    if d["import_limit_kw"] is None:
        na = "n/a (no import limit)"
        peak = f"  (zone import peaked at {d['peak_zone_import_kw']} kW, {d['limit_samples']} samples)"
        return [f"  {'limit violations > 2 s':<28}{na:>8}", f"  {'longest over-limit s':<28}{na:>8}", peak]
    return [
        f"  {'limit violations > 2 s':<28}{d['limit_violations_over_2s']:>8}",
        f"  {'longest over-limit s':<28}{d['longest_over_limit_s']:>8}",
        f"    (limit {d['import_limit_kw']} kW, {d['limit_samples']} samples; excluded: "
        f"{d['limit_excluded_gateway_down_s']} s with the site's gateway down, "
        f"{d['limit_uncoverable_s']} s with no battery headroom)",
    ]


def limit_failures(d: dict[str, Any]) -> list[str]:
    """One line per stretch over the limit longer than the gate (the run fails on any)."""
    return [
        f"import over the {d['import_limit_kw']} kW limit for {x['duration_s']} s (> {GATE_S:g} s) from "
        f"{time.strftime('%H:%M:%S', time.gmtime(x['start_s']))}.{int(x['start_s'] % 1 * 1000):03d} UTC "
        f"(t={x['start_s']}), peak excess {x['peak_excess_kw']} kW, batteries had headroom"
        for x in d["limit_violations"]
    ]
