"""The polling engine: one asyncio loop polls every wired device of a node.

Owns scheduling and per-device bookkeeping. Per bus, one worker per connection takes the
device whose poll is due earliest (fair: earliest deadline first), so one slow or silent
device costs at most its timeout per poll and, once backed off, almost nothing; the others
keep their cadence. Serial lines carry one request at a time, paced by their modelled
line time. Writes jump the queue, are read back and verified. Health rules: `core.health`;
register maps: `core.register_map`, `core.registers`; pymodbus stays in `adapters.modbus`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshems.adapters.modbus import FieldError, ModbusLink, line_time_s
from meshems.core.config import BusConfig, DeviceConfig, NodeConfig
from meshems.core.health import device_state, next_poll_at
from meshems.core.read_plan import ReadPlan
from meshems.core.register_map import Block, Point, Profile
from meshems.core.registers import Value, decode, encode

#: frame errors (garbage, CRC) are retried once at once; timeouts wait for the next poll
RETRY_AT_ONCE = {"E_CRC", "E_FRAME"}
ERROR_COUNTERS = {"E_TIMEOUT": "timeouts", "E_CRC": "crc_errors", "E_FRAME": "frame_errors",
                  "E_CONNECT": "connect_errors", "E_EXCEPTION": "exceptions"}  # fmt: skip
#: workers wake on a shared time grid (seconds): one timer per bus and grid tick, however
#: many workers sleep on it; a woken worker may take a device up to one tick early (at most a
#: quarter of its interval), so it serves what falls due before the next tick without sleeping
GRID_S = 0.02
EARLY_S = GRID_S
#: a device polled faster sleeps on its own timer (on the grid, a 50 Hz meter's polls are late
FAST_S = 4 * GRID_S  # by up to one tick: a whole interval of the meter protection watches)


def _release(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _end_tick(bus: _Bus, tick: int) -> None:
    fut = bus.ticks.pop(tick, None)
    if fut is not None:
        _release(fut)


@dataclass
class DeviceRuntime:
    """What the poller knows of one device; mutated only by the poller's own tasks."""

    cfg: DeviceConfig
    profile: Profile
    plan: ReadPlan
    due: float
    failures: int = 0
    last_ok: float | None = None
    values: dict[str, float] = field(default_factory=dict)
    #: string points (serial numbers, models): kept aside, never role values
    texts: dict[str, str] = field(default_factory=dict)
    counters: Counter[str] = field(default_factory=Counter)
    exceptions: Counter[str] = field(default_factory=Counter)
    last_error: str = ""
    poll_starts: deque[float] = field(default_factory=lambda: deque(maxlen=16))
    lateness_s: deque[float] = field(default_factory=lambda: deque(maxlen=256))

    def role_values(self) -> dict[str, float]:
        out = {}
        for role, point in self.profile.roles.items():
            v = self.values.get(point)
            if v is not None and not math.isnan(v):
                out[role] = v
        return out

    def rate_hz(self) -> float | None:
        s = self.poll_starts
        if len(s) < 2 or s[-1] <= s[0]:
            return None
        return (len(s) - 1) / (s[-1] - s[0])


@dataclass
class WriteJob:
    device: DeviceRuntime
    point: Point
    words: list[int]
    verify: bool
    future: asyncio.Future[dict[str, Any]]


@dataclass
class _Bus:
    cfg: BusConfig
    links: list[ModbusLink]
    heap: list[tuple[float, int, DeviceRuntime]] = field(default_factory=list)
    urgent: deque[WriteJob] = field(default_factory=deque)
    sleepers: list[asyncio.Future[None]] = field(default_factory=list)
    #: grid tick -> the future every worker sleeping until that tick awaits
    ticks: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    paced: bool = False


class Poller:
    def __init__(
        self,
        node: NodeConfig,
        profiles: dict[str, Profile],
        clock: Callable[[], float] = time.monotonic,
        on_poll: Callable[[DeviceRuntime], None] | None = None,
    ) -> None:
        self.node = node
        self.clock = clock
        self.on_poll = on_poll
        self._seq = itertools.count()
        self.devices: dict[str, DeviceRuntime] = {}
        self.buses: dict[str, _Bus] = {}
        self._tasks: list[asyncio.Task[None]] = []
        #: devices not polled now (shared devices owned by another gateway)
        self.paused: set[str] = set()
        self._stopping = False
        now = clock()
        for bus in node.buses:
            paced = bus.serial and bus.model_line_time
            self.buses[bus.id] = _Bus(bus, [ModbusLink(bus) for _ in range(bus.concurrency)], paced=paced)
        # a device without a profile here (a SunSpec device that could not be scanned) is not polled
        wired = [d for d in node.devices if d.bus is not None and d.id in profiles]
        for i, dev in enumerate(wired):
            profile = profiles[dev.id]
            # spread first polls over one interval so a node does not start with a burst
            first = now + (i % 100) / 100 * min(dev.poll_interval_s, 1.0)
            rt = DeviceRuntime(dev, profile, ReadPlan.of(profile), first)
            self.devices[dev.id] = rt
            assert dev.bus is not None
            heapq.heappush(self.buses[dev.bus].heap, (first, next(self._seq), rt))

    # --- lifetime -----------------------------------------------------------------------

    async def start(self) -> None:
        for bus in self.buses.values():
            for link in bus.links:
                self._tasks.append(asyncio.create_task(self._worker(bus, link), name=f"poll-{bus.cfg.id}"))

    async def stop(self) -> None:
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for bus in self.buses.values():
            for link in bus.links:
                await link.close()

    # --- scheduling ---------------------------------------------------------------------

    async def _worker(self, bus: _Bus, link: ModbusLink) -> None:
        while not self._stopping:
            if bus.urgent:
                await self._write(bus, link, bus.urgent.popleft())
                continue
            if not bus.heap:
                await self._sleep(bus, None)
                continue
            due, _, top = bus.heap[0]
            now = self.clock()
            # early by at most a quarter interval, or fast devices bunch up in pairs
            if due > now + min(EARLY_S, top.cfg.poll_interval_s / 4):
                if top.cfg.poll_interval_s < FAST_S:
                    await self._sleep(bus, due - now)
                else:  # one shared wake-up grid: one loop pass serves many requests
                    await self._sleep_until_tick(bus, math.ceil(due / GRID_S), now)
                continue
            _, _, dev = heapq.heappop(bus.heap)
            if dev.cfg.id in self.paused:  # a shared device another gateway owns: not ours to poll
                dev.due = due + dev.cfg.poll_interval_s
                heapq.heappush(bus.heap, (dev.due, next(self._seq), dev))
                continue
            try:
                await self._poll(bus, link, dev, due)
            finally:
                nxt = next_poll_at(due, self.clock(), dev.cfg.poll_interval_s, dev.failures)
                dev.due = nxt
                heapq.heappush(bus.heap, (nxt, next(self._seq), dev))
                if bus.heap[0][2] is dev and len(bus.links) > 1:
                    self._wake(bus)  # now the earliest: a sleeping sibling must re-check

    async def _sleep(self, bus: _Bus, delay: float | None) -> None:
        """Sleep `delay` seconds (None: until woken) or until `_wake(bus)`; no exceptions raised
        on the hot path, unlike asyncio.timeout."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        bus.sleepers.append(fut)
        handle = loop.call_later(max(delay, 0.0), _release, fut) if delay is not None else None
        try:
            await fut
        finally:
            if handle is not None:
                handle.cancel()
            with contextlib.suppress(ValueError):
                bus.sleepers.remove(fut)

    async def _sleep_until_tick(self, bus: _Bus, tick: int, now: float) -> None:
        """Sleep until grid tick `tick` (or `_wake(bus)`) on the one future and timer the bus
        keeps per tick. Only `stop()` cancels workers, all at once, so sharing is safe."""
        fut = bus.ticks.get(tick)
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = bus.ticks[tick] = loop.create_future()
            loop.call_later(max(tick * GRID_S - now, 0.0), _end_tick, bus, tick)
        await fut

    @staticmethod
    def _wake(bus: _Bus) -> None:
        for fut in bus.sleepers:
            _release(fut)
        for fut in bus.ticks.values():
            _release(fut)
        bus.ticks.clear()  # their timers find nothing left to end

    async def _request(self, bus: _Bus, link: ModbusLink, call: Callable[[], Any], answer_bytes: int) -> Any:
        """One request on the link, retried once at once on a frame/CRC error, paced on
        serial lines by the modelled line time of a request and its `answer_bytes` answer
        (a pty ignores baud)."""
        start = self.clock() if bus.paced else 0.0
        try:
            try:
                return await call()
            except FieldError as exc:
                if exc.code not in RETRY_AT_ONCE:
                    raise
            return await call()
        finally:
            if bus.paced:
                await self._pace(bus, start, answer_bytes)

    async def _pace(self, bus: _Bus, start: float, answer_bytes: int) -> None:
        """Keep a serial line busy for the modelled time of a request and its answer."""
        rest = line_time_s(bus.cfg, 8, answer_bytes) - (self.clock() - start)
        if rest > 0:
            await asyncio.sleep(rest)

    async def _poll(self, bus: _Bus, link: ModbusLink, dev: DeviceRuntime, due: float) -> None:
        start = self.clock()
        dev.lateness_s.append(max(0.0, start - due))
        dev.poll_starts.append(start)
        dev.counters["polls"] += 1
        unit, timeout_s, gap_s = dev.cfg.unit_id, dev.cfg.timeout_s, dev.cfg.inter_frame_delay_s
        answers: list[Sequence[int]] = []
        try:
            for block in dev.plan.blocks:
                # inline, not through _request: this runs for every block of every poll
                sent = self.clock() if bus.paced else 0.0
                try:
                    words = await link.read(unit, block.start, block.count, block.table, timeout_s, gap_s)
                except FieldError as exc:
                    if exc.code not in RETRY_AT_ONCE:
                        raise
                    words = await link.read(unit, block.start, block.count, block.table, timeout_s, gap_s)
                finally:
                    if bus.paced:
                        await self._pace(bus, sent, _answer_bytes(block))
                answers.append(words)
        except FieldError as exc:
            self._count_error(dev, exc)
            dev.failures += 1
        else:
            dev.values, texts = dev.plan.values(answers)
            if texts:
                dev.texts = texts
            dev.failures = 0
            dev.last_ok = self.clock()
            dev.counters["ok"] += 1
        if self.on_poll is not None:
            self.on_poll(dev)

    @staticmethod
    def _count_error(dev: DeviceRuntime, exc: FieldError) -> None:
        key = ERROR_COUNTERS.get(exc.code, "other_errors")
        dev.counters[key] += 1
        if exc.exception_code is not None:
            dev.exceptions[f"0x{exc.exception_code:02X}"] += 1
        dev.last_error = f"{exc.code}: {exc.detail}"

    # --- writes -------------------------------------------------------------------------

    async def write(
        self, device_id: str, point_name: str, value: Value, verify: bool = True
    ) -> dict[str, Any]:
        """Write one engineering value (absolute, so idempotent) to a holding register point
        (function 16, or 06 for one register if the profile says so) or a coil (05); with
        `verify`, read it back. Returns {ok, code, message, written, read_back}."""
        dev = self.devices.get(device_id)
        if dev is None:
            return {"ok": False, "code": "E_UNKNOWN_DEVICE", "message": f"{device_id} is not wired here"}
        try:
            point = dev.profile.point(point_name)
            words = encode(point, value, sf=self._sf(dev, point))
        except (KeyError, ValueError) as exc:
            return {"ok": False, "code": "E_LIMIT", "message": str(exc)}
        assert dev.cfg.bus is not None
        bus = self.buses[dev.cfg.bus]
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        bus.urgent.append(WriteJob(dev, point, words, verify, fut))
        self._wake(bus)
        return await fut

    @staticmethod
    def _sf(dev: DeviceRuntime, point: Point) -> float | None:
        """The scale factor last read for a point scaled by a scale point (else None)."""
        return dev.values.get(point.scale_point) if point.scale_point is not None else None

    async def _write(self, bus: _Bus, link: ModbusLink, job: WriteJob) -> None:
        dev, point, unit = job.device, job.point, job.device.cfg.unit_id
        timing: dict[str, Any] = {"timeout_s": dev.cfg.timeout_s, "gap_s": dev.cfg.inter_frame_delay_s}
        sf = self._sf(dev, point)
        result: dict[str, Any]

        def write() -> Any:
            if point.bits:  # a coil: function 05
                return link.write_bits(unit, point.address, job.words, **timing)
            return link.write(
                unit, point.address, job.words, single=dev.profile.write_single_register, **timing
            )

        try:
            await self._request(bus, link, write, 8)
            dev.counters["writes"] += 1
            result = {"ok": True, "code": "OK", "message": "", "written": decode(point, job.words, sf)}
            if job.verify:
                back = await self._request(
                    bus,
                    link,
                    lambda: link.read(unit, point.address, point.count, point.table, **timing),
                    _answer_bytes(point),
                )
                back = [int(w) for w in back]
                result["read_back"] = decode(point, back, sf)
                if back != job.words:
                    dev.counters["write_mismatches"] += 1
                    result.update(
                        ok=False,
                        code="E_WRITE_VERIFY",
                        message=f"read back {result['read_back']} after writing {result['written']}",
                    )
        except FieldError as exc:
            self._count_error(dev, exc)
            dev.counters["write_errors"] += 1
            result = {"ok": False, "code": exc.code, "message": exc.detail}
        if not job.future.done():
            job.future.set_result(result)

    # --- reporting ----------------------------------------------------------------------

    def device_status(self, dev: DeviceRuntime, now: float | None = None) -> dict[str, Any]:
        now = self.clock() if now is None else now
        c = dev.counters
        return {
            "id": dev.cfg.id,
            "kind": dev.cfg.kind,
            "bus": dev.cfg.bus,
            "unit_id": dev.cfg.unit_id,
            "profile": dev.profile.name,
            "state": device_state(now, dev.last_ok, dev.cfg.poll_interval_s, dev.failures),
            "age_s": None if dev.last_ok is None else round(now - dev.last_ok, 3),
            "poll_interval_s": dev.cfg.poll_interval_s,
            "rate_hz": None if (r := dev.rate_hz()) is None else round(r, 3),
            "polls": c["polls"],
            "ok": c["ok"],
            "timeouts": c["timeouts"],
            "crc_errors": c["crc_errors"],
            "frame_errors": c["frame_errors"],
            "connect_errors": c["connect_errors"],
            "exceptions": dict(dev.exceptions),
            "writes": c["writes"],
            "write_errors": c["write_errors"],
            "failures_in_a_row": dev.failures,
            "last_error": dev.last_error,
            "values": dev.role_values(),
            "texts": dict(dev.texts),
        }

    def point_values(self, device_id: str) -> dict[str, Value]:
        """Every point of a device as last read, numbers and strings (e.g. for `io read`)."""
        dev = self.devices[device_id]
        return {**dev.values, **dev.texts}

    def snapshot(self) -> list[dict[str, Any]]:
        """Every device this node polls now (shared devices owned elsewhere are left out)."""
        now = self.clock()
        return [self.device_status(d, now) for k, d in self.devices.items() if k not in self.paused]


def _answer_bytes(what: Block | Point) -> int:
    """Bytes of the answer to a read of a block (or of one point): 5 + the data."""
    return 5 + ((what.count + 7) // 8 if what.bits else 2 * what.count)
