"""The zone's end of the downlink: while this node leads, it holds the zone's command session on
the broker (`PREFIX/ZONE/commands`, QoS 1, one client id per zone so a new leader resumes the
queue), verifies each signed command (`core.downlink`), proposes it through Raft with the
command id as request id, answers on `PREFIX/ZONE/results`, and only then acknowledges it.

Owns the subscriber and one worker thread; a follower holds no session and ignores commands.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from meshems.adapters import command_signing
from meshems.adapters.mqtt_subscriber import Message, MqttSubscriber
from meshems.adapters.payload_store import PayloadStore
from meshems.core import commands, downlink, downlink_deploy
from meshems.core.cluster import ZoneState, seen
from meshems.core.command_fields import Invalid
from meshems.core.config import ClusterConfig
from meshems.core.errors import RETRYABLE_CODES, MeshemsError
from meshems.logs import log
from meshems.node.bridge import Bridge
from meshems.node.downlink_deploy import prepare
from meshems.node.payload_routes import PayloadRoutes

#: how often leadership is looked at, and how long one proposal is retried while leading
LEADER_CHECK_S = 0.2
PROPOSE_TRIES = 5


class Downlink:
    """`start()` runs the worker; it subscribes while `is_leader()` and lets go when not (the
    session and any unacknowledged command stay on the broker for the next leader)."""

    def __init__(
        self,
        cfg: ClusterConfig,
        node_id: str,
        is_leader: Callable[[], bool],
        state: Callable[[], ZoneState],
        propose: Callable[[bytes], Coroutine[Any, Any, dict[str, Any]]],
        bridge: Bridge,
    ) -> None:
        assert cfg.cloud is not None
        self.cfg, self.cc, self.node_id, self.zone = cfg, cfg.cloud, node_id, cfg.zone
        self.is_leader, self.state, self._propose, self.bridge = is_leader, state, propose, bridge
        self.topic = downlink.commands_topic(self.cc.topic_prefix, self.zone)
        self.results = downlink.results_topic(self.cc.topic_prefix, self.zone)
        self.sub: MqttSubscriber | None = None
        self.store = PayloadStore(cfg.data_dir(node_id))  # a cloud deploy's bundle, as an upload's
        self.routes = PayloadRoutes(cfg, node_id, self.store)  # and the API's check of its deploy
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def configured(cls, cfg: ClusterConfig, node_id: str, *args: Any) -> Downlink | None:
        """The service when the cluster config pins cloud command keys, else None."""
        return cls(cfg, node_id, *args) if cfg.cloud is not None and cfg.cloud.command_keys else None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cloud-downlink", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._let_go()

    def _subscriber(self) -> MqttSubscriber:
        cert, key = self.cc.node_cert_files(self.node_id)
        return MqttSubscriber(
            self.cc.broker_host, self.cc.broker_port, self.cfg.path(self.cc.ca_file), self.cfg.path(cert),
            self.cfg.path(key), client_id=f"meshems-{self.cfg.cluster}-{self.zone}-commands",
            topic_filter=self.topic, session_expiry_s=self.cc.command_session_expiry_s,
            keepalive_s=self.cc.keepalive_s, receive_maximum=20,
            reconnect_min_s=self.cc.reconnect_min_s, reconnect_max_s=self.cc.reconnect_max_s,
            max_packet_bytes=downlink_deploy.MAX_COMMAND_PACKET_BYTES,
        )  # fmt: skip

    def _let_go(self) -> None:
        sub, self.sub = self.sub, None
        if sub is not None:
            sub.stop()
            log("info", "I_DOWNLINK_STANDBY", "cloud commands: session released")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.is_leader():
                    self._let_go()
                    self._stop.wait(LEADER_CHECK_S)
                    continue
                if self.sub is None:
                    self.sub = self._subscriber()
                    self.sub.start()
                    log("info", "I_DOWNLINK_LEAD", f"leader: taking cloud commands on {self.topic}")
                msg = self.sub.get(LEADER_CHECK_S)
                if msg is not None:
                    self._handle(msg)
            except MeshemsError as exc:
                log("error", exc.code, f"cloud commands: {exc.message}")
                self._let_go()
                self._stop.wait(1.0)

    def _handle(self, msg: Message) -> None:
        state = self.state()
        keys = self.cc.command_keys
        got = downlink.verify(msg.payload, keys, self.zone, time.time(), state.cloud_command_seq,
                              command_signing.valid)  # fmt: skip
        if isinstance(got, downlink.Refusal):
            record = got.record
            earlier = seen(state, record.command_id) if record is not None else None
            if got.code == "E_CMD_REPLAY" and earlier is not None:  # applied; redelivered to us
                result = {**earlier.to_dict(), "duplicate": True}
            else:
                result = {"ok": False, "code": got.code, "message": got.message}
                log("warning", got.code, f"cloud command refused: {got.message}",
                    command_id=record.command_id if record else None)  # fmt: skip
        else:
            record = got
            fields, extras = downlink.raft_fields(got), {}  # a deploy's answer names its deployment
            if got.action == "deploy":
                try:
                    fields["args"], extras = prepare(self.cfg, self.node_id, self.store, got, state,
                                                     self._deploy_refusal)  # fmt: skip
                except Invalid as exc:
                    log("warning", exc.code, f"cloud deploy {got.command_id} refused: {exc.message}")
                    self._answer(msg, {"ok": False, "code": exc.code, "message": exc.message}, record)
                    return
            proposed = self._commit(commands.encode("cloud_command", got.command_id, **fields))
            if proposed is None:  # no longer leading, or no commit: the next leader gets it again
                self._let_go()
                return
            result = {**proposed, **extras}
            log("info" if result.get("ok") else "warning", "I_DOWNLINK_APPLIED" if result.get("ok") else
                str(result.get("code")), f"cloud command {got.command_id} seq {got.seq} {got.action}: "
                f"{result.get('code')} {result.get('message', '')}", term=result.get("term"),
                index=result.get("index"))  # fmt: skip
        self._answer(msg, result, record)

    def _answer(self, msg: Message, result: dict[str, Any], record: downlink.CommandRecord | None) -> None:
        """Publish the answer on PREFIX/ZONE/results, then acknowledge the command."""
        assert self.sub is not None
        self.sub.publish(self.results, downlink.answer(self.zone, self.node_id, result, record),
                         expiry_s=self.cc.message_expiry_s)  # fmt: skip
        self.sub.ack([msg])

    def _deploy_refusal(self, cmd: commands.Command) -> tuple[int, dict[str, Any]] | None:
        """The node API's check of a deploy before it proposes one, run on the node's loop."""
        try:
            return self.bridge.run(self.routes.refusal(cmd)).result(timeout=60)
        except Exception as exc:  # the loop did not answer: refused, the cloud may send it again
            return 503, {"code": "E_TIMEOUT", "message": f"checking the deploy failed: {exc!r}"}

    def _commit(self, data: bytes) -> dict[str, Any] | None:
        """The committed result, or None when the entry's fate is unknown after the retries
        (the rid makes a later retry by anyone apply it at most once)."""
        for _ in range(PROPOSE_TRIES):
            if self._stop.is_set() or not self.is_leader():
                return None
            try:
                res = self.bridge.run(self._propose(data)).result(timeout=self.cfg.raft.commit_timeout_s + 1)
            except Exception as exc:
                log("warning", "W_DOWNLINK_PROPOSE", f"proposing a cloud command failed: {exc}")
                continue
            if res.get("code") not in RETRYABLE_CODES:
                return res
            self._stop.wait(0.3)
        return None
