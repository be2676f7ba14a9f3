"""The lab's cluster config and simulated sites: every gateway on its own underlay and
overlay address with a meter, a battery and PV on a simulated Modbus site. Writes the files
only; must not start anything (gateways.py does)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from meshems.lab.netlab import NetPlan

RAFT_PORT, API_PORT, MODBUS_PORT = 17101, 17201, 1502
#: the simulated site's control API (GET /v1/site), on the gateway's underlay address, so the
#: fault run can read every site's meter and battery from the root namespace (lab.meters)
SIM_CONTROL_PORT = 17301


def _site(seed: int, control_host: str) -> dict[str, Any]:
    return {
        "site": {"seed": seed, "start_h": 12, "soc_pct": 60},
        "control": {"host": control_host, "port": SIM_CONTROL_PORT},
        "servers": [{"id": "main", "type": "tcp", "host": "127.0.0.1", "port": MODBUS_PORT}],
        "devices": [
            {"server": "main", "unit_id": 1, "model": "meter", "profile": "meter"},
            {"server": "main", "unit_id": 2, "model": "battery", "profile": "battery"},
            {"server": "main", "unit_id": 3, "model": "pv", "profile": "pv"},
            {"server": "main", "unit_id": 4, "model": "relay", "profile": "relay"},
        ],
    }


def _devices(node: str) -> list[dict[str, Any]]:
    return [
        {"id": f"{node}-meter", "kind": "meter", "bus": "site", "unit_id": 1, "profile": "meter"},
        {"id": f"{node}-bat", "kind": "battery", "min_kw": -50, "max_kw": 50, "bus": "site",
         "unit_id": 2, "profile": "battery", "revert_timeout_s": 30},
        {"id": f"{node}-pv", "kind": "pv", "min_kw": 0, "max_kw": 40, "rated_kw": 40, "bus": "site",
         "unit_id": 3, "profile": "pv", "revert_timeout_s": 30},
    ]  # fmt: skip


def write_lab_config(folder: Path, plan: NetPlan, sims: bool, fsync: bool = True) -> Path:
    """The lab's cluster config: every node on its own underlay and overlay address;
    `fsync` False: journals not synced (to show what a power cut then loses)."""
    nodes = []
    for i, n in enumerate(plan.nodes):
        node: dict[str, Any] = {
            "id": n,
            "address": plan.underlay(n),
            "overlay_address": plan.overlay(n),
            "raft_port": RAFT_PORT,
            "api_port": API_PORT,
        }
        if sims:
            site = folder / f"site-{n}.yaml"
            site.write_text(yaml.safe_dump(_site(seed=i + 1, control_host=plan.underlay(n)), sort_keys=False))
            node["sim_site"] = site.name
            node["buses"] = [{"id": "site", "type": "tcp", "host": "127.0.0.1", "port": MODBUS_PORT}]
            node["devices"] = _devices(n)
        else:
            node["devices"] = [{"id": f"{n}-bat", "kind": "battery", "min_kw": -50, "max_kw": 50}]
        nodes.append(node)
    doc = {
        "cluster": f"lab-{plan.tag}",
        "zone": "lab",
        "raft": {"secret_file": "secret/raft.secret", "data_dir": "data", "fsync": fsync},
        # every lab client (fault clients, the overlay benchmark's 100 in flight, each closing
        # and reconnecting: a connection counts until the node has seen it close) comes from
        # the root namespace's one address
        "api": {"max_connections_per_peer": 256},
        "overlay": {"key_dir": "keys", "interface_prefix": f"mw{plan.tag}-", "handshake_max_age_s": 30},
        "nodes": nodes,
    }
    path = folder / "lab.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
