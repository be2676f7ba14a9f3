"""The node daemon: one asyncio loop that wires the Raft adapter, the status API and the
node's own duties (declaring its devices to the zone) together.

Owns process lifetime: start-up checks (secret, journal), signals, clean shutdown. Zone
logic stays in `core`; Raft stays in `adapters.consensus`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import msgpack

from meshems.actuation import Actuator
from meshems.adapters.apply_trace import ApplyTrace
from meshems.adapters.consensus import RaftNode
from meshems.adapters.forecast_store import load_history, load_model_if_any, save_history
from meshems.adapters.journal import check_node_files, quarantine
from meshems.adapters.poller import Poller
from meshems.adapters.preflight import preflight
from meshems.adapters.profiles import load_profile
from meshems.adapters.secret import read_secret, token_ok
from meshems.adapters.wireguard import peer_status
from meshems.cloud_sync import CloudSync
from meshems.control import ZoneControl
from meshems.core import commands
from meshems.core.cluster import Result, ZoneState, setpoint_dict, state_hash
from meshems.core.config import ClusterConfig, NodeConfig
from meshems.core.errors import RETRYABLE_CODES, DiskFullError, MeshemsError
from meshems.core.load_history import forecast_reserve_kwh
from meshems.core.registers import Profile
from meshems.logs import Throttled, log
from meshems.ops.http import HttpApi, Request

REPORT_INTERVAL_S = 1.0
#: the largest operator command the API reads (a policy with its shed order)
OPERATOR_MAX_BYTES = max(commands.MAX_BYTES_BY_TYPE[t] for t in commands.OPERATOR_TYPES)
#: setpoint sources only dispatch and survival write
RESERVED_SOURCES = ("dispatch", "survival")


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
        "declare_node",
        rid,
        node_id=node.id,
        raft=node.raft_endpoint,
        api=node.api_endpoint,
        devices=devices,
    )


def prepare_journal(cfg: ClusterConfig, node_id: str, reset: bool) -> None:
    """Check the node's Raft files before pysyncobj replays them (or move them aside)."""
    folder = cfg.data_dir(node_id)
    if reset and folder.exists():
        moved = quarantine(folder)
        log(
            "warning",
            "W_JOURNAL_RESET",
            "moved Raft files aside; catching up from peers",
            files=[str(p) for p in moved],
        )
    report = check_node_files(folder / "raft.journal")
    if report is not None:
        log(
            "info",
            "I_JOURNAL_OK",
            "journal checked",
            entries=report.entries,
            last_index=report.last_index,
            last_term=report.last_term,
        )


class NodeDaemon:
    """A running meshems node: Raft member + status API."""

    def __init__(
        self,
        cfg: ClusterConfig,
        node_id: str,
        secret: str,
        profiles: dict[str, Profile] | None = None,
        trace: ApplyTrace | None = None,
    ) -> None:
        self.cfg = cfg
        self.trace = trace
        self.node = cfg.node(node_id)
        self.secret = secret
        self.started = time.monotonic()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.raft = RaftNode(
            cfg,
            node_id,
            secret,
            on_state_changed=self._on_state_changed,
            on_violation=self._raft_violation,
            on_disk_full=self._raft_disk_full,
            on_applied=self._on_applied,
        )
        #: why the daemon stopped on its own (a full disk), raised by `run_node`
        self.fatal: MeshemsError | None = None
        self._raft_refusals = {
            "E_AUTH_FAIL": Throttled("warning", "E_AUTH_FAIL", "Raft connections that failed authentication"),
            "W_RAFT_REFUSED": Throttled(
                "warning", "W_RAFT_REFUSED", "Raft connections refused by the guards"
            ),
        }
        self.poller = Poller(self.node, profiles or {}) if profiles else None
        self.actuator = Actuator(self.node, self.poller) if self.poller else None
        if trace is not None:
            self.raft.replica.on_restored = lambda st: trace.write("restore", i=st.last_index, t=st.last_term)
            if self.actuator is not None:
                self.actuator.on_actuated = lambda dev, kw, token: trace.write(
                    "act", dev=dev, kw=kw, t=token[0], i=token[1]
                )
        self.control = ZoneControl(cfg, self.node, self.raft, self.poller, self.actuator, self.propose)
        if self.poller is not None:
            self.poller.on_poll = self.control.on_poll
            # a shared device is polled only once the zone says this node owns it
            self.poller.paused = {d.id for d in self.node.devices if d.shared}
        self._report_seq = 0
        self._kind = {d.id: d.kind for d in self.node.devices}
        data_dir = cfg.data_dir(node_id)
        self.history = load_history(data_dir / "load_history.npz")
        self._history_saved = time.time()
        self.forecast_model = load_model_if_any(data_dir / "forecast.npz")
        self.forecast_how = "no history yet"
        self._last_reserve_kwh = 0.0
        self.control.local_reserve_kwh = lambda: self._last_reserve_kwh
        self.api = HttpApi(
            check_token=lambda t: token_ok(secret, t),
            name=f"API of {node_id}",
            max_connections=cfg.api.max_connections,
            max_per_peer=cfg.api.max_connections_per_peer,
            header_timeout_s=cfg.api.header_timeout_s,
            body_timeout_s=cfg.api.body_timeout_s,
        )
        self._in_flight = asyncio.Semaphore(cfg.raft.max_in_flight)
        self._stop = asyncio.Event()
        self._hash_cache: tuple[ZoneState | None, str] = (None, "")
        self.cloud: CloudSync | None = None
        if cfg.cloud is not None:
            self.cloud = CloudSync(
                cfg,
                node_id,
                is_leader=self._leads,
                state=lambda: self.raft.state,
                propose=self.propose,
            )
        #: per-peer WireGuard handshake age and counters (None without an overlay)
        self.overlay_peers: list[dict[str, Any]] | dict[str, str] | None = None

    # --- lifetime -----------------------------------------------------------------------

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(sig, self._stop.set)
        if os.geteuid() == 0:
            log("warning", "W_ROOT", "running as root; run the daemon as a dedicated user")
        self.raft.start()
        log(
            "info",
            "I_RAFT_START",
            "Raft member started",
            raft=self.node.raft_endpoint,
            partners=self.raft.partners,
        )
        self._routes()
        if self.cloud is not None:
            self.cloud.start(self.loop)
        await self.api.start(self.node.bind_host, self.node.api_port)
        log("info", "I_API_START", "status API listening", api=self.node.api_endpoint)
        tasks = [
            asyncio.create_task(self._overlay_loop()),
            asyncio.create_task(self._publish_forecast()),
            asyncio.create_task(self._declare_loop()),
            asyncio.create_task(self.control.leader_loop()),
            asyncio.create_task(self.control.survival_loop()),
        ]
        if self.poller is not None and self.actuator is not None:
            await self.poller.start()
            if self.raft.ready():
                self.actuator.on_state(self.raft.state)
            tasks += [asyncio.create_task(self._report_loop()), asyncio.create_task(self.actuator.run())]
            log(
                "info",
                "I_FIELD_START",
                "polling field devices",
                devices=len(self.poller.devices),
                buses=len(self.poller.buses),
            )
        try:
            await self._stop.wait()
        finally:
            log("info", "I_STOP", "stopping")
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.poller is not None:
                await self.poller.stop()
            await self.api.stop()
            if self.cloud is not None:
                await asyncio.to_thread(self.cloud.stop)
            await asyncio.to_thread(self.raft.stop)

    def _leads(self) -> bool:
        st = self.raft.status()
        return st.role == "leader" and st.has_quorum

    def _on_applied(self, state: ZoneState, result: Result, entry: bytes, term: int, index: int) -> None:
        """Raft thread: an entry was applied. Hand the new state to the loop."""
        if self.cloud is not None:
            self.cloud.on_applied(state, entry, term, index)
        if self.trace is not None:
            self.trace.applied(term, index, result.code, entry)
        if self.actuator is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(self._state_changed, state)

    def _state_changed(self, state: ZoneState) -> None:
        """Loop thread: follow bus ownership of shared devices, then actuate."""
        assert self.poller is not None and self.actuator is not None
        paused = {
            d.id
            for d in self.node.devices
            if d.shared and d.id in state.devices and state.devices[d.id].owner != self.node.id
        }
        if paused != self.poller.paused:
            gained = self.poller.paused - paused
            self.poller.paused = paused
            for dev_id in sorted(gained):
                log(
                    "info",
                    "I_OWNERSHIP",
                    f"now the owner of shared device {dev_id}: polling it",
                    device=dev_id,
                )
        if not self.raft.ready():
            # Replaying the journal after a restart: these are old setpoints, long replaced.
            # Actuate only once caught up with what a leader says is committed.
            return
        self.actuator.on_state(state)

    def _add_forecast(self, readings: list[dict[str, Any]]) -> None:
        """Record the node's base load and put the forecast battery reserve in its report
        (on the site meter's reading), for the leader's dispatch."""
        meter = next(
            (
                r
                for r in readings
                if r["state"] == "ok" and "power_kw" in r["values"] and self._kind.get(r["id"]) == "meter"
            ),
            None,
        )
        if meter is None:
            return
        batteries = sum(
            r["values"].get("power_kw", 0.0) for r in readings if self._kind.get(r["id"]) == "battery"
        )
        now = time.time()
        self.history.add(now, meter["values"]["power_kw"] + batteries)
        envelope = self.raft.state.envelopes.get(self.node.id)
        if envelope is None:
            return
        reserve, how = forecast_reserve_kwh(self.history, now, envelope.import_limit_kw, self.forecast_model)
        meter["values"]["reserve_kwh"] = round(reserve, 3)
        self._last_reserve_kwh = reserve
        self.forecast_how = how
        if now - self._history_saved > 900:
            self._history_saved = now
            save_history(self.history, self.cfg.data_dir(self.node.id) / "load_history.npz")

    async def _overlay_loop(self) -> None:
        """Refresh the overlay's per-peer handshake ages for status (every 2 s)."""
        if self.cfg.overlay is None:
            return
        while True:
            try:
                self.overlay_peers = await asyncio.to_thread(peer_status, self.cfg, self.node.id)
            except (MeshemsError, OSError, ValueError) as exc:
                self.overlay_peers = {"error": str(exc)}
            await asyncio.sleep(2.0)

    async def _publish_forecast(self) -> None:
        """Replicate this node's fitted forecaster (its .npz, version and digest) to the zone."""
        if self.forecast_model is None:
            return
        import io

        import numpy as np

        from meshems.core.forecast import model_digest, to_arrays

        buf = io.BytesIO()
        np.savez_compressed(buf, **to_arrays(self.forecast_model))
        version, digest = self.forecast_model.version, model_digest(self.forecast_model)
        for _ in range(600):
            known = self.raft.state.forecasts.get(self.node.id)
            if known is not None and known.version >= version:
                return
            if self.raft.status().leader is not None and self.node.id in self.raft.state.members:
                res = await self.propose(
                    commands.encode(
                        "forecast_model",
                        f"model-{self.node.id}-{version}-{digest[:12]}",
                        node_id=self.node.id,
                        version=version,
                        digest=digest,
                        data=buf.getvalue(),
                    )
                )
                if res.get("ok") or res.get("code") not in RETRYABLE_CODES:
                    log("info", "I_FORECAST", f"forecast model v{version} replicated", result=res.get("code"))
                    return
            await asyncio.sleep(1.0)

    async def _report_loop(self) -> None:
        """About once per second, propose this node's measurement summary (not every register)."""
        assert self.poller is not None
        while not self._stop.is_set():
            await asyncio.sleep(REPORT_INTERVAL_S)
            st = self.raft.status()
            if st.leader is None or self.node.id not in self.raft.state.members:
                continue
            # The next number after the committed one (apply refuses a far jump): a report
            # lost in flight costs nothing, and a restart continues where the zone is.
            previous = self.raft.state.reports.get(self.node.id)
            self._report_seq = previous.seq + 1 if previous is not None else 0
            readings = [
                {"id": d["id"], "state": d["state"], "values": dict(d["values"])}
                for d in self.poller.snapshot()
            ]
            self._add_forecast(readings)
            data = commands.encode(
                "report",
                f"report-{self.node.id}-{self._report_seq}-{uuid.uuid4().hex[:8]}",
                node_id=self.node.id,
                seq=self._report_seq,
                devices=readings,
            )
            res = await self.propose(data, timeout_s=2.0)
            if not res.get("ok") and res.get("code") not in RETRYABLE_CODES | {"E_STALE_REPORT"}:
                log("warning", res.get("code", "E_REPORT"), f"report refused: {res.get('message')}")

    def _on_state_changed(self, old: int, new: int) -> None:
        names = {0: "follower", 1: "candidate", 2: "leader"}
        log(
            "info",
            "I_ROLE",
            f"role {names.get(old)} -> {names.get(new)}",
            role=names.get(new),
            term=self.raft.syncobj.raftCurrentTerm,
        )

    def _raft_violation(self, peer: str, what: str) -> None:
        """Raft thread: the transport refused a connection (logged at most every 10 s)."""
        code = "E_AUTH_FAIL" if ("authentication" in what or "secret" in what) else "W_RAFT_REFUSED"
        self._raft_refusals[code].note(peer, time.monotonic(), last=what)

    def _raft_disk_full(self, err: DiskFullError) -> None:
        """Raft thread: the journal could not write. Stop cleanly: nothing unwritten was
        acknowledged, and a member that cannot journal must not stay one."""
        if self.loop is not None and self.fatal is None:
            self.loop.call_soon_threadsafe(self._fail, err)

    def _fail(self, err: MeshemsError) -> None:
        if self.fatal is None:
            self.fatal = err
            log("error", err.code, err.message, **err.context)
            self._stop.set()

    # --- proposals ----------------------------------------------------------------------

    async def propose(self, data: bytes, timeout_s: float | None = None) -> dict[str, Any]:
        """Propose command bytes and wait for commit; returns a result dict with `code`."""
        timeout_s = timeout_s or self.cfg.raft.commit_timeout_s
        # Validate here first (type, size, schema): a command every replica would refuse
        # must not cost a log entry on each of them.
        checked = commands.decode(data)
        if isinstance(checked, commands.Rejection):
            return {"ok": False, "code": checked.code, "message": checked.message, "proposed": False}
        try:
            await asyncio.wait_for(self._in_flight.acquire(), timeout=0.5)
        except TimeoutError:
            return {"ok": False, "code": "E_BUSY", "message": "too many proposals in flight"}
        try:
            assert self.loop is not None
            fut: asyncio.Future[tuple[Any, Any, str]] = self.loop.create_future()
            loop = self.loop

            def done(res: dict[str, Any] | None, code: str | None, text: str) -> None:
                loop.call_soon_threadsafe(_settle, fut, (res, code, text))

            self.raft.propose(data, done)
            try:
                res, code, text = await asyncio.wait_for(fut, timeout_s)
            except TimeoutError:
                return {
                    "ok": False,
                    "code": "E_TIMEOUT",
                    "message": f"no commit within {timeout_s} s; outcome unknown, retry "
                    "with the same request id",
                }
            if code is not None:
                return {"ok": False, "code": code, "message": text}
            return res
        finally:
            self._in_flight.release()

    async def _declare_loop(self) -> None:
        """Declare this node's devices once a leader exists; as leader, also declare any
        configured node missing from the zone (so the zone knows every configured device)."""
        mine = declaration(self.node)
        declared = False
        while not self._stop.is_set():
            st = self.raft.status()
            if st.leader is not None:
                state = self.raft.state
                todo = [] if declared else [mine]
                if st.role == "leader":
                    todo += [
                        declaration(n)
                        for n in self.cfg.nodes
                        if n.initial and n.id not in state.members and n.id != self.node.id
                    ]
                for data in todo:
                    res = await self.propose(data)
                    if data is mine and (res.get("ok") or res.get("code") not in RETRYABLE_CODES):
                        declared = True
                        log("info", "I_DECLARED", "devices declared to the zone", result=res)
            await asyncio.sleep(0.5 if declared else 0.1)

    # --- API ----------------------------------------------------------------------------

    def _routes(self) -> None:
        self.api.route("GET", "/v1/status", self._h_status)
        self.api.route("GET", "/v1/setpoints", self._h_setpoints)
        self.api.route("POST", "/v1/propose", self._h_propose, max_body=OPERATOR_MAX_BYTES)
        self.api.route("POST", "/v1/members", self._h_members, max_body=1024)
        self.api.route("GET", "/v1/devices", self._h_devices)
        self.api.route("GET", "/v1/explain", self._h_explain)
        self.api.route("GET", "/v1/control", self._h_control)

    def status_dict(self) -> dict[str, Any]:
        st = self.raft.status()
        state: ZoneState = self.raft.state
        return {
            "id": self.node.id,
            "cluster": self.cfg.cluster,
            "zone": self.cfg.zone,
            "role": st.role,
            "term": st.term,
            "commit_index": st.commit_index,
            "applied_index": st.applied_index,
            "leader": st.leader,
            "has_quorum": st.has_quorum,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "raft_uptime_s": st.uptime_s,
            "partners": st.partners,
            "match_index": st.match_index,
            "members": sorted(state.members),
            "devices": len(state.devices),
            "setpoints": len(state.setpoints),
            "state_index": state.last_index,
            "state_hash": self._state_hash(state),
            "telemetry_seq": state.telemetry_seq,
            "cloud_acked": state.cloud_acked,
            "alarms": self.cloud.status().get("alarms", []) if self.cloud is not None else [],
            "overlay": self.overlay_peers,
            "cloud": self.cloud.status() if self.cloud is not None else None,
            "forecasts": {
                k: {"version": r.version, "digest": r.digest[:16], "bytes": len(r.data), "index": r.index}
                for k, r in state.forecasts.items()
            },
            "forecast_basis": self.forecast_how,
            "zone_reports": {
                r.node_id: {"seq": r.seq, "term": r.term, "index": r.index, "devices": len(r.readings)}
                for r in state.reports.values()
            },
            "readings": {
                d["id"]: {"state": d["state"], "age_s": d["age_s"], "values": d["values"]}
                for d in (self.poller.snapshot() if self.poller is not None else [])
            },
            "pid": os.getpid(),
        }

    def _state_hash(self, state: ZoneState) -> str:
        """Hash of the zone state, cached per (immutable) state object."""
        cached_state, cached_hash = self._hash_cache
        if cached_state is not state:
            cached_hash = state_hash(state)
            self._hash_cache = (state, cached_hash)
        return cached_hash

    async def _h_status(self, req: Request) -> tuple[int, Any]:
        return 200, self.status_dict()

    async def _h_devices(self, req: Request) -> tuple[int, Any]:
        devices = self.poller.snapshot() if self.poller is not None else []
        actuation = None
        if self.actuator is not None:
            actuation = {
                "applied": {k: list(v) for k, v in self.actuator.applied.items()},
                "refused_stale": self.actuator.refused_stale,
                "refused_outside_config_limits": self.actuator.refused_limit,
                "last_writes": self.actuator.writes,
            }
        return 200, {"node": self.node.id, "devices": devices, "actuation": actuation}

    async def _h_control(self, req: Request) -> tuple[int, Any]:
        state = self.raft.state
        return 200, {
            "node": self.node.id,
            "mode": self.control.mode,
            "policy": state.policy.to_dict() if state.policy else None,
            "envelopes": {
                k: {
                    "import_limit_kw": e.import_limit_kw,
                    "export_limit_kw": e.export_limit_kw,
                    "soc_reserve_pct": e.soc_reserve_pct,
                    "shed": list(e.shed),
                }
                for k, e in state.envelopes.items()
            },
            "last_dispatch": None
            if state.last_dispatch is None
            else {
                "cycle": state.last_dispatch.cycle,
                "term": state.last_dispatch.term,
                "index": state.last_dispatch.index,
                "inputs": dict(state.last_dispatch.inputs),
                "decisions": {d: {"controller": c, "reason": r} for d, c, r in state.last_dispatch.decisions},
            },
            "relays": {
                k: {"closed": r.closed, "controller": r.controller, "term": r.term, "index": r.index}
                for k, r in state.relays.items()
            },
            "trips": self.control.trips,
            "shared": {
                k: {"owner": state.devices[k].owner if k in state.devices else None, "reachable": list(v)}
                for k, v in state.shared.items()
            },
        }

    async def _h_explain(self, req: Request) -> tuple[int, Any]:
        state = self.raft.state
        target = req.query.get("device", "")
        sp = state.setpoints.get(target)
        relay = state.relays.get(target)
        if sp is None and relay is None and target not in state.devices:
            return 404, {
                "ok": False,
                "code": "E_UNKNOWN_DEVICE",
                "message": f"the zone knows no {target!r}",
                "known": sorted([*state.devices, *state.relays]),
            }
        out: dict[str, Any] = {"device": target, "node": self.node.id, "applied_index": state.last_index}
        if sp is not None:
            out["setpoint"] = setpoint_dict(sp)
        if relay is not None:
            out["relay"] = {
                "closed": relay.closed,
                "term": relay.term,
                "index": relay.index,
                "controller": relay.controller,
                "expected_kw": relay.expected_kw,
            }
        rec = state.last_dispatch
        if rec is not None:
            decision = next((d for d in rec.decisions if d[0] == target), None)
            out["dispatch"] = {
                "cycle": rec.cycle,
                "term": rec.term,
                "index": rec.index,
                "inputs": dict(rec.inputs),
                "controller": decision[1] if decision else None,
                "reason": decision[2] if decision else None,
            }
        readings = {r.device_id: dict(r.values) for rep in state.reports.values() for r in rep.readings}
        if target in readings:
            out["reading"] = readings[target]
        return 200, out

    async def _h_setpoints(self, req: Request) -> tuple[int, Any]:
        state = self.raft.state
        device = req.query.get("device")
        if device is not None and device not in state.devices:
            return 404, {
                "ok": False,
                "code": "E_UNKNOWN_DEVICE",
                "message": f"the zone knows no device {device!r}",
                "known": sorted(state.devices),
            }
        rows = [
            setpoint_dict(sp) for d, sp in sorted(state.setpoints.items()) if device is None or d == device
        ]
        return 200, {"node": self.node.id, "applied_index": state.last_index, "setpoints": rows}

    async def _h_propose(self, req: Request) -> tuple[int, Any]:
        """Operator commands only: an internal command (a report, dispatch, declaration,
        cloud acknowledgement, forecast record or ownership change) is a node's own word
        about itself and is refused here, whoever holds the token."""
        cmd = commands.decode(req.body)
        if isinstance(cmd, commands.Rejection):
            return 400, {"ok": False, "code": cmd.code, "message": cmd.message, "node": self.node.id}
        if cmd.type not in commands.OPERATOR_TYPES:
            msg = (
                f"{cmd.type} is an internal command that only a node's own services propose; the API "
                f"takes {', '.join(sorted(commands.OPERATOR_TYPES))} (membership: POST /v1/members)"
            )
            return 403, {"ok": False, "code": "E_CMD_FORBIDDEN", "message": msg, "node": self.node.id}
        if cmd.type == "set_setpoint" and cmd.fields["source"].startswith(RESERVED_SOURCES):
            msg = f"setpoint source {cmd.fields['source']!r} is reserved for the zone's own control"
            return 403, {"ok": False, "code": "E_CMD_FORBIDDEN", "message": msg, "node": self.node.id}
        res = await self.propose(req.body)
        return 200, {**res, "node": self.node.id}

    async def _h_members(self, req: Request) -> tuple[int, Any]:
        body = req.json_object()
        action, node_id = body.get("action"), body.get("node_id")
        if action not in ("add", "remove") or not isinstance(node_id, str):
            return 400, {
                "ok": False,
                "code": "E_BAD_REQUEST",
                "message": "body must be {action: add|remove, node_id: ID}",
            }
        try:
            target = self.cfg.node(node_id)
        except Exception as exc:
            return 404, {"ok": False, "code": "E_UNKNOWN_NODE", "message": str(exc)}
        assert self.loop is not None
        fut: asyncio.Future[tuple[Any, int]] = self.loop.create_future()
        loop = self.loop

        def done(res: Any, err: int) -> None:
            loop.call_soon_threadsafe(_settle, fut, (res, err))

        if action == "add":
            self.raft.add_member(target.raft_endpoint, done)
        else:
            self.raft.remove_member(target.raft_endpoint, done)
        try:
            _, err = await asyncio.wait_for(fut, self.cfg.raft.commit_timeout_s)
        except TimeoutError:
            return 504, {"ok": False, "code": "E_TIMEOUT", "message": "membership change timed out"}
        if err != 0:
            from meshems.adapters.consensus import FAILURES

            code, text = FAILURES.get(err, ("E_RAFT", f"pysyncobj failure {err}"))
            if err == 6:
                text = "denied: another membership change is in progress or the node is already in that state"
            return 409, {"ok": False, "code": code, "message": text}
        if action == "remove":
            rid = f"remove-{node_id}-{uuid.uuid4().hex[:12]}"
            res = await self.propose(commands.encode("remove_node", rid, node_id=node_id))
            return 200, {"ok": True, "code": "OK", "message": f"{node_id} removed", "zone": res}
        return 200, {
            "ok": True,
            "code": "OK",
            "message": f"{node_id} added; start it with: meshems node run --node {node_id}",
        }


def _settle(fut: asyncio.Future, value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def node_profiles(cfg: ClusterConfig, node_id: str) -> dict[str, Profile]:
    """The register profile of each wired device of a node (ConfigError on a bad profile)."""
    base = cfg.path(".")
    return {d.id: load_profile(d.profile, base) for d in cfg.node(node_id).devices if d.bus and d.profile}


def run_node(
    cfg: ClusterConfig,
    node_id: str,
    config_path: str,
    reset_journal: bool = False,
    trace_file: str | None = None,
) -> int:
    """Start-up checks, then the daemon until SIGINT/SIGTERM. Returns the exit code."""
    try:
        secret = read_secret(cfg.secret_path, config_path)
        preflight(cfg, node_id)
        prepare_journal(cfg, node_id, reset_journal)
    except MeshemsError as exc:
        log("error", exc.code, exc.message, **exc.context)
        raise
    trace = ApplyTrace(Path(trace_file), node_id) if trace_file else None
    daemon = NodeDaemon(cfg, node_id, secret, node_profiles(cfg, node_id), trace=trace)
    try:
        asyncio.run(daemon.run())
    except MeshemsError as exc:  # e.g. a full disk while the journal is opened
        log("error", exc.code, exc.message, **exc.context)
        raise
    finally:
        if trace is not None:
            trace.close()
    if daemon.fatal is not None:
        raise daemon.fatal
    return 0


__all__ = ["NodeDaemon", "Result", "declaration", "run_node"]
