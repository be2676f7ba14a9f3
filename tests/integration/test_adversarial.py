"""The attack probe, as a bounded test against three real node processes on 127.0.0.1.

Every case here was reproduced against main before the fix (forged internal commands
through the API, a pre-auth Raft DoS, unauthenticated memory exhaustion, refused commands
still journaled, absurd policy values, a disruptive restart): each asserts the behaviour
the attack broke. The attacker connects from 127.0.0.2 (loopback) where it matters, so
the per-peer caps can be seen to spare the operator on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import ssl
import struct
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgpack
import pytest

from meshems.adapters.api_tls import client_context
from meshems.core import commands
from meshems.core.plan_records import pack
from meshems.ops.supervisor import LocalCluster
from tests.integration.test_cluster import set_sp, status_of, wait_until

pytestmark = pytest.mark.integration
ATTACKER = "127.0.0.2"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def token(c: LocalCluster) -> str:
    return c.client.token


def no_cert(c: LocalCluster) -> ssl.SSLContext:
    """A TLS client that trusts the zone CA and presents no certificate (a token, or nothing)."""
    return client_context(c.cfg.tls_dir, cert="")


def http(c: LocalCluster, node: str, method: str, path: str, body: bytes = b"", auth: bool = True,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:  # fmt: skip
    """One raw HTTP/1.1 request; (status, JSON body)."""
    n = c.cfg.node(node)
    head = {"Host": "x", "Content-Length": str(len(body)), "Connection": "close", **(headers or {})}
    if auth:
        head["Authorization"] = f"Bearer {token(c)}"
    req = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n"
    with (
        socket.create_connection((n.bind_host, n.api_port), timeout=10) as raw,
        no_cert(c).wrap_socket(raw, server_hostname=n.bind_host) as s,
    ):
        s.sendall(req.encode() + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data, f"{method} {path}: the connection closed without an answer"
    status_line, _, rest = data.partition(b"\r\n")
    payload = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(payload or b"null")


def forged(type_: str, **fields: Any) -> bytes:
    return commands.encode(type_, f"forged-{uuid.uuid4().hex[:8]}", **fields)


# --- 1. internal commands through the operator API ---------------------------------------------


def test_the_api_refuses_every_internal_command(shared_cluster: LocalCluster) -> None:
    c = shared_cluster
    before = status_of(c, "n1")
    attacks = {
        "report": forged("report", node_id="n2", seq=2**63 - 1,
                         devices=[{"id": "n2-bat", "state": "ok", "values": {"power_kw": -500.0}}]),
        "dispatch": forged("dispatch", cycle=2**63 - 1, setpoints=[], relays=[], envelopes=[], inputs={}),
        "declare_node": forged("declare_node", node_id="n1", raft="127.0.0.1:1", api="127.0.0.1:2",
                               devices=[{"id": "n1-bat", "kind": "battery", "min_kw": -5e3, "max_kw": 5e3}]),
        "cloud_ack": forged("cloud_ack", seq=0),
        "forecast_model": forged("forecast_model", node_id="n1", version=2**40, digest="ab" * 32, data=b"x"),
        "transfer_device": forged("transfer_device", device_id="n1-bat", node_id="n2"),
        "remove_node": forged("remove_node", node_id="n3"),
        # a forged forecast or plan would steer every battery of the zone
        "node_forecast": forged("node_forecast", node_id="n1", start_s=1.9e9, step_s=900.0,
                                kw=pack([1e5] * 96), basis="forged"),
        "plan": forged("plan", version=2**40, start_s=1.9e9, step_s=900.0, mode="peak", status="optimal",
                       import_kw=pack([0.0]), batteries=[], peak_kw=0.0, cost=0.0, reason="x", basis="x",
                       made_s=1.9e9),
        # a forged status would claim a node holds a bundle it never verified
        "deploy_status": forged("deploy_status", deployment_id="d1", node_id="n2", status="verified"),
        # a forged apply would set the zone's policy from a payload nobody verified
        "deploy_apply": forged("deploy_apply", deployment_id="d1", values={"import_limit_kw": 1.0}),
        # a forged step would promote a payload that never passed its shadow
        "rollout_step": forged("rollout_step", deployment_id="d1", node_id="n2", phase="active", now_s=0.0),
        # a forged cloud command would set the zone's policy without the cloud's signature
        "cloud_command": forged("cloud_command", zone="zone-a", seq=2**40, action="set_policy",
                                args={"values": {"import_limit_kw": 1.0}}, expires_at_s=2**40),
    }  # fmt: skip
    assert set(attacks) == set(commands.INTERNAL_TYPES)
    for kind, data in attacks.items():
        code, body = http(c, "n2", "POST", "/v1/propose", data)
        assert (code, body["code"]) == (403, "E_CMD_FORBIDDEN"), kind
        assert kind in body["message"]
    # a setpoint may not pose as dispatch either
    code, body = http(c, "n1", "POST", "/v1/propose", forged("set_setpoint", device_id="n1-bat", kw=1.0,
                                                              source="dispatch:balancing"))  # fmt: skip
    assert (code, body["code"]) == (403, "E_CMD_FORBIDDEN")
    after = status_of(c, "n1")
    assert after["commit_index"] - before["commit_index"] < 10  # only the nodes' own reports moved it
    assert after["members"] == before["members"] and after["devices"] == before["devices"]
    _, sps = http(c, "n1", "GET", "/v1/setpoints")
    assert not any(s["source"].startswith("dispatch") for s in sps["setpoints"])
    # the operator commands still work through the same route
    assert set_sp(c, "n1-bat", 7.0)["ok"]


def test_refused_commands_never_reach_the_log(shared_cluster: LocalCluster) -> None:
    c = shared_cluster
    leader = c.wait_leader()
    bad = [
        b"\xc1" * 1000,  # not msgpack
        msgpack.packb({"type": "set_setpoint", "v": 1, "rid": "x", "device_id": "n1-bat", "kw": "lots",
                       "source": "op"}),
        msgpack.packb({"type": "set_policy", "v": 1, "rid": "p", "values": {"cycle_s": 1e9}}),
        msgpack.packb({"type": "set_policy", "v": 1, "rid": "q", "values": {"import_limit_kw": 1e308}}),
        msgpack.packb({"type": "set_policy", "v": 1, "rid": "r", "values": {"reserve_forecast": "maybe"}}),
    ]  # fmt: skip
    t0, before = time.monotonic(), status_of(c, leader)["commit_index"]
    for i in range(60):
        code, body = http(c, leader, "POST", "/v1/propose", bad[i % len(bad)])
        assert code == 400 and body["code"] in ("E_CMD_MALFORMED", "E_POLICY"), body
    big = msgpack.packb({"type": "set_setpoint", "v": 1, "rid": "b", "pad": b"x" * (1 << 20)})
    code, body = http(c, leader, "POST", "/v1/propose", headers={"Content-Length": str(len(big))})
    assert (code, body["code"]) == (413, "E_TOO_LARGE")
    # none of the 61 was committed: the index moved only by the three nodes' ~1 Hz reports
    reports = 3 * (int(time.monotonic() - t0) + 2)
    assert status_of(c, leader)["commit_index"] - before <= reports < 60


def test_a_policy_with_an_unknown_load_is_refused(shared_cluster: LocalCluster) -> None:
    data = commands.encode("set_policy", "pol-nope", values={"shed_order": ["nope:1"]})
    res = shared_cluster.client.propose(data)
    assert (res["ok"], res["code"]) == (False, "E_POLICY")
    assert "'nope:1'" in res["message"]


# --- 3. unauthenticated memory exhaustion and slow clients --------------------------------------


async def _flood(
    host: str, port: int, conns: int, body_bytes: int, source: str, tls: ssl.SSLContext
) -> dict[str, int]:
    """`conns` connections at once, each POSTing `body_bytes` without a token."""
    outcome = {"401": 0, "refused": 0, "other": 0}
    head = (f"POST /v1/propose HTTP/1.1\r\nHost: x\r\nContent-Length: {body_bytes}\r\n\r\n").encode()
    body = os.urandom(65536)

    async def one() -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, local_addr=(source, 0), ssl=tls, server_hostname=host), 10
            )
            writer.write(head + body)
            # the answer comes before the body has been read: the token is checked first
            line = await asyncio.wait_for(reader.readline(), 10)
            outcome["401" if b" 401 " in line else "refused" if not line else "other"] += 1
        except (ConnectionError, OSError, TimeoutError, asyncio.IncompleteReadError):
            outcome["refused"] += 1
            return
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            sent = len(body)
            while sent < body_bytes:  # then keep pushing the rest, as an attacker would
                writer.write(body)
                sent += len(body)
                await asyncio.wait_for(writer.drain(), 10)
        writer.close()

    await asyncio.gather(*(one() for _ in range(conns)))
    return outcome


def test_unauthenticated_bodies_cannot_exhaust_memory(shared_cluster: LocalCluster) -> None:
    c = shared_cluster
    node = c.cfg.node("n3")
    pid = status_of(c, "n3")["pid"]
    baseline = rss_mb(pid)
    outcome = asyncio.run(_flood(node.bind_host, node.api_port, 600, 1 << 20, ATTACKER, no_cert(c)))
    assert outcome["other"] == 0, outcome
    assert outcome["401"] > 0  # the ones within the caps got an answer, before their bodies
    # the operator on another address is still served during and after the attack
    assert status_of(c, "n3")["id"] == "n3"
    assert rss_mb(pid) - baseline < 50, (baseline, rss_mb(pid))
    # a 10 MB Content-Length with the right token is 413, not 400
    code, body = http(c, "n3", "POST", "/v1/propose", b"", headers={"Content-Length": str(10 << 20)})
    assert (code, body["code"]) == (413, "E_TOO_LARGE")


def test_auth_failures_are_logged_rate_limited_with_the_peer(shared_cluster: LocalCluster) -> None:
    c = shared_cluster
    before = c.log_text("n2").count("E_AUTH_FAIL")
    for _ in range(300):
        code, _ = http(c, "n2", "GET", "/v1/status", auth=False)
        assert code == 401
    lines = [ln for ln in c.log_text("n2").splitlines() if "E_AUTH_FAIL" in ln][before:]
    assert 1 <= len(lines) <= 2, lines  # one line per 10 s, not one per request
    assert "127.0.0.1" in lines[-1]


NESTED_17 = json.dumps({"a": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}).encode()
BAD_JSON = [(b"[1, 2]", "a list"), (b"[" * 510 + b"]" * 510, "deep nesting"), (b'{"action": ', "truncated"),
            (b"\xff\xfe", "not UTF-8"), (NESTED_17, "17 levels")]  # fmt: skip


@pytest.mark.parametrize(("body", "why"), BAD_JSON)
def test_bad_json_gets_400_not_a_dropped_connection(
    shared_cluster: LocalCluster, body: bytes, why: str
) -> None:
    c = shared_cluster
    code, res = http(c, "n1", "POST", "/v1/members", body)
    assert (code, res["code"]) == (400, "E_BAD_REQUEST"), why
    assert "Traceback" not in c.log_text("n1")


def test_the_api_survives_a_fuzzed_mix_of_malformed_requests(shared_cluster: LocalCluster) -> None:
    c = shared_cluster
    rng = random.Random(10)
    statuses: set[int] = set()
    for i in range(150):
        kind = rng.choice(["msgpack-garbage", "random-map", "random-bytes", "wrong-path", "bad-method"])
        if kind == "msgpack-garbage":
            keys, values = ["type", "v", "rid", "kw", 7], [None, 1, "x", [1], {}]
            body = msgpack.packb({rng.choice(keys): rng.choice(values) for _ in range(rng.randint(0, 6))})
        elif kind == "random-map":
            device = rng.choice(["n1-bat", "", "x" * 99])
            body = msgpack.packb({"type": rng.choice(sorted(commands.SCHEMAS)), "v": 1, "rid": f"f{i}",
                                  "device_id": device, "kw": rng.random() * 1e6})  # fmt: skip
        else:
            body = os.urandom(rng.randint(0, 2000))
        path = "/v1/nothing" if kind == "wrong-path" else "/v1/propose"
        method = "PUT" if kind == "bad-method" else "POST"
        code, res = http(c, "n1", method, path, body)
        statuses.add(code)
        assert code in (200, 400, 403, 404, 405), (kind, code, res)
        assert (res["code"] and "node" in res) or code != 200
    assert "Traceback" not in c.log_text("n1") and status_of(c, "n1")["has_quorum"]
    assert 400 in statuses


def test_a_slow_client_is_cut_off_at_the_header_deadline(shared_cluster: LocalCluster) -> None:
    node = shared_cluster.cfg.node("n2")
    t0 = time.monotonic()
    tls = no_cert(shared_cluster)
    with (
        socket.create_connection((node.bind_host, node.api_port), timeout=20) as raw,
        tls.wrap_socket(raw, server_hostname=node.bind_host) as s,
    ):
        s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
        closed = False
        for _ in range(40):  # one header line every 0.5 s: never finishes
            try:
                s.sendall(b"X-Slow: 1\r\n")
            except OSError:
                closed = True
                break
            s.settimeout(0.5)
            try:
                if s.recv(100) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
    assert closed and time.monotonic() - t0 < 10


# --- 2. the Raft port before authentication ----------------------------------------------------


def test_raft_listens_on_the_node_address_only(shared_cluster: LocalCluster) -> None:
    node = shared_cluster.cfg.node("n1")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.3", node.raft_port), timeout=2).close()
    socket.create_connection((node.bind_host, node.raft_port), timeout=2).close()


def _raft_attack(host: str, port: int, seconds: float) -> tuple[int, int]:
    """Oversized length prefixes with random bytes, and idle sockets; returns (attacks,
    idle sockets the node closed by the end)."""
    idle = []
    for _ in range(200):
        s = socket.socket()
        s.bind((ATTACKER, 0))
        s.connect((host, port))
        idle.append(s)
    end, attacks = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        with socket.socket() as s:
            s.bind((ATTACKER, 0))
            s.settimeout(2)
            s.connect((host, port))
            try:
                s.sendall(struct.pack("i", 0x7FFFFFFF) + os.urandom(256 * 1024))
                s.recv(1)
            except OSError:
                pass
        attacks += 1
    time.sleep(4.0)  # past the unauthenticated deadline
    closed = 0
    for s in idle:
        s.settimeout(0.5)
        with contextlib.suppress(TimeoutError, OSError):
            closed += s.recv(1) == b""
        s.close()
    return attacks, closed


def test_garbage_on_the_raft_port_changes_no_term_and_no_leader(make_cluster) -> None:
    c = make_cluster()
    leader = c.wait_leader()
    follower = next(n for n in ("n1", "n2", "n3") if n != leader)
    terms = {n: status_of(c, n)["term"] for n in ("n1", "n2", "n3")}
    rss = {n: rss_mb(status_of(c, n)["pid"]) for n in (leader, follower)}
    for target in (follower, leader):
        node = c.cfg.node(target)
        attacks, closed = _raft_attack(node.bind_host, node.raft_port, 4.0)
        assert attacks > 10 and closed >= 190, (attacks, closed)
    assert c.wait_leader() == leader
    assert {n: status_of(c, n)["term"] for n in ("n1", "n2", "n3")} == terms
    for n in (leader, follower):
        assert rss_mb(status_of(c, n)["pid"]) - rss[n] < 30
        assert "W_RAFT_REFUSED" in c.log_text(n)
    assert set_sp(c, "n1-bat", 3.0)["ok"]


# --- 6. a graceful restart does not disturb a healthy leader -------------------------------------


def test_repeated_graceful_follower_restarts_keep_the_term_and_the_leader(make_cluster) -> None:
    c = make_cluster()
    leader = c.wait_leader()
    with ThreadPoolExecutor(8) as pool:  # a journal of hundreds of entries to replay
        assert all(pool.map(lambda i: set_sp(c, "n1-bat", float(i % 40))["ok"], range(800)))
    term = status_of(c, leader)["term"]
    followers = [n for n in ("n1", "n2", "n3") if n != leader]
    stop = threading.Event()

    def writer() -> None:  # the zone keeps working while gateways restart
        while not stop.is_set():
            with contextlib.suppress(Exception):
                set_sp(c, "n2-bat", 1.0)

    background = threading.Thread(target=writer, daemon=True)
    background.start()
    try:
        for i in range(4):  # two restarts of each follower
            follower = followers[i % 2]
            c.stop(follower)
            c.start(follower)
            c.wait_api(follower)
            wait_until(lambda f=follower: status_of(c, f)["leader"] == leader, 15, f"restart {i} follows")
    finally:
        stop.set()
        background.join(timeout=20)
    assert c.wait_leader() == leader
    assert status_of(c, leader)["term"] == term, "a restart raised the term"
    assert set_sp(c, "n2-bat", 1.5)["ok"]
