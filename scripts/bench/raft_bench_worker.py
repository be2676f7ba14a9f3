"""raft_bench's worker processes: one Raft member each (meshems or a bare pysyncobj
ReplDict), driven over a pipe by the orchestrator in raft_bench.py."""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from meshems.core import commands
from meshems.core.config import ClusterConfig, parse_config

SECRET = "b" * 64
NODES = ("n1", "n2", "n3")


def make_config(folder: Path, base_port: int, fsync: bool = True) -> ClusterConfig:
    doc = {
        "cluster": "bench",
        "zone": "z",
        "raft": {"secret_file": str(folder / "secret"), "data_dir": str(folder / "data"), "fsync": fsync},
        "nodes": [
            {
                "id": n,
                "address": "127.0.0.1",
                "raft_port": base_port + i,
                "api_port": base_port + 10 + i,
                "devices": [{"id": f"{n}-bat", "kind": "battery", "min_kw": -1e9, "max_kw": 1e9}],
            }
            for i, n in enumerate(NODES)
        ],
    }
    return parse_config(doc, str(folder / "bench.yaml"))


# --- worker side --------------------------------------------------------------------------


class _Bare:
    """A bare pysyncobj node: ReplDict with the same SyncObjConf as meshems."""

    def __init__(self, cfg: ClusterConfig, node_id: str) -> None:
        from pysyncobj import SyncObj
        from pysyncobj.batteries import ReplDict

        from meshems.adapters.consensus import initial_partners, syncobj_conf

        journal = cfg.data_dir(node_id) / "raft.journal"
        journal.parent.mkdir(parents=True, exist_ok=True)
        self.d = ReplDict()
        conf = syncobj_conf(cfg, node_id, SECRET, journal)
        self.so = SyncObj(
            cfg.node(node_id).raft_endpoint, initial_partners(cfg, node_id), conf, consumers=[self.d]
        )
        self.prefix = uuid.uuid4().hex[:8]
        self.i = 0

    def propose(self, cb: Any) -> None:
        # The same information as a meshems setpoint: device -> (kW, request id, source).
        self.i += 1
        value = {"kw": float(self.i % 1000), "rid": f"{self.prefix}-{self.i}", "source": "bench"}
        self.d.set("n1-bat", value, callback=lambda res, err: cb(err == 0))

    def role(self) -> str:
        return {0: "follower", 1: "candidate", 2: "leader"}[self.so.getStatus()["state"]]


class _Meshems:
    def __init__(self, cfg: ClusterConfig, node_id: str) -> None:
        from meshems.adapters.consensus import RaftNode

        self.node = RaftNode(cfg, node_id, SECRET)
        self.node.start()
        self.prefix = uuid.uuid4().hex[:8]
        self.i = 0

    def propose(self, cb: Any) -> None:
        self.i += 1
        data = commands.encode(
            "set_setpoint",
            f"{self.prefix}-{self.i}",
            device_id="n1-bat",
            kw=float(self.i % 1000),
            source="bench",
        )
        self.node.propose(data, lambda res, code, text: cb(code is None and res["ok"]))

    def role(self) -> str:
        return self.node.status().role


def worker(kind: str, cfg: ClusterConfig, node_id: str, conn: Any) -> None:
    impl: Any = _Meshems(cfg, node_id) if kind == "meshems" else _Bare(cfg, node_id)
    conn.send("ready")
    while True:
        msg = conn.recv()
        op = msg[0]
        if op == "role":
            conn.send(impl.role())
        elif op == "seq":
            lat, errors = [], 0
            for _ in range(msg[1]):
                ev, ok = threading.Event(), []
                t0 = time.perf_counter()
                impl.propose(lambda good, ev=ev, ok=ok: (ok.append(good), ev.set()))
                ev.wait(5)
                lat.append((time.perf_counter() - t0) * 1000)
                errors += not (ok and ok[0])
            conn.send((lat, errors))
        elif op == "pipe":
            n, window = msg[1], msg[2]
            sem, done, errs = threading.Semaphore(window), threading.Semaphore(0), []

            def cb(good: bool, sem: Any = sem, done: Any = done, errs: list = errs) -> None:
                if not good:
                    errs.append(1)
                sem.release()
                done.release()

            t0 = time.perf_counter()
            for _ in range(n):
                sem.acquire(timeout=10)
                impl.propose(cb)
            for _ in range(n):
                done.acquire(timeout=10)
            conn.send((n / (time.perf_counter() - t0), len(errs)))
        elif op == "until_commit":
            deadline = time.monotonic() + msg[1]
            attempts = 0
            while time.monotonic() < deadline:
                attempts += 1
                ev, ok = threading.Event(), []
                impl.propose(lambda good, ev=ev, ok=ok: (ok.append(good), ev.set()))
                ev.wait(1.0)
                if ok and ok[0]:
                    conn.send((time.monotonic(), attempts))
                    break
                time.sleep(0.002)
            else:
                conn.send((None, attempts))
        elif op == "raw":  # meshems only: propose these command bytes, return the result
            ev, out = threading.Event(), []
            impl.node.propose(
                msg[1], lambda res, code, text, ev=ev, out=out: (out.append(res or code), ev.set())
            )
            ev.wait(10)
            conn.send(out[0] if out else None)
        elif op == "syncs":  # meshems only: the journal's fdatasync calls so far
            conn.send(impl.node.syncobj._SyncObj__raftLog.syncs)
        elif op == "hash":  # meshems only: (applied index, state hash)
            from meshems.core.snapshot import state_hash

            st = impl.node.state
            conn.send((st.last_index, state_hash(st)))
        elif op == "stop":
            conn.send("bye")
            os._exit(0)
