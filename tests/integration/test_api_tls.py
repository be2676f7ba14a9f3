"""The node API over HTTPS against real node processes: TLS 1.3 only, certificates of the zone
CA only (another CA's, an expired one and plain HTTP get no answer), and operator roles
(read < operate < admin) from client certificates, refused with the role a route needs."""

from __future__ import annotations

import json
import socket
import ssl
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from meshems.adapters import pki
from meshems.adapters.api_tls import client_context
from meshems.core import commands
from meshems.ops.client import NodeClient
from meshems.ops.supervisor import LocalCluster

pytestmark = pytest.mark.integration


def request(c: LocalCluster, ctx: ssl.SSLContext, method: str, path: str, body: bytes = b"",
            token: str | None = None) -> tuple[int, Any]:  # fmt: skip
    n = c.cfg.node("n1")
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    with (
        socket.create_connection((n.bind_host, n.api_port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=n.bind_host) as s,
    ):
        s.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    if not data:  # TLS 1.3: a refused client certificate shows after the client's handshake
        raise ConnectionError("the node closed the connection without an answer")
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2] or b"null")


def operator(c: LocalCluster, name: str, role: str, **kw: Any) -> ssl.SSLContext:
    folder = c.cfg.tls_dir
    key, crt = pki.issue(folder, name, "operator", role=role, force=True, **kw)
    return client_context(folder, str(crt), str(key))


def setpoint() -> bytes:
    return commands.encode("set_setpoint", f"t-{uuid.uuid4().hex}", device_id="n1-bat", kw=1.0, source="test")


def test_roles_from_client_certificates(shared_cluster: LocalCluster) -> None:
    c = shared_cluster
    reader = operator(c, "grafana", "read")
    assert request(c, reader, "GET", "/v1/status")[0] == 200
    code, body = request(c, reader, "POST", "/v1/propose", setpoint())
    assert (code, body["code"]) == (403, "E_FORBIDDEN")
    assert "needs role operate" in body["message"] and "grafana (cert) has read" in body["message"]
    op = operator(c, "alice", "operate")
    code, body = request(c, op, "POST", "/v1/propose", setpoint())
    assert code == 200 and body["ok"], body
    code, body = request(
        c, op, "POST", "/v1/members", json.dumps({"action": "remove", "node_id": "n3"}).encode()
    )
    assert (code, body["code"]) == (403, "E_FORBIDDEN") and "needs role admin" in body["message"]
    mint = commands.encode("token_create", f"t-{uuid.uuid4().hex}", token_id="00aa11bb", name="mine",
                           role="admin", digest="0" * 64, expires_s=2e9, by="alice")  # fmt: skip
    code, body = request(c, op, "POST", "/v1/propose", mint)
    assert (code, body["code"]) == (403, "E_FORBIDDEN") and "token_create needs role admin" in body["message"]
    nothing = client_context(c.cfg.tls_dir, cert="")
    code, body = request(c, nothing, "GET", "/v1/status")
    assert (code, body["code"]) == (401, "E_AUTH_FAIL")
    assert request(c, nothing, "GET", "/v1/status", token=c.client.token)[0] == 200  # the secret's token


def handshake_fails(c: LocalCluster, ctx: ssl.SSLContext) -> bool:
    try:
        request(c, ctx, "GET", "/v1/status")
    except (ssl.SSLError, ConnectionError, OSError):
        return True
    return False


def test_what_is_not_the_zone_ca_or_tls_1_3_gets_no_answer(
    shared_cluster: LocalCluster, tmp_path: Path
) -> None:
    c = shared_cluster
    other = tmp_path / "other"
    pki.init_ca(other, "someone-else")
    key, crt = pki.issue(other, "mallory", "operator", role="admin")
    assert handshake_fails(c, client_context(c.cfg.tls_dir, str(crt), str(key)))  # the node refuses it
    now = datetime.now(UTC)
    expired = operator(
        c, "old", "admin", not_before=now - timedelta(days=10), not_after=now - timedelta(days=1)
    )
    assert handshake_fails(c, expired)
    tls12 = client_context(c.cfg.tls_dir, cert="")
    tls12.minimum_version = tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert handshake_fails(c, tls12)
    # a client that trusts another CA refuses the node: no token leaves it
    stranger = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    stranger.load_verify_locations(other / "ca.crt")
    assert handshake_fails(c, stranger)
    # plain HTTP: no HTTP answer at all
    n = c.cfg.node("n1")
    with socket.create_connection((n.bind_host, n.api_port), timeout=5) as s:
        s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = s.recv(100)
        except OSError:
            answer = b""
    assert not answer.startswith(b"HTTP/1.1 200")
    # and the operator's own client still works
    assert NodeClient(c.cfg, None).request(n, "GET", "/v1/status")[0] == 200


def test_a_scoped_token_has_its_role_and_is_revoked_on_every_node(shared_cluster: LocalCluster) -> None:
    from tests.integration.conftest import meshems_cli

    c = shared_cluster
    cfg = c.config_path
    out = meshems_cli("token", "create", "--config", cfg, "--role", "read", "--name", "prom", "--ttl", "1h",
                      "-o", "json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    token = json.loads(out.stdout)["token"]
    assert token.startswith("mst_")
    nothing = client_context(c.cfg.tls_dir, cert="")
    for node in ("n1", "n2", "n3"):
        code, _ = request_to(c, node, nothing, "GET", "/v1/status", token=token)
        assert code == 200
    code, body = request(c, nothing, "POST", "/v1/propose", setpoint(), token=token)
    assert (code, body["code"]) == (403, "E_FORBIDDEN") and "needs role operate" in body["message"]
    status = meshems_cli("status", "--config", cfg, "--token", token, "-o", "json")
    assert status.returncode == 0 and len(json.loads(status.stdout)) == 3
    listed = meshems_cli("token", "list", "--config", cfg, "-o", "json")
    row = next(r for r in json.loads(listed.stdout) if r["name"] == "prom")
    assert row["role"] == "read" and not row["revoked"] and "digest" not in row
    # a read token cannot mint itself an admin one
    escalate = meshems_cli(
        "token", "create", "--config", cfg, "--token", token, "--role", "admin", "--name", "x"
    )
    assert escalate.returncode != 0 and "E_FORBIDDEN" in escalate.stderr
    revoked = meshems_cli("token", "revoke", "--config", cfg, "prom")
    assert revoked.returncode == 0, revoked.stderr
    index = int(revoked.stdout.rsplit("index ", 1)[1].rstrip(")\n"))
    for node in ("n1", "n2", "n3"):  # refused on every node once it has applied that one commit
        wait_applied(c, node, index)
        code, body = request_to(c, node, nothing, "GET", "/v1/status", token=token)
        assert (code, body["code"]) == (401, "E_AUTH_FAIL"), node


def request_to(
    c: LocalCluster, node: str, ctx: ssl.SSLContext, method: str, path: str, token: str
) -> tuple[int, Any]:
    n = c.cfg.node(node)
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    with (
        socket.create_connection((n.bind_host, n.api_port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=n.bind_host) as s,
    ):
        s.sendall(head.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2] or b"null")


def wait_applied(c: LocalCluster, node: str, index: int) -> None:
    from tests.integration.test_cluster import status_of, wait_until

    wait_until(
        lambda: status_of(c, node)["state_index"] >= index, timeout_s=10, what=f"{node} applied {index}"
    )
