"""What a node's state machine knows of its own gateway, fixed at start: its devices (with
the point roles their profiles offer), its protection limits, the declarations it may
propose, the configured policy, its forecaster and the timing of its duties.

Built once from the config by `NodeSpec.from_config`; the machine never reads raw config
dicts or profiles. Pure: no I/O (the forecaster arrives already loaded).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from meshems.core import commands
from meshems.core.config import ClusterConfig, NodeConfig, ProtectionConfig
from meshems.core.forecast import ForecastModel


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One device of this gateway. `roles`: the point roles its profile offers (setpoint_kw,
    limit_pct, relay_1, revert_timeout_s, ...); empty for a device that is not wired."""

    id: str
    kind: str
    min_kw: float
    max_kw: float
    rated_kw: float | None = None
    revert_timeout_s: float = 0.0
    shared: bool = False
    roles: frozenset[str] = frozenset()
    poll_interval_s: float = 1.0

    @property
    def wired(self) -> bool:
        return bool(self.roles)

    @property
    def refresh_s(self) -> float:
        """How often a committed value is written again while it stays committed: before
        the device's revert timeout (a third of it), else every IDLE_REFRESH_S."""
        return max(0.5, self.revert_timeout_s / 3) if self.revert_timeout_s > 0 else IDLE_REFRESH_S


#: refresh interval of a device without a revert timeout
IDLE_REFRESH_S = 30.0


@dataclass(frozen=True, slots=True)
class ForecastSpec:
    """The node's fitted forecaster and its replicated form (the .npz bytes, digest)."""

    model: ForecastModel
    digest: str
    npz: bytes


@dataclass(frozen=True, slots=True)
class Timing:
    """The cadence of the node's duties (seconds); the defaults are what the daemon runs."""

    report_s: float = 1.0  # a measurement summary about once per second
    survival_after_s: float = 1.5  # without quorum this long: survival mode
    survival_step_s: float = 0.5  # survival dispatch cadence
    stale_report_s: float = 3.0  # a node whose report has not advanced this long is gone
    declare_retry_s: float = 0.5
    policy_retry_s: float = 1.0
    orphans_s: float = 1.0
    forecast_retry_s: float = 1.0
    forecast_attempts: int = 600
    history_save_s: float = 900.0
    report_timeout_s: float = 2.0


@dataclass(frozen=True)
class NodeSpec:
    node_id: str
    devices: Mapping[str, DeviceSpec]
    protection: ProtectionConfig | None = None
    #: the declare_node command of this node and of every node that is a member from the
    #: start (a leader declares the missing ones, so the zone knows every configured device)
    declarations: Mapping[str, bytes] = field(default_factory=dict)
    #: the configured zone policy (committed by a leader when the zone has none)
    policy_values: Mapping[str, Any] | None = None
    forecast: ForecastSpec | None = None
    timing: Timing = Timing()

    @classmethod
    def from_config(
        cls,
        cfg: ClusterConfig,
        node_id: str,
        roles: Mapping[str, frozenset[str]] | None = None,
        forecast: ForecastModel | None = None,
        timing: Timing | None = None,
    ) -> NodeSpec:
        """The spec of `node_id`; `roles`: the point roles of each wired device's profile."""
        node = cfg.node(node_id)
        roles = roles or {}
        devices = {
            d.id: DeviceSpec(
                d.id,
                d.kind,
                d.min_kw,
                d.max_kw,
                d.rated_kw,
                d.revert_timeout_s,
                d.shared,
                frozenset(roles.get(d.id, frozenset())),
                d.poll_interval_s,
            )
            for d in node.devices
        }
        decls = {n.id: declaration(n) for n in cfg.nodes if n.initial or n.id == node_id}
        policy = None
        if cfg.policy is not None:
            policy = {**cfg.policy.model_dump(), "shed_order": list(cfg.policy.shed_order)}
        return cls(
            node_id, devices, node.protection, decls, policy, forecast_spec(forecast), timing or Timing()
        )

    def own(self, kind: str) -> list[DeviceSpec]:
        """This gateway's wired devices of one kind, by id."""
        return [d for _, d in sorted(self.devices.items()) if d.kind == kind and d.wired]


def declaration(node: NodeConfig) -> bytes:
    """The declare_node command of a node; its request id is derived from its content, so
    every node proposing it (the node itself, or a leader on its behalf) dedups to one."""
    devices = [
        {
            "id": d.id,
            "kind": d.kind,
            "min_kw": d.min_kw,
            "max_kw": d.max_kw,
            **({"shared": True} if d.shared else {}),
        }
        for d in node.devices
    ]
    body = msgpack.packb([node.id, node.raft_endpoint, node.api_endpoint, devices])
    rid = f"declare-{node.id}-{hashlib.sha256(body).hexdigest()[:16]}"
    return commands.encode(
        "declare_node", rid, node_id=node.id, raft=node.raft_endpoint, api=node.api_endpoint, devices=devices
    )


def forecast_spec(model: ForecastModel | None) -> ForecastSpec | None:
    """The replicated form of a fitted forecaster (compressed .npz in memory)."""
    if model is None:
        return None
    import numpy as np

    from meshems.core.forecast import model_digest, to_arrays

    buf = io.BytesIO()
    np.savez_compressed(buf, **to_arrays(model))
    return ForecastSpec(model, model_digest(model), buf.getvalue())
