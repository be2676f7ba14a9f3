"""`profile: sunspec` at node start: scan each such device's model chain over its own bus,
build its profile from the chain (`core.sunspec_profile`) and keep the chain (model ids,
addresses, lengths) in DATA_DIR/NODE/sunspec/DEVICE.json. A device that does not answer the
scan is configured from that cache (a gateway that restarts while an inverter sleeps at night
still polls it once it wakes); with no cache it is left unpolled, with an error naming the
device, its bus and the code (E_SUNSPEC_NOT_FOUND, E_SUNSPEC_CHAIN, E_TIMEOUT, E_CONNECT,
E_SUNSPEC_PROFILE when the chain lacks a model the device's kind needs).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshems.adapters import sunspec
from meshems.adapters.atomic_write import write_atomic
from meshems.adapters.modbus import FieldError, ModbusLink
from meshems.core.config import BusConfig, DeviceConfig
from meshems.core.register_map import Profile
from meshems.core.sunspec_profile import ModelLayout, sunspec_profile

#: how long one device's scan may take at start, all reads included
SCAN_TIMEOUT_S = 20.0
#: a cache file larger than this is not a chain of ours
CACHE_MAX_BYTES = 64 * 1024

Log = Callable[..., None]


async def scan_chain(
    bus: BusConfig, dev: DeviceConfig, timeout_s: float = SCAN_TIMEOUT_S
) -> list[ModelLayout]:
    """The chain of one device, read over a connection of its own (the poller is not running yet)."""
    link = ModbusLink(bus)

    async def read(address: int, count: int) -> list[int]:
        return list(
            await link.read(dev.unit_id, address, count, "holding", dev.timeout_s, dev.inter_frame_delay_s)
        )

    try:
        chain = await asyncio.wait_for(sunspec.scan(read), timeout_s)
    except FieldError as exc:
        raise sunspec.SunSpecError(exc.code, exc.detail) from None
    except TimeoutError:
        raise sunspec.SunSpecError("E_TIMEOUT", f"the scan took longer than {timeout_s:g} s") from None
    finally:
        await link.close()
    return chain.layouts()


def save_cache(path: Path, layouts: list[ModelLayout]) -> None:
    """Write the chain atomically (a temp file, then rename)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    body = {"models": [{"id": m.id, "address": m.address, "length": m.length} for m in layouts]}
    write_atomic(path, json.dumps(body, indent=1).encode(), mode=0o644)


def load_cache(path: Path) -> list[ModelLayout]:
    """The cached chain; sunspec.SunSpecError E_SUNSPEC_CACHE naming the file when it is unusable."""

    def bad(why: str) -> sunspec.SunSpecError:
        return sunspec.SunSpecError("E_SUNSPEC_CACHE", f"{path}: {why}")

    try:
        if path.stat().st_size > CACHE_MAX_BYTES:
            raise bad(f"larger than {CACHE_MAX_BYTES} bytes")
        body: Any = json.loads(path.read_text(encoding="utf-8"))
        out = []
        for m in body["models"]:
            mid, address, length = (int(m[k]) for k in ("id", "address", "length"))
            if not (0 <= address < 0x10000 and 0 <= length < 0x10000):
                raise bad(f"model {mid}: address {address} or length {length} out of range")
            out.append(ModelLayout(mid, address, length, tuple(sunspec.layout(mid))))
        return out
    except FileNotFoundError:
        raise bad("no cached chain (the device has never answered a scan)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise bad(f"not a cached chain ({exc})") from None


def cache_path(data_dir: Path, device_id: str) -> Path:
    return data_dir / "sunspec" / f"{device_id}.json"


async def _resolve(bus: BusConfig, dev: DeviceConfig, cache: Path, log: Log) -> Profile | None:
    source = f"device {dev.id} (bus {bus.id}, unit {dev.unit_id})"
    try:
        layouts = await scan_chain(bus, dev)
        save_cache(cache, layouts)
        log("info", "I_SUNSPEC_SCANNED", f"{source}: SunSpec models {', '.join(str(m.id) for m in layouts)}")
    except sunspec.SunSpecError as exc:
        try:
            layouts = load_cache(cache)
        except sunspec.SunSpecError as cached:
            log("error", exc.code, f"{source}: SunSpec scan failed ({exc.message}); {cached.message}; "
                "it is not polled until the node restarts", device=dev.id)  # fmt: skip
            return None
        log("warning", "W_SUNSPEC_CACHED", f"{source}: SunSpec scan failed ({exc.code}: {exc.message}); "
            f"using the chain cached in {cache}", device=dev.id)  # fmt: skip
    try:
        return sunspec_profile(dev.kind, layouts, source)
    except ValueError as exc:
        log("error", "E_SUNSPEC_PROFILE", str(exc), device=dev.id)
        return None


async def scan_profiles(
    buses: dict[str, BusConfig], devices: list[DeviceConfig], data_dir: Path, log: Log
) -> dict[str, Profile]:
    """The profile of every wired `profile: sunspec` device that could be configured, scanned
    concurrently (each on its own connection)."""
    wired = [d for d in devices if d.bus is not None]
    jobs = [_resolve(buses[d.bus], d, cache_path(data_dir, d.id), log) for d in wired if d.bus is not None]
    found = await asyncio.gather(*jobs)
    return {d.id: p for d, p in zip(wired, found, strict=True) if p is not None}


def sunspec_profiles(
    buses: dict[str, BusConfig], devices: list[DeviceConfig], data_dir: Path, log: Log
) -> dict[str, Profile]:
    """`scan_profiles` before the node's event loop runs."""
    return asyncio.run(scan_profiles(buses, devices, data_dir, log)) if devices else {}
