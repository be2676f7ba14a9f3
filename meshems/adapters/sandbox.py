"""The sandbox supervisor: one controller payload in a worker process (`adapters.sandbox_worker`),
one cycle at a time: the image and policy in, its decisions out, within the manifest's cycle
budget. A cycle answered late kills the worker (a timeout), a worker that dies or breaks the
protocol is a crash; either restarts it after a backoff that doubles (0.5 s .. 30 s) until a
cycle succeeds. Keeps the health figures (cycles, timeouts, crashes, p50/p99) for status.

Owns the worker processes; the decisions' checks are `core.payload_decisions`, the shadow
verdict `core.payload_shadow`. Calls block, never past the budget (a start: start_timeout_s).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshems.adapters import sandbox_worker as worker
from meshems.adapters.sandbox_worker import MAX_REPLY_BYTES, MAX_REQUEST_BYTES, ProtocolError
from meshems.core.errors import (
    PayloadCpuError,
    PayloadCrashError,
    PayloadFailedError,
    PayloadSandboxError,
    PayloadTimeoutError,
)
from meshems.core.payload_manifest import Manifest
from meshems.core.payload_shadow import percentile

#: run by path, not `-m`: -I keeps the payload's folder, PYTHON* variables and user site off
#: sys.path, and the worker needs no installed meshems (it imports only the stdlib and msgpack)
WORKER = Path(worker.__file__).resolve()
ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}
RECYCLE_AT = 0.9  # of the CPU-time rlimit: a worker that used this much is replaced, calmly
TIMES_KEPT = 1000  # round trips the percentiles are taken over
SYSTEMD = "not used: rlimits, a network namespace and a CPU share watched from /proc (no transient unit)"
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds the kernel counts for `pid`, None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 3
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """One payload's worker: its store folder (files/ below it; the worker's cwd) and limits."""

    name: str
    folder: Path
    entry_point: str
    memory_mb: int = 128  # RLIMIT_AS of the whole worker, interpreter included
    cycle_budget_ms: int = 100
    cpu_s: int = 600  # RLIMIT_CPU of one worker's life; recycled at RECYCLE_AT of it
    cpu_pct: int = 100  # the share of one CPU it may use, over cpu_window_s
    cpu_window_s: float = 10.0
    user: str | None = "nobody"  # who the worker becomes when started as root (None: stays root)
    isolate_net: bool = True
    start_timeout_s: float = 5.0
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0

    @classmethod
    def of(cls, manifest: Manifest, folder: Path, **options: Any) -> SandboxSpec:
        """The spec of an installed controller payload (`PayloadStore` folder)."""
        if manifest.kind != "controller" or manifest.entry_point is None:
            raise PayloadSandboxError(f"{manifest.name} is a {manifest.kind} payload, not a controller")
        return cls(manifest.name, Path(folder), manifest.entry_point, manifest.limits.memory_mb,
                   manifest.cycle_budget_ms, cpu_pct=manifest.limits.cpu_pct, **options)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Outcome:
    """One cycle: status (core.payload_shadow.STATUSES), the raw decisions (check them with
    core.payload_decisions), the round trip, and the code and message of a failure."""

    status: str
    decisions: tuple[Any, ...] = ()
    elapsed_ms: float = 0.0
    code: str = ""
    message: str = ""


class _Timeout(Exception):
    pass


class _Closed(Exception):
    pass


class Sandbox:
    """The supervisor of one payload's worker; `cycle()` starts it when there is none."""

    def __init__(self, spec: SandboxSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.clock = clock  # backoff; round trips are timed with perf_counter
        self._proc: subprocess.Popen[bytes] | None = None
        self._seq = 0
        self._failures = 0  # in a row, for the backoff
        self._next_start_s = float("-inf")
        self.counts = dict.fromkeys(
            ("cycles", "ok", "errors", "timeouts", "crashes", "cpu_overruns", "starts", "start_failures",
             "recycled"), 0,
        )  # fmt: skip
        self._cpu_marks: deque[tuple[float, float]] = deque()  # (clock s, CPU s) since the start
        self._times: deque[float] = deque(maxlen=TIMES_KEPT)
        self.net = self.user = self.last_error = ""
        self.start_ms = 0.0

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # --- pipes with a deadline ---------------------------------------------------------------

    def _wait(self, fd: int, events: int, deadline: float) -> None:
        left_ms = (deadline - time.perf_counter()) * 1000
        poller = select.poll()
        poller.register(fd, events)
        if left_ms <= 0 or not poller.poll(left_ms):
            raise _Timeout

    def _write(self, data: bytes, deadline: float) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        fd, view = self._proc.stdin.fileno(), memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                self._wait(fd, select.POLLOUT, deadline)
            except (BrokenPipeError, ConnectionResetError):
                raise _Closed from None

    def _read(self, n: int, deadline: float) -> bytes:
        assert self._proc is not None and self._proc.stdout is not None
        fd, buf = self._proc.stdout.fileno(), bytearray()
        while len(buf) < n:
            try:
                chunk = os.read(fd, n - len(buf))
            except BlockingIOError:
                self._wait(fd, select.POLLIN, deadline)
                continue
            if not chunk:
                raise _Closed
            buf += chunk
        return bytes(buf)

    def _message(self, deadline: float) -> dict[str, Any]:
        (size,) = worker.HEADER.unpack(self._read(worker.HEADER.size, deadline))
        if size > MAX_REPLY_BYTES:
            raise ProtocolError(f"a reply of {size} bytes, at most {MAX_REPLY_BYTES}")
        return worker.decode(self._read(size, deadline), MAX_REPLY_BYTES)

    # --- the worker's life -------------------------------------------------------------------

    def start(self) -> None:
        """Start a worker and wait for it to confine itself and load the payload; raises
        PayloadSandboxError (counted in start_failures) when it does not."""
        self._kill()
        self.counts["starts"] += 1
        t0 = time.perf_counter()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, cwd=self.spec.folder, env=ENV, start_new_session=True, bufsize=0,
            )  # fmt: skip
        except OSError as exc:
            self.counts["start_failures"] += 1
            msg = f"{self.spec.name}: cannot start a worker in {self.spec.folder}: {exc}"
            raise PayloadSandboxError(msg) from None
        assert self._proc.stdin is not None and self._proc.stdout is not None
        os.set_blocking(self._proc.stdin.fileno(), False)
        os.set_blocking(self._proc.stdout.fileno(), False)
        spec = self.spec
        hello = {"t": "hello", "entry_point": spec.entry_point, "memory_mb": spec.memory_mb,
                 "cpu_s": spec.cpu_s, "user": spec.user, "isolate_net": spec.isolate_net}  # fmt: skip
        deadline = t0 + self.spec.start_timeout_s
        try:
            self._write(worker.encode(hello, MAX_REQUEST_BYTES), deadline)
            msg = self._message(deadline)
            problem = "" if msg.get("t") == "ready" else str(msg.get("message", "no ready message"))
        except _Timeout:
            problem = f"not ready within {self.spec.start_timeout_s:g} s"
        except (_Closed, ProtocolError) as exc:
            problem = f"{self._exit_text()} {exc}".strip()
        if problem:
            self._kill()
            self.counts["start_failures"] += 1
            raise PayloadSandboxError(f"{self.spec.name}: the worker did not start: {problem}"[:600])
        self.net, self.user = str(msg.get("net", "")), str(msg.get("user", ""))
        self.start_ms = (time.perf_counter() - t0) * 1000
        self._cpu_marks.clear()  # the interpreter's start is not the payload's share
        self._cpu_share_pct()

    def _cpu_share_pct(self) -> float | None:
        """Mark the worker's CPU time now; its share of one CPU (%) over the last cpu_window_s
        once it has run that long, else None."""
        cpu = process_cpu_s(self._proc.pid) if self._proc is not None else None
        if cpu is None:
            return None
        now, marks, window = self.clock(), self._cpu_marks, self.spec.cpu_window_s
        marks.append((now, cpu))
        while len(marks) > 2 and marks[1][0] <= now - window:
            marks.popleft()  # keep the newest mark at least a window old as the base
        t0, cpu0 = marks[0]
        if now - t0 < window:
            return None
        return (cpu - cpu0) / (now - t0) * 100

    def _exit_text(self) -> str:
        """How the worker ended (waits up to a second for it)."""
        if self._proc is None:
            return ""
        try:
            rc = self._proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return "the worker closed its pipe"
        if rc < 0:
            return f"the worker was killed by {signal.Signals(-rc).name}"
        return f"the worker exited with code {rc}"

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: nothing of it stays
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=5)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()

    def stop(self) -> None:
        """Ask the worker to end, then make sure it has."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(_Timeout, _Closed, ProtocolError, OSError, subprocess.TimeoutExpired):
                self._write(worker.encode({"t": "stop"}, MAX_REQUEST_BYTES), time.perf_counter() + 0.5)
                self._proc.wait(timeout=1)
        self._kill()

    def _failed(self, status: str, code: str, message: str, elapsed_ms: float) -> Outcome:
        self._kill()
        self._failures += 1
        delay = min(self.spec.max_backoff_s, self.spec.backoff_s * 2 ** (self._failures - 1))
        self._next_start_s = self.clock() + delay
        self.last_error = f"{code}: {message}"
        return Outcome(status, (), elapsed_ms, code, message)

    # --- one cycle ---------------------------------------------------------------------------

    def cycle(self, image: dict[str, Any], policy: dict[str, Any]) -> Outcome:
        """Send one cycle's image and policy (core.payload_cycle), wait for the decisions."""
        if self._proc is None:
            if self.clock() < self._next_start_s:
                wait_s = self._next_start_s - self.clock()
                return Outcome("backoff", code=self.last_error.partition(":")[0],
                               message=f"restarts in {wait_s:.1f} s after {self.last_error}")  # fmt: skip
            try:
                self.start()
            except PayloadSandboxError as exc:
                return self._failed("start_failed", exc.code, exc.message, 0.0)
        self._seq += 1
        try:
            data = worker.encode({"t": "cycle", "n": self._seq, "image": image, "policy": policy},
                                 MAX_REQUEST_BYTES)  # fmt: skip
        except (ProtocolError, TypeError, ValueError) as exc:
            raise PayloadSandboxError(f"{self.spec.name}: this cycle's input cannot be sent: {exc}") from None
        self.counts["cycles"] += 1
        budget_ms = self.spec.cycle_budget_ms
        t0 = time.perf_counter()
        try:
            self._write(data, t0 + budget_ms / 1000)
            reply = self._message(t0 + budget_ms / 1000)
        except _Timeout:
            self.counts["timeouts"] += 1
            elapsed_ms = (time.perf_counter() - t0) * 1000
            msg = f"no answer within the {budget_ms} ms cycle budget: the worker was killed"
            return self._failed("timeout", PayloadTimeoutError.code, msg, elapsed_ms)
        except (_Closed, ProtocolError) as exc:
            self.counts["crashes"] += 1
            elapsed_ms = (time.perf_counter() - t0) * 1000
            return self._failed(
                "crash", PayloadCrashError.code, f"{self._exit_text()} {exc}".strip(), elapsed_ms
            )
        elapsed_ms = (time.perf_counter() - t0) * 1000
        kind = reply.get("t")
        if reply.get("n") != self._seq or kind not in ("decisions", "error"):
            self.counts["crashes"] += 1
            msg = f"a {kind!r} reply to cycle {reply.get('n')!r}, expected decisions for {self._seq}"
            return self._failed("crash", PayloadCrashError.code, msg, elapsed_ms)
        self._times.append(elapsed_ms)
        share = self._cpu_share_pct()
        if share is not None and share > self.spec.cpu_pct:
            self.counts["crashes"] += 1
            self.counts["cpu_overruns"] += 1
            msg = (f"used {share:.0f} % of a CPU over {self.spec.cpu_window_s:g} s, past its cpu_pct of "
                   f"{self.spec.cpu_pct} %: the worker was killed")  # fmt: skip
            return self._failed("crash", PayloadCpuError.code, msg, elapsed_ms)
        decisions = reply.get("decisions")
        if kind == "error" or not isinstance(decisions, list):
            self.counts["errors"] += 1
            msg = str(reply.get("message", "the reply holds no list of decisions"))[:500]
            self.last_error = f"{PayloadFailedError.code}: {msg}"
            return Outcome("error", (), elapsed_ms, PayloadFailedError.code, msg)
        self.counts["ok"] += 1
        self._failures = 0
        cpu_s = reply.get("cpu_s")
        if isinstance(cpu_s, int | float) and cpu_s >= RECYCLE_AT * self.spec.cpu_s:
            self.counts["recycled"] += 1
            self.stop()  # the next cycle starts a fresh worker, no backoff
        return Outcome("ok", tuple(decisions), elapsed_ms)

    def status(self) -> dict[str, Any]:
        """Health figures for `meshems deploy status` and the shadow phase."""
        times = list(self._times)
        if self._proc is not None:
            state = "running"
        else:
            state = "backoff" if self.clock() < self._next_start_s else "stopped"
        return {
            "name": self.spec.name, "state": state, "pid": self.pid, "net": self.net, "user": self.user,
            **self.counts, "p50_ms": round(percentile(times, 50), 3),
            "p99_ms": round(percentile(times, 99), 3), "start_ms": round(self.start_ms, 1),
            "last_error": self.last_error, "systemd": SYSTEMD,
        }  # fmt: skip
