"""SunSpec chains through pysunspec2's model definitions: encode a chain, find its base at
every base a device may use, walk it, decode each model with its scale factors, and refuse
what is no SunSpec device or a chain that never ends."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from meshems.adapters import sunspec
from meshems.adapters.modbus import FieldError

PV_CHAIN = [
    (1, {"Mn": "meshems", "Md": "sim-pv", "SN": "PV-0001", "Vr": "1.0"}),
    (103, {"W_SF": 0, "W": 3500, "Hz_SF": -2, "Hz": 50.01, "A_SF": -1, "A": 12.3, "V_SF": -1,
           "PhVphA": 230.1, "WH_SF": 0, "WH": 123456, "St": 4}),
    (120, {"WRtg_SF": 1, "WRtg": 10000, "DERTyp": 4}),
    (123, {"WMaxLimPct_SF": -1, "WMaxLimPct": 55.5, "WMaxLim_Ena": 1}),
]  # fmt: skip


class Device:
    """Holding registers in a dict; reads outside what is mapped answer exception 02."""

    def __init__(self, base: int, chain: Sequence[tuple[int, dict]], end: bool = True) -> None:
        self.regs: dict[int, int] = {}
        self.reads = 0
        addr = base
        self._put(addr, list(sunspec.MARKER))
        addr += 2
        for mid, values in chain:
            words = sunspec.encode(mid, values)
            self._put(addr, words)
            addr += len(words)
        if end:
            self._put(addr, [sunspec.END_ID, 0])

    def _put(self, addr: int, words: list[int]) -> None:
        for i, w in enumerate(words):
            self.regs[addr + i] = w

    async def read(self, address: int, count: int) -> list[int]:
        self.reads += 1
        assert count <= sunspec.MAX_READ
        if address not in self.regs:
            raise FieldError("E_EXCEPTION", "exception 0x02 (illegal data address)", 2)
        return [self.regs.get(address + i, 0) for i in range(count)]


def scan(dev: Device) -> sunspec.Chain:
    return asyncio.run(sunspec.scan(dev.read))


@pytest.mark.parametrize("base", sunspec.BASES)
def test_the_chain_is_found_at_every_base(base: int) -> None:
    chain = scan(Device(base, PV_CHAIN))
    assert chain.base == base and chain.ids() == [1, 103, 120, 123]
    assert chain.models[0].address == base + 2 and chain.models[1].address == base + 2 + 68


def test_models_decode_with_their_scale_factors_applied() -> None:
    chain = scan(Device(40000, PV_CHAIN))
    common, inverter, nameplate, controls = chain.models
    assert (common.name, common.points["Mn"], common.points["SN"]) == ("common", "meshems", "PV-0001")
    assert inverter.name == "inverter_three_phase" and inverter.length == 50
    assert inverter.points["W"] == 3500 and inverter.points["Hz"] == pytest.approx(50.01)
    assert inverter.points["A"] == pytest.approx(12.3) and inverter.units["W"] == "W"
    assert inverter.points["VA"] is None  # not implemented: the device left its marker
    assert nameplate.points["WRtg"] == 10000 and controls.points["WMaxLimPct"] == pytest.approx(55.5)
    listed = {p["name"]: p for p in chain.find(123).as_dict()["points"]}  # type: ignore[union-attr]
    assert listed["WMaxLimPct"]["units"] == "%WMax" or listed["WMaxLimPct"]["units"].startswith("%")


def test_a_long_model_is_read_in_pieces_of_at_most_125_registers() -> None:
    dev = Device(0, [(1, {"Mn": "m"}), (203, {"W_SF": 0, "W": -1200, "V_SF": 0, "PhV": 231})])
    chain = scan(dev)
    assert chain.ids() == [1, 203] and chain.models[1].points["W"] == -1200
    assert chain.models[1].length == 105  # within one read; Device asserts every read <= 125


def test_a_vendor_model_is_listed_as_unknown_and_skipped() -> None:
    dev = Device(40000, [(1, {"Mn": "m"})], end=False)
    addr = 40000 + 2 + 68
    dev._put(addr, [64999, 4, 1, 2, 3, 4, sunspec.END_ID, 0])
    chain = scan(dev)
    assert chain.ids() == [1, 64999]
    assert chain.models[1].known is False and chain.models[1].length == 4


def test_no_marker_anywhere_names_every_base_tried() -> None:
    dev = Device(40000, PV_CHAIN)
    dev.regs[40000] = 0x1234
    with pytest.raises(sunspec.SunSpecError) as info:
        scan(dev)
    assert info.value.code == "E_SUNSPEC_NOT_FOUND"
    assert "40000: 1234 6E53, not 'SunS'" in info.value.message and "50001" in info.value.message


def test_a_chain_without_an_end_is_refused_not_walked_forever() -> None:
    dev = Device(0, [], end=False)
    for i in range(sunspec.MAX_MODELS + 2):  # vendor models, one after the other, no end marker
        dev._put(2 + 3 * i, [64000, 1, 0])
    with pytest.raises(sunspec.SunSpecError) as info:
        scan(dev)
    assert info.value.code == "E_SUNSPEC_CHAIN" and "no end marker" in info.value.message


def test_a_model_running_past_the_address_space_is_refused() -> None:
    dev = Device(50000, [], end=False)
    dev._put(50002, [103, 0xFFF0])
    with pytest.raises(sunspec.SunSpecError, match="past the address space"):
        scan(dev)


def test_layout_offsets_follow_the_definition() -> None:
    points = {p.name: p for p in sunspec.layout(103)}
    assert (points["ID"].offset, points["L"].offset, points["A"].offset) == (0, 1, 2)
    assert points["W"].sf == "W_SF" and points["WH"].size == 2 and points["WH"].type == "acc32"
    with pytest.raises(KeyError, match="64999"):
        sunspec.layout(64999)
