"""The node daemon: the process lifetime and the one loop around the state machine.

Owns start-up checks (secret, addresses, data folder, free space, journal), signals, a clean
shutdown and the loop: every `TICK_S` it feeds the machine (`core.node.Node`) the time and
Raft view; applied entries (through the bridge) and finished polls arrive as events; what the
machine answers is carried out through the services (Raft: `node.consensus`, devices: `node.field`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

from meshems.adapters.actuation_fence import ActuationFence
from meshems.adapters.api_tls import peer_identity, server_context
from meshems.adapters.apply_trace import ApplyTrace
from meshems.adapters.forecast_store import load_history, load_model_if_any, save_history
from meshems.adapters.journal import check_node_files, quarantine
from meshems.adapters.payload_profiles import load_device_profile
from meshems.adapters.preflight import preflight
from meshems.adapters.sd_notify import Notifier
from meshems.adapters.secret import read_secret, token_ok
from meshems.adapters.sunspec_device import sunspec_profiles
from meshems.adapters.wireguard import peer_status
from meshems.core.access import find_token
from meshems.core.cluster import ZoneState
from meshems.core.config import ClusterConfig
from meshems.core.errors import MeshemsError
from meshems.core.node import Node
from meshems.core.node_events import (
    Action,
    Applied,
    Event,
    Log,
    Propose,
    Proposed,
    RaftChanged,
    SaveHistory,
    SetPaused,
    Solve,
    Solved,
    Tick,
    Write,
    Written,
)
from meshems.core.node_spec import NodeSpec
from meshems.core.planner import plan
from meshems.core.register_map import Profile
from meshems.core.zone_records import Result
from meshems.logs import Throttled, log
from meshems.node.api import Routes
from meshems.node.bridge import Bridge
from meshems.node.clock_sync import clock_loop
from meshems.node.cloud import CloudSync
from meshems.node.consensus import RaftService
from meshems.node.dashboard import Dashboard
from meshems.node.downlink import Downlink
from meshems.node.field import FieldService
from meshems.node.metrics import NodeMetrics, NodeStats
from meshems.node.payload_duty import PayloadDuty
from meshems.node.service import ServiceNotify, polled_once
from meshems.node.views import Views
from meshems.ops.http import HttpApi, Principal

#: how often the machine hears the time and the Raft view (the leader's dispatch timing,
#: survival, refreshes all run on it)
TICK_S = 0.05
ROLES = {0: "follower", 1: "candidate", 2: "leader"}


class NodeDaemon:
    """A running meshems node: its services around one `core.node.Node`."""

    def __init__(
        self,
        cfg: ClusterConfig,
        node_id: str,
        secret: str,
        profiles: dict[str, Profile] | None = None,
        trace: ApplyTrace | None = None,
    ) -> None:
        self.cfg, self.node_id, self.trace = cfg, node_id, trace
        self.node = cfg.node(node_id)
        fence = ActuationFence.in_folder(cfg.data_dir(node_id))  # before Raft creates its journal
        self.bridge = Bridge()
        self.fatal: MeshemsError | None = None
        self._refusals = {
            "E_AUTH_FAIL": Throttled("warning", "E_AUTH_FAIL", "Raft connections that failed authentication"),
            "W_RAFT_REFUSED": Throttled("warning", "W_RAFT_REFUSED", "Raft connections refused (guards)"),
        }
        self.raft = RaftService(
            cfg,
            node_id,
            secret,
            self.bridge,
            on_applied=self._applied_thread,
            on_state_changed=self._role_changed,
            on_violation=self._violation,
            on_disk_full=lambda err: self.bridge.call(self._fail, err),
        )
        data_dir = cfg.data_dir(node_id)
        self.field = FieldService(self.node, profiles, self._feed, fence=fence) if profiles else None
        self.history_path, self.pv_history_path = data_dir / "load_history.npz", data_dir / "pv_history.npz"
        roles = self.field.roles() if self.field else None
        spec = NodeSpec.from_config(cfg, node_id, roles, load_model_if_any(data_dir / "forecast.npz"))
        self.machine = Node(spec, rid_salt=uuid.uuid4().hex[:6], history=load_history(self.history_path),
                            pv_history=load_history(self.pv_history_path))  # fmt: skip
        self.cloud: CloudSync | None = None
        if cfg.cloud is not None:
            self.cloud = CloudSync(cfg, node_id, is_leader=lambda: self.machine.leads,
                                   state=lambda: self.raft.state, propose=self.raft.commit,
                                   bridge=self.bridge)  # fmt: skip
        # signed commands from the cloud while this node leads (when cloud.command_keys pins keys)
        self.downlink = Downlink.configured(cfg, node_id, lambda: self.machine.leads, lambda: self.raft.state,
                                            self.raft.commit, self.bridge)  # fmt: skip
        self.overlay_peers: Any = None
        self._secret = secret
        self.api = HttpApi(
            authorize=self._authorize,
            name=f"API of {node_id}",
            max_connections=cfg.api.max_connections,
            max_per_peer=cfg.api.max_connections_per_peer,
            header_timeout_s=cfg.api.header_timeout_s,
            body_timeout_s=cfg.api.body_timeout_s,
        )
        self.views = Views(
            cfg,
            node_id,
            self.raft,
            self.machine,
            self.field,
            lambda: self.cloud.status() if self.cloud else None,
            lambda: self.overlay_peers,
        )
        self.stats = NodeStats()
        self.metrics = NodeMetrics(self.views, self.stats)
        self.payloads = PayloadDuty(cfg, node_id, self.raft, self.machine)
        Routes(cfg, node_id, self.raft, self.views, self.metrics.render, self.payloads.routes).install(
            self.api
        )
        self.dashboard = Dashboard(self.views)  # GET /dashboard and /v1/events (live feed)
        self.dashboard.install(self.api)
        self._stop = asyncio.Event()
        self._saving: asyncio.Task[None] | None = None
        self._solving: asyncio.Task[None] | None = None  # the planner's run (kept: tasks are weak)
        self._applied_pending = False
        self._view: RaftChanged | None = None
        # systemd (Type=notify): READY once joined and polled, WATCHDOG from the tick below
        self.service = ServiceNotify(Notifier.from_env(), lambda: polled_once(self.field))

    def _authorize(self, token: str | None, peercert: dict[str, Any] | None) -> Principal | None:
        """Who asks: a zone CA client certificate (an operator's role; a node is admin), else the
        cluster secret (admin), else a replicated scoped token (its role, unexpired, unrevoked)."""
        who = peer_identity(peercert)
        if who is not None:
            _, name, role = who
            return Principal(name, role, "cert")
        if token is None:
            return None
        if token_ok(self._secret, token):
            return Principal("cluster-secret", "admin", "secret")
        scoped = find_token(self.raft.state.tokens, token, time.time())  # revoked: gone at once
        return Principal(scoped.name, scoped.role, "token") if scoped is not None else None

    # --- lifetime -----------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.bridge.bind(loop)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        if os.geteuid() == 0:
            log("warning", "W_ROOT", "running as root; run the daemon as a dedicated user")
        self.raft.start()
        log("info", "I_RAFT_START", "Raft member started", raft=self.node.raft_endpoint,
            partners=self.raft.raft.partners)  # fmt: skip
        for service in (self.cloud, self.downlink):
            if service is not None:
                service.start()
        await self.api.start(self.node.bind_host, self.node.api_port, server_context(self.cfg, self.node_id))
        log("info", "I_API_START", "status API listening", api=self.node.api_endpoint)
        loops = [
            asyncio.create_task(self._tick_loop()),
            asyncio.create_task(self._overlay_loop()),
            asyncio.create_task(self._clock_loop()),
            asyncio.create_task(self.dashboard.sample_loop()),
            asyncio.create_task(self.payloads.loop()),  # fetch bundles, run rollouts
        ]
        if self.field is not None:
            await self.field.start()
            log(
                "info",
                "I_FIELD_START",
                "polling field devices",
                devices=len(self.field.poller.devices),
                buses=self.field.buses,
            )
        try:
            await self._stop.wait()
        finally:
            log("info", "I_STOP", "stopping")
            self.service.stopping()
            for t in loops:
                t.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            if self.field is not None:
                await self.field.stop()
            await self.api.stop()
            for service in (self.downlink, self.cloud):
                if service is not None:
                    await asyncio.to_thread(service.stop)
            await asyncio.to_thread(self.raft.stop)

    def _fail(self, err: MeshemsError) -> None:
        """Stop on our own (a full disk: a member that cannot journal must not stay one)."""
        if self.fatal is None:
            self.fatal = err
            log("error", err.code, err.message, **err.context)
            self._stop.set()

    # --- the machine: events in, actions out ---------------------------------------------------

    def _feed(self, event: Event) -> None:
        for action in self.machine.step(event):
            self._carry_out(action)

    def _carry_out(self, action: Action) -> None:
        if isinstance(action, Propose):
            done = partial(self._proposed, action, time.monotonic())
            self.raft.propose(action.data, done, action.timeout_s)
        elif isinstance(action, Write):
            if self.field is not None:
                self.field.write(action, partial(self._written, action))
        elif isinstance(action, Log):
            self.stats.logged(action.code, action.fields)
            log(action.level, action.code, action.message, **action.fields)
        elif isinstance(action, SetPaused):
            if self.field is not None:
                self.field.pause(action.devices)
        elif isinstance(action, SaveHistory):
            self._saving = asyncio.get_running_loop().create_task(asyncio.to_thread(self._save_histories))
        elif isinstance(action, Solve):
            self._solving = asyncio.get_running_loop().create_task(self._solve(action))

    def _save_histories(self) -> None:  # the load history, and the PV's when there is PV
        save_history(self.machine.history, self.history_path)
        if self.machine.pv_history.t0_s is not None:
            save_history(self.machine.pv_history, self.pv_history_path)

    async def _solve(self, action: Solve) -> None:
        """The planner's LP in a worker thread: the loop keeps polling and protecting."""
        started = time.monotonic()
        result = await asyncio.to_thread(plan, action.request)
        self.stats.planned(time.monotonic() - started, result.status)
        self._feed(Solved(action.key, result, time.monotonic()))

    def _proposed(
        self, action: Propose, started_s: float, res: dict[str, Any] | None, code: str | None, text: str
    ) -> None:
        if action.purpose == "dispatch" and res is not None:
            self.stats.dispatch_committed(time.monotonic() - started_s)
        result = res if res is not None else {"ok": False, "code": code, "message": text}
        self._feed(Proposed(action.purpose, action.key, result, time.monotonic()))

    def _written(self, action: Write, written: Written) -> None:
        if written.ok and action.token is not None and action.kw is not None and self.trace is not None:
            self.trace.write("act", dev=action.device_id, kw=action.kw, t=action.token[0], i=action.token[1])
        self._feed(written)

    async def _tick_loop(self) -> None:
        while True:
            self._feed(Tick(time.monotonic(), time.time()))  # the time first: what follows happens now
            view = self.raft.view()
            if view != self._view:
                self._view = view
                self._feed(view)
            self.service.tick(time.monotonic(), self._view)
            await asyncio.sleep(TICK_S)

    async def _overlay_loop(self) -> None:
        """Refresh the overlay's per-peer handshake ages for status (every 2 s)."""
        if self.cfg.overlay is None:
            return
        while True:
            try:
                self.overlay_peers = await asyncio.to_thread(peer_status, self.cfg, self.node_id)
            except (MeshemsError, OSError, ValueError) as exc:
                self.overlay_peers = {"error": str(exc)}
            await asyncio.sleep(2.0)

    async def _clock_loop(self) -> None:
        await clock_loop(self.cfg, self.node_id, self.views.clock)

    # --- the Raft thread (everything crosses to the loop through the bridge) --------------------

    def _applied_thread(self, state: ZoneState, result: Result, entry: bytes, term: int, index: int) -> None:
        if self.cloud is not None:
            self.cloud.on_applied(state, entry, term, index)
        if self.trace is not None:
            self.trace.applied(term, index, result.code, entry)
        if not self._applied_pending:  # coalesced: the machine needs the latest state only
            self._applied_pending = True
            self.bridge.call(self._applied)

    def _applied(self) -> None:
        self._applied_pending = False
        self.stats.applied(self.raft.state)
        self._feed(Applied(self.raft.state))

    def _role_changed(self, old: int, new: int) -> None:
        log(
            "info",
            "I_ROLE",
            f"role {ROLES.get(old)} -> {ROLES.get(new)}",
            role=ROLES.get(new),
            term=self.raft.raft.syncobj.raftCurrentTerm,
        )

    def _violation(self, peer: str, what: str) -> None:
        """The transport refused a connection (logged at most every 10 s)."""
        code = "E_AUTH_FAIL" if ("authentication" in what or "secret" in what) else "W_RAFT_REFUSED"
        self._refusals[code].note(peer, time.monotonic(), last=what)


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


def node_profiles(cfg: ClusterConfig, node_id: str) -> dict[str, Profile]:
    """The register profile of each wired device of a node (ConfigError on a bad profile file).
    `profile: sunspec` devices are scanned now (`adapters.sunspec_device`); one that cannot be
    configured is logged and left out, so the node starts with its other devices."""
    base, data = cfg.path("."), cfg.data_dir(node_id)
    node = cfg.node(node_id)
    wired = [d for d in node.devices if d.bus and d.profile]
    out = {d.id: load_device_profile(d.profile, base, data) for d in wired if d.profile != "sunspec"}
    sunspec = [d for d in wired if d.profile == "sunspec"]
    if sunspec:
        buses = {b.id: b for b in node.buses}
        out.update(sunspec_profiles(buses, sunspec, cfg.data_dir(node_id), log))
    return out


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
    if trace is not None:
        daemon.raft.raft.replica.on_restored = lambda st: trace.write(
            "restore", i=st.last_index, t=st.last_term
        )
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
