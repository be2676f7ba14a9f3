"""The node's HTTP routes: reads (`views`), operator proposals and membership changes.

Owns which route takes what: `POST /v1/propose` takes operator commands only (an internal
command is a node's own word about itself: 403 E_CMD_FORBIDDEN, whoever holds the token);
`POST /v1/members` changes Raft membership and then the zone's. The server itself (token
before body, caps, deadlines) is `ops.http`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from meshems.core import commands
from meshems.core.config import ClusterConfig
from meshems.core.deploy_records import view
from meshems.core.errors import ConfigError
from meshems.logs import log
from meshems.node.consensus import RaftService
from meshems.node.metrics import CONTENT_TYPE
from meshems.node.payload_routes import PayloadRoutes
from meshems.node.views import Views
from meshems.ops.http import HttpApi, Raw, Request

#: the largest operator command the API reads (a policy with its shed order)
OPERATOR_MAX_BYTES = max(commands.MAX_BYTES_BY_TYPE[t] for t in commands.OPERATOR_TYPES)
#: the most points one `GET /v1/io` names
MAX_IO_POINTS = 64
#: setpoint sources only dispatch and survival write
RESERVED_SOURCES = ("dispatch", "survival")


def operator_refusal(cmd: commands.Command | commands.Rejection) -> tuple[int, dict[str, Any]] | None:
    """Why the API must not propose this command (None: it may)."""
    if isinstance(cmd, commands.Rejection):
        return 400, {"ok": False, "code": cmd.code, "message": cmd.message}
    if cmd.type not in commands.OPERATOR_TYPES:
        msg = (
            f"{cmd.type} is an internal command that only a node's own services propose; the API "
            f"takes {', '.join(sorted(commands.OPERATOR_TYPES))} (membership: POST /v1/members)"
        )
        return 403, {"ok": False, "code": "E_CMD_FORBIDDEN", "message": msg}
    if cmd.type == "set_setpoint" and cmd.fields["source"].startswith(RESERVED_SOURCES):
        msg = f"setpoint source {cmd.fields['source']!r} is reserved for the zone's own control"
        return 403, {"ok": False, "code": "E_CMD_FORBIDDEN", "message": msg}
    return None


class Routes:
    def __init__(
        self,
        cfg: ClusterConfig,
        node_id: str,
        raft: RaftService,
        views: Views,
        metrics: Callable[[], bytes] | None = None,
        payloads: PayloadRoutes | None = None,
    ) -> None:
        self.cfg, self.node_id, self.raft, self.views = cfg, node_id, raft, views
        self.render_metrics = metrics
        self.payloads = payloads

    def install(self, api: HttpApi) -> None:
        api.route("GET", "/v1/status", self.status)
        api.route("GET", "/v1/setpoints", self.setpoints)
        api.route("POST", "/v1/propose", self.propose, max_body=OPERATOR_MAX_BYTES, role="operate")
        api.route("POST", "/v1/members", self.members, max_body=1024, role="admin")
        api.route("GET", "/v1/devices", self.devices)
        api.route("GET", "/v1/explain", self.explain)
        api.route("GET", "/v1/control", self.control)
        api.route("GET", "/v1/forecast", self.forecast)
        api.route("GET", "/v1/plan", self.plan)
        api.route("GET", "/v1/io", self.io)
        api.route("GET", "/v1/tokens", self.tokens, role="admin")
        api.route("GET", "/v1/deployments", self.deployments)
        api.route("GET", "/v1/time", self.time)
        if self.render_metrics is not None:
            api.route("GET", "/metrics", self.metrics)  # Prometheus, with a read token
        if self.payloads is not None:
            self.payloads.install(api)  # PUT /v1/payloads, GET /v1/payloads/DIGEST

    async def time(self, req: Request) -> tuple[int, Any]:
        """This node's wall clock when the request arrived and when it answers (peers measure
        their clock offsets NTP-style with it)."""
        received = req.received_wall_s
        return 200, {"t2": received, "t3": time.time(), "node": self.node_id}

    async def status(self, req: Request) -> tuple[int, Any]:
        return 200, self.views.status()

    async def metrics(self, req: Request) -> tuple[int, Any]:
        assert self.render_metrics is not None
        return 200, Raw(self.render_metrics(), CONTENT_TYPE)

    async def devices(self, req: Request) -> tuple[int, Any]:
        return 200, self.views.devices()

    async def control(self, req: Request) -> tuple[int, Any]:
        return 200, self.views.control()

    async def forecast(self, req: Request) -> tuple[int, Any]:
        return 200, self.views.forecast()

    async def plan(self, req: Request) -> tuple[int, Any]:
        return self.views.plan()

    async def io(self, req: Request) -> tuple[int, Any]:
        """Live point values of a device this node polls: `?device=ID&points=a,b` (all
        points without `points`)."""
        device = req.query.get("device", "")
        names = [n for n in req.query.get("points", "").split(",") if n]
        if not device or len(device) > 80 or len(names) > MAX_IO_POINTS:
            msg = f"query must be device=ID (at most 80 characters) and points=a,b (at most {MAX_IO_POINTS})"
            return 400, {"ok": False, "code": "E_BAD_REQUEST", "message": msg, "node": self.node_id}
        if self.views.field is None:
            msg = f"{self.node_id} has no field devices"
            return 404, {"ok": False, "code": "E_UNKNOWN_DEVICE", "message": msg, "node": self.node_id}
        res = await self.views.field.read_points(device, names)
        status = 200 if res["ok"] else {"E_UNKNOWN_DEVICE": 404, "E_UNKNOWN_POINT": 404}.get(res["code"], 503)
        return status, {**res, "node": self.node_id}

    async def explain(self, req: Request) -> tuple[int, Any]:
        return self.views.explain(req.query.get("device", ""))

    async def setpoints(self, req: Request) -> tuple[int, Any]:
        return self.views.setpoints(req.query.get("device"))

    async def propose(self, req: Request) -> tuple[int, Any]:
        cmd = commands.decode(req.body)
        refusal = operator_refusal(cmd)
        if refusal is not None:
            status, body = refusal
            return status, {**body, "node": self.node_id}
        assert isinstance(cmd, commands.Command) and req.principal is not None
        who = req.principal
        need = commands.ROLE_OF_TYPE[cmd.type]
        if not who.may(need):
            msg = f"{cmd.type} needs role {need}; {who.name} ({who.via}) has {who.role}"
            return 403, {"ok": False, "code": "E_FORBIDDEN", "message": msg, "node": self.node_id}
        data = req.body
        if cmd.type == "token_create":  # who created it is who asked, whatever the body says
            data = commands.encode(cmd.type, cmd.rid, **{**cmd.fields, "by": who.name})
        elif cmd.type in ("deploy", "deploy_abort", "deploy_rollback"):
            refusal = await self._deploy_refusal(cmd)
            if refusal is not None:
                return refusal
            fields = {k: cmd.fields[k] for k in commands.SCHEMAS[cmd.type][1] if k in cmd.fields}
            data = commands.encode(cmd.type, cmd.rid, **{**fields, "by": who.name, "origin": self.node_id}
                                   if cmd.type == "deploy" else {**fields, "by": who.name})  # fmt: skip
        log("info", "I_AUDIT", f"{who.name} ({who.via}, {who.role}) proposed {cmd.type}", rid=cmd.rid,
            peer=req.peer)  # fmt: skip
        res = await self.raft.commit(data)
        return 200, {**res, "node": self.node_id}

    async def deployments(self, req: Request) -> tuple[int, Any]:
        """The zone's payload deployments, oldest first, with each target's copy."""
        rows = [view(d) for d in sorted(self.raft.state.deployments.values(), key=lambda d: d.index)]
        return 200, {"ok": True, "deployments": rows, "node": self.node_id}

    async def _deploy_refusal(self, cmd: commands.Command) -> tuple[int, Any] | None:
        """A deploy is checked for trust here before it is proposed: its bundle must be stored on
        this node and verify against this node's keys (the replicas check only its shape)."""
        if cmd.type != "deploy":
            return None
        if self.payloads is None:
            return 503, {"ok": False, "code": "E_PAYLOAD_MISSING", "message": "no payload store here",
                         "node": self.node_id}  # fmt: skip
        return await self.payloads.refusal(cmd)

    async def tokens(self, req: Request) -> tuple[int, Any]:
        """The zone's scoped tokens: names, roles, expiry, state (never digests)."""
        rows = [
            {"id": t.id, "name": t.name, "role": t.role, "expires_s": t.expires_s, "created_by": t.created_by,
             "revoked": t.revoked}
            for t in sorted(self.raft.state.tokens.values(), key=lambda t: (t.name, t.id))
        ]  # fmt: skip
        return 200, {"ok": True, "tokens": rows, "node": self.node_id}

    async def members(self, req: Request) -> tuple[int, Any]:
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
        except ConfigError as exc:
            return 404, {"ok": False, "code": "E_UNKNOWN_NODE", "message": exc.message}
        ok, code, text = await self.raft.change_membership(action, target.raft_endpoint)
        if not ok:
            return (504 if code == "E_TIMEOUT" else 409), {"ok": False, "code": code, "message": text}
        if action == "remove":
            rid = f"remove-{node_id}-{uuid.uuid4().hex[:12]}"
            res = await self.raft.commit(commands.encode("remove_node", rid, node_id=node_id))
            return 200, {"ok": True, "code": "OK", "message": f"{node_id} removed", "zone": res}
        msg = f"{node_id} added; start it with: meshems node run --node {node_id}"
        return 200, {"ok": True, "code": "OK", "message": msg}
