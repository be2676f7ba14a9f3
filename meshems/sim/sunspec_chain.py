"""A real SunSpec model chain for a simulated inverter, battery or meter (`profile: sunspec`
in a site file): the registers from 40000 (the "SunS" marker, the models, the end marker)
encoded by pysunspec2 with fixed scale factors and nameplate values, and the profile the
simulator serves them through, built by the same `core.sunspec_profile` a node uses after
its scan, so what the simulator publishes is what a node reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshems.adapters import sunspec
from meshems.core.register_map import Profile
from meshems.core.sunspec_profile import ModelLayout, sunspec_profile

BASE = 40000
#: the models each simulated kind serves, in chain order
CHAINS: Mapping[str, tuple[int, ...]] = {
    "pv": (1, 103, 120, 123),
    "battery": (1, 103, 120, 124, 704, 713),
    "meter": (1, 203),
}
#: the scale factors the simulator publishes (W in 10 W steps: int16 holds up to 327 kW)
SCALE_FACTORS: Mapping[int, Mapping[str, int]] = {
    103: {"A_SF": -1, "V_SF": -1, "W_SF": 1, "Hz_SF": -2, "VA_SF": 1, "VAr_SF": 1, "PF_SF": -2, "WH_SF": 0,
          "DCA_SF": -1, "DCV_SF": -1, "DCW_SF": 1, "Tmp_SF": -1},
    120: {"WRtg_SF": 1, "VARtg_SF": 1, "VArRtg_SF": 1, "ARtg_SF": -1, "PFRtg_SF": -2, "WHRtg_SF": 1,
          "AhrRtg_SF": 0, "MaxChaRte_SF": 1, "MaxDisChaRte_SF": 1},
    123: {"WMaxLimPct_SF": -1, "OutPFSet_SF": -2, "VArPct_SF": -1},
    124: {"WChaMax_SF": 1, "WChaDisChaGra_SF": 0, "VAChaMax_SF": 1, "MinRsvPct_SF": -1, "ChaState_SF": -1,
          "StorAval_SF": 0, "InBatV_SF": -1, "InOutWRte_SF": -1},
    704: {"PF_SF": -2, "WMaxLimPct_SF": -1, "WSet_SF": 0, "WSetPct_SF": -1, "VarSet_SF": 0,
          "VarSetPct_SF": -1},
    713: {"WH_SF": 1, "Pct_SF": -1},
    203: {"A_SF": -1, "V_SF": -1, "Hz_SF": -2, "W_SF": 1, "VA_SF": 1, "VAR_SF": 1, "PF_SF": -2, "TotWh_SF": 0,
          "TotVAh_SF": 0, "TotVArh_SF": 0},
}  # fmt: skip


def nameplate(kind: str, rated_kw: float, capacity_kwh: float, serial: str) -> dict[int, dict[str, Any]]:
    """The static values of each model of `kind`'s chain (common model, ratings, enables off)."""
    out: dict[int, dict[str, Any]] = {
        1: {"Mn": "meshems", "Md": f"sim-{kind}", "Vr": "1.0", "SN": serial, "DA": 1},
        103: {"St": 4},
        120: {"DERTyp": 82 if kind == "battery" else 4, "WRtg": rated_kw * 1000},
        123: {"WMaxLimPct": 100, "WMaxLim_Ena": 0, "Conn": 1},
        124: {"WChaMax": rated_kw * 1000, "StorCtl_Mod": 0},
        704: {"WSetEna": 0, "WSetMod": 1, "WSet": 0, "WSetRvrtTms": 0},
        713: {"WHRtg": capacity_kwh * 1000},
    }
    if kind == "battery":
        out[120]["WHRtg"] = capacity_kwh * 1000
    return out


def chain_registers(kind: str, values: Mapping[int, Mapping[str, Any]]) -> dict[int, int]:
    """Address -> word of the whole chain of `kind` from BASE, end marker included."""
    regs: dict[int, int] = {}
    address = BASE
    for i, w in enumerate(sunspec.MARKER):
        regs[address + i] = w
    address += 2
    for mid in CHAINS[kind]:
        model_values = {**SCALE_FACTORS.get(mid, {}), **values.get(mid, {})}
        for i, w in enumerate(sunspec.encode(mid, model_values)):
            regs[address + i] = w
        address += 2 + regs[address + 1]
    regs[address], regs[address + 1] = sunspec.END_ID, 0
    return regs


def chain_layouts(kind: str) -> list[ModelLayout]:
    """The models of `kind`'s chain where `chain_registers` puts them."""
    out, address = [], BASE + 2
    for mid in CHAINS[kind]:
        length = len(sunspec.encode(mid, {})) - 2
        out.append(ModelLayout(mid, address, length, tuple(sunspec.layout(mid))))
        address += 2 + length
    return out


def chain_profile(kind: str) -> Profile:
    """The profile a node builds from this chain (roles, scale points, enables)."""
    return sunspec_profile(kind, chain_layouts(kind), f"simulated SunSpec {kind}")
