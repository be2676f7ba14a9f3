"""What a simulated meter shows beyond its roles: the per-phase and total quantities of a
balanced three-phase site (voltages, currents, powers, power factor), by the SunSpec 701
point names the built-in meter profiles use (W, WL1, VL1, VL1L2, AL1, PF, Hz, ...).

Pure: a `Meter` in, engineering values out (kW, kvar, kVA, V, A, Hz, kWh).
"""

from __future__ import annotations

import math

from meshems.sim.device_physics import Meter

_SQRT3 = math.sqrt(3.0)


def meter_points(m: Meter) -> dict[str, float]:
    """Every point name this view knows -> its value on meter `m` (one dict per reading)."""
    v, kw = m.voltage_v, m.grid_kw
    phase_a = abs(kw) * 1000.0 / 3.0 / v if v else 0.0
    ll = v * _SQRT3
    out = {
        "W": kw, "VA": abs(kw), "Var": 0.0, "PF": 1.0, "Hz": m.frequency_hz, "LNV": v, "LLV": ll,
        "A": 3.0 * phase_a, "ASum": 3.0 * phase_a, "AAvg": phase_a, "AN": 0.0,
        "TotWhImp": m.energy_import_kwh, "TotWhExp": m.energy_export_kwh,
        "TotWh": m.energy_import_kwh + m.energy_export_kwh,
        "VL1L2": ll, "VL2L3": ll, "VL3L1": ll,
    }  # fmt: skip
    for phase in ("L1", "L2", "L3"):
        out.update(
            {f"W{phase}": kw / 3.0, f"VA{phase}": abs(kw) / 3.0, f"Var{phase}": 0.0, f"PF{phase}": 1.0,
             f"A{phase}": phase_a, f"V{phase}": v, f"Ang{phase}": 0.0,
             f"TotWhImp{phase}": m.energy_import_kwh / 3.0, f"TotWhExp{phase}": m.energy_export_kwh / 3.0,
             f"TotWh{phase}": (m.energy_import_kwh + m.energy_export_kwh) / 3.0}
        )  # fmt: skip
    return out
