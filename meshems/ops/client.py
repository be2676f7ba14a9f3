"""Client of the node API for the CLI: status of every node, proposals with retries.

Owns retries and fail-over across nodes: a proposal is retried with the same request id
(so it applies at most once) on E_QUORUM, E_LEADER_CHANGED, E_UNKNOWN_OUTCOME, E_TIMEOUT,
E_BUSY and unreachable nodes, until its deadline. Must not decide anything about the zone;
reads only the API endpoints and commit timeout of a config (`ApiCluster`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from meshems.adapters.secret import api_token
from meshems.core.errors import RETRYABLE_CODES, MeshemsError, UnreachableError
from meshems.ops.http_exchange import HttpError, exchange


class ApiNode(Protocol):
    """What the client reads of a node: a `core.config.NodeConfig` or the CLI's cached view."""

    @property
    def id(self) -> str: ...
    @property
    def bind_host(self) -> str: ...
    @property
    def api_port(self) -> int: ...
    @property
    def api_endpoint(self) -> str: ...


class _RaftTimes(Protocol):
    @property
    def commit_timeout_s(self) -> float: ...


class ApiCluster(Protocol):
    """What the client reads of a config: a `core.config.ClusterConfig` or the cached view."""

    @property
    def nodes(self) -> Sequence[ApiNode]: ...
    @property
    def raft(self) -> _RaftTimes: ...
    @property
    def tls_dir(self) -> Path: ...


class NodeClient:
    """Talks HTTPS (TLS 1.3, the zone CA) to the nodes, with a bearer token (`token`, else the
    cluster secret's own) and/or an operator certificate (`cert`/`key`, else the TLS folder's
    `operator` one when readable)."""

    def __init__(
        self,
        cfg: ApiCluster,
        secret: str | None,
        timeout_s: float = 2.0,
        token: str | None = None,
        cert: str | None = None,
        key: str | None = None,
    ) -> None:
        from meshems.adapters.api_tls import client_context

        self.cfg = cfg
        self.token = token if token is not None else api_token(secret) if secret is not None else None
        self.timeout_s = timeout_s
        self.ssl_context = client_context(cfg.tls_dir, cert, key)

    def request(
        self,
        node: ApiNode,
        method: str,
        path: str,
        body: bytes = b"",
        timeout_s: float | None = None,
    ) -> tuple[int, Any]:
        try:
            status, data = exchange(
                node.bind_host,
                node.api_port,
                method,
                path,
                body,
                {"Authorization": f"Bearer {self.token}"} if self.token else {},
                timeout_s or self.timeout_s,
                self.ssl_context,
            )
            return status, json.loads(data or b"null")
        except (OSError, HttpError, ValueError) as exc:  # ValueError: JSON (and its UTF-8) errors
            raise UnreachableError(f"{node.id} ({node.api_endpoint}): {exc}", node=node.id) from None

    def status_all(self, timeout_s: float = 1.5) -> list[dict[str, Any]]:
        """One row per configured node, asked in parallel; unreachable nodes get
        reachable=False."""

        def one(node: ApiNode) -> dict[str, Any]:
            try:
                code, body = self.request(node, "GET", "/v1/status", timeout_s=timeout_s)
            except UnreachableError as exc:
                return {
                    "id": node.id,
                    "endpoint": node.api_endpoint,
                    "reachable": False,
                    "error": exc.message,
                }
            if code != 200:
                return {
                    "id": node.id,
                    "endpoint": node.api_endpoint,
                    "reachable": False,
                    "error": f"{body.get('code')}: {body.get('message')}",
                }
            return {**body, "endpoint": node.api_endpoint, "reachable": True}

        rows = _in_threads(one, list(self.cfg.nodes))
        leaders = [r for r in rows if r.get("reachable") and r.get("role") == "leader"]
        # The leader with the highest term is the current one (an old one may not know yet).
        leader = max(leaders, key=lambda r: r["term"]) if leaders else None
        for r in rows:
            if not r.get("reachable"):
                continue
            r["lag"] = max(0, leader["commit_index"] - r["applied_index"]) if leader else None
        return rows

    def leader_with_quorum(
        self, exclude: frozenset[str] | set[str] = frozenset(), timeout_s: float = 0.5
    ) -> str | None:
        """A reachable node (not in `exclude`) that says it leads with quorum, or None."""
        for r in self.status_all(timeout_s=timeout_s):
            if r.get("reachable") and r["role"] == "leader" and r["has_quorum"] and r["id"] not in exclude:
                return str(r["id"])
        return None

    def ordered_nodes(self, prefer: str | None = None) -> list[ApiNode]:
        nodes = list(self.cfg.nodes)
        if prefer:
            nodes.sort(key=lambda n: n.id != prefer)
        return nodes

    def propose(self, data: bytes, prefer: str | None = None, deadline_s: float = 15.0) -> dict[str, Any]:
        """Propose through any node, retrying safely until committed or refused."""
        end = time.monotonic() + deadline_s
        last: dict[str, Any] | None = None
        attempt = 0
        nodes = self.ordered_nodes(prefer)
        while time.monotonic() < end:
            node = nodes[attempt % len(nodes)]
            attempt += 1
            try:
                _, body = self.request(
                    node, "POST", "/v1/propose", data, timeout_s=self.cfg.raft.commit_timeout_s + 2
                )
            except UnreachableError as exc:
                last = {"ok": False, "code": "E_UNREACHABLE", "message": exc.message}
                continue
            if body.get("ok") or body.get("code") not in RETRYABLE_CODES:
                return {**body, "attempts": attempt}
            last = body
            time.sleep(min(0.05 * attempt, 0.5))
        raise MeshemsError(
            f"not committed within {deadline_s} s after {attempt} attempts; last answer: "
            f"{(last or {}).get('code')}: {(last or {}).get('message')}"
        )

    def members(self, action: str, node_id: str) -> dict[str, Any]:
        body = json.dumps({"action": action, "node_id": node_id}).encode()
        last: dict[str, Any] = {}
        for node in self.cfg.nodes:
            if node.id == node_id and action == "add":
                continue
            try:
                _, res = self.request(
                    node, "POST", "/v1/members", body, timeout_s=self.cfg.raft.commit_timeout_s + 2
                )
            except UnreachableError as exc:
                last = {"ok": False, "code": "E_UNREACHABLE", "message": exc.message}
                continue
            if res.get("ok") or res.get("code") not in RETRYABLE_CODES | {"E_UNREACHABLE"}:
                return res
            last = res
        return last


def _in_threads(fn: Callable[[ApiNode], dict[str, Any]], nodes: list[ApiNode]) -> list[dict[str, Any]]:
    """`[fn(n) for n in nodes]`, one thread each; the first exception is raised here. (Plain
    threads: concurrent.futures costs 10 ms of imports on every `meshems status`.)"""
    import threading

    results: list[Any] = [None] * len(nodes)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = fn(nodes[i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(nodes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
