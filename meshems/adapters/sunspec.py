"""SunSpec through the SunSpec Alliance's own model definitions (PyPI `pysunspec2`): find a
device's SunSpec base, walk its model chain, decode each model with its scale factors
applied, and encode a model's registers (the simulator serves real chains with it).

Wraps `sunspec2.device` and `sunspec2.mdef` only: pysunspec2's Modbus client is blocking
and opens its own connection, so the reads come from the caller (`read(address, count)`,
async: the node's link, `io probe`'s, or a test's), and this module decodes what they return.
Stable codes: E_SUNSPEC_NOT_FOUND (no "SunS" at any base), E_SUNSPEC_CHAIN (a broken chain).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sunspec2.device as ss_device
import sunspec2.mdef as ss_mdef

from meshems.core.errors import MeshemsError
from meshems.core.sunspec_profile import ModelLayout, SpecPoint

#: "SunS" in two registers
MARKER = (0x5375, 0x6E53)
END_ID = 0xFFFF
#: wire addresses tried for the marker: the standard bases (40000, 0, 50000), then the same
#: bases one higher, where devices documented with 1-based register numbers put them
BASES = (40000, 0, 50000, 40001, 1, 50001)
#: a chain longer than this, or running past the address space, is refused as broken
MAX_MODELS = 64
#: the most registers one read asks for (Modbus function 03)
MAX_READ = 125

Read = Callable[[int, int], Awaitable[Sequence[int]]]


class SunSpecError(MeshemsError):
    """No SunSpec device there, or a chain that cannot be walked; `code` says which."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model found in a chain; `points`: name -> its value with scale factors applied
    (None when the device marks it not implemented); `groups`: repeating groups, flattened."""

    id: int
    name: str
    label: str
    address: int
    length: int
    points: dict[str, Any] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    known: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "label": self.label,
            "address": self.address,
            "length": self.length,
            "known": self.known,
            "points": [
                {"name": k, "value": v, "units": self.units.get(k, "")} for k, v in self.points.items()
            ],
        }


@dataclass(frozen=True, slots=True)
class Chain:
    base: int
    models: tuple[ModelInfo, ...]

    def ids(self) -> list[int]:
        return [m.id for m in self.models]

    def find(self, *ids: int) -> ModelInfo | None:
        """The first model in the chain whose id is one of `ids`."""
        return next((m for m in self.models if m.id in ids), None)

    def layouts(self) -> list[ModelLayout]:
        """The chain's models pysunspec2 defines, as `core.sunspec_profile` takes them."""
        return [ModelLayout(m.id, m.address, m.length, tuple(layout(m.id))) for m in self.models if m.known]

    def as_dict(self) -> dict[str, Any]:
        return {"base": self.base, "models": [m.as_dict() for m in self.models]}


def model_def(model_id: int) -> dict[str, Any] | None:
    """pysunspec2's definition of a model, or None for a model it does not define (vendor)."""
    try:
        return ss_device.get_model_def(model_id)
    except Exception:  # pysunspec2 raises a bare Exception or mdef errors for unknown ids
        return None


def layout(model_id: int) -> list[SpecPoint]:
    """The top-level points of a model, in register order (repeating groups left out: their
    length is the device's). Raises KeyError for a model pysunspec2 does not define."""
    mdef = model_def(model_id)
    if mdef is None:
        raise KeyError(f"SunSpec model {model_id} is not in pysunspec2's model definitions")
    out, offset = [], 0
    for p in mdef[ss_mdef.GROUP][ss_mdef.POINTS]:
        size = int(p[ss_mdef.SIZE])
        out.append(
            SpecPoint(
                name=p[ss_mdef.NAME],
                offset=offset,
                size=size,
                type=p[ss_mdef.TYPE],
                sf=p.get(ss_mdef.SF) if isinstance(p.get(ss_mdef.SF), str) else None,
                units=p.get(ss_mdef.UNITS, ""),
                access=p.get(ss_mdef.ACCESS, "R"),
                label=p.get(ss_mdef.LABEL, p[ss_mdef.NAME]),
            )
        )
        offset += size
    return out


def _words_to_bytes(words: Sequence[int]) -> bytes:
    return b"".join(int(w & 0xFFFF).to_bytes(2, "big") for w in words)


def _bytes_to_words(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in values.items():
        if k in ("ID", "L", "mid", "error", "model_id"):
            continue
        if isinstance(v, list):  # a repeating group
            for i, item in enumerate(v):
                out.update(_flatten(item, f"{prefix}{k}[{i + 1}]."))
        elif isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            if isinstance(v, float) and not math.isfinite(v):
                v = None
            out[prefix + k] = v
    return out


def decode(model_id: int, address: int, words: Sequence[int]) -> ModelInfo:
    """A model from its registers, ID and length included (`words[1]` is its length)."""
    length = words[1]
    mdef = model_def(model_id)
    if mdef is None:
        return ModelInfo(model_id, f"model_{model_id}", "not in pysunspec2's definitions", address, length,
                         known=False)  # fmt: skip
    model = ss_device.Model(
        model_id=model_id, model_addr=address, model_len=length, data=_words_to_bytes(words)
    )
    group = mdef[ss_mdef.GROUP]
    values = _flatten(model.get_dict(computed=True))
    units = {p.name: p.units for p in layout(model_id)}
    return ModelInfo(
        model_id, group[ss_mdef.NAME], group.get(ss_mdef.LABEL, ""), address, length, values, units
    )


def encode(model_id: int, values: dict[str, float | int | str]) -> list[int]:
    """A model's registers (ID and length first, groups included) holding `values`
    (engineering values for scaled points: give their scale factors in `values` too).
    Points not given keep the library's not-implemented value."""
    points = layout(model_id)
    model = ss_device.Model(model_id=model_id, model_addr=0, model_len=0)
    sfs = {p.sf for p in points if p.sf}
    for name in sorted(values, key=lambda n: n not in sfs):  # scale factors before what they scale
        point = model.points.get(name)
        if point is None:
            raise KeyError(f"SunSpec model {model_id} has no point {name!r}")
        if name in sfs or point.sf is None or isinstance(values[name], str):
            point.set_value(values[name])
        else:
            point.set_value(values[name], computed=True)
    words = _bytes_to_words(model.get_mb())
    words[0], words[1] = model_id, len(words) - 2
    return words


async def _read_all(read: Read, address: int, count: int) -> list[int]:
    out: list[int] = []
    while len(out) < count:
        n = min(MAX_READ, count - len(out))
        out += list(await read(address + len(out), n))
    return out


async def find_base(read: Read) -> int:
    """The wire address of the "SunS" marker (E_SUNSPEC_NOT_FOUND naming what each base gave)."""
    tried = []
    for base in BASES:
        try:
            words = list(await read(base, 2))
        except MeshemsError as exc:
            tried.append(f"{base}: {exc.code}")
            continue
        except Exception as exc:  # a field error from the caller's link: its text says why
            tried.append(f"{base}: {getattr(exc, 'code', type(exc).__name__)}")
            continue
        if tuple(words[:2]) == MARKER:
            return base
        tried.append(f"{base}: {words[0]:04X} {words[1]:04X}, not 'SunS'")
    raise SunSpecError("E_SUNSPEC_NOT_FOUND", f"no SunSpec marker at any base ({'; '.join(tried)})")


async def scan(read: Read, base: int | None = None, progress: Callable[[str], None] | None = None) -> Chain:
    """Find the base (unless given) and walk the model chain to its end marker, decoding each
    model. A chain that never ends, or runs past the address space, is E_SUNSPEC_CHAIN."""
    if base is None:
        base = await find_base(read)
    else:
        words = list(await read(base, 2))
        if tuple(words[:2]) != MARKER:
            found = " ".join(f"{w:04X}" for w in words[:2])
            raise SunSpecError(
                "E_SUNSPEC_NOT_FOUND", f"no SunSpec marker at base {base} (found {found}, not 'SunS')"
            )
    address, models = base + 2, []
    for _ in range(MAX_MODELS + 1):
        head = list(await read(address, 2))
        model_id = head[0]
        if model_id == END_ID:
            return Chain(base, tuple(models))
        length = head[1]
        if address + 2 + length > 0x10000:
            msg = f"model {model_id} at {address} claims {length} registers, past the address space"
            raise SunSpecError("E_SUNSPEC_CHAIN", msg)
        if progress is not None:
            progress(f"model {model_id} at {address} ({length} registers)")
        body = await _read_all(read, address + 2, length)
        models.append(decode(model_id, address, [model_id, length, *body]))
        address += 2 + length
    raise SunSpecError("E_SUNSPEC_CHAIN", f"more than {MAX_MODELS} models from base {base}: no end marker")
