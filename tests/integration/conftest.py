"""Fixtures that start real `meshems node run` processes on 127.0.0.1 and always stop them."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshems.adapters import pki
from meshems.adapters.config_file import load_config
from meshems.adapters.secret import init_secret, read_secret
from meshems.ops.supervisor import LocalCluster
from tests.conftest import write_config
from tests.mqtt_broker import MosquittoBroker


def meshems_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshems", *args], capture_output=True, text=True, timeout=timeout
    )


class ClusterFactory:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.clusters: list[LocalCluster] = []

    def __call__(
        self,
        nodes: int = 3,
        joiners: int = 0,
        start: bool = True,
        wired: bool = False,
        policy: dict | None = None,
        protection: dict | None = None,
        site: dict | None = None,
        profiles: dict[str, str] | None = None,
    ) -> LocalCluster:
        folder = self.tmp_path / f"c{len(self.clusters)}"
        folder.mkdir()
        path = write_config(
            folder,
            nodes=nodes,
            joiners=joiners,
            wired=wired,
            policy=policy,
            protection=protection,
            site=site,
            profiles=profiles,
        )
        cfg = load_config(path)
        init_secret(cfg.secret_path)
        cluster = LocalCluster(cfg, str(path), read_secret(cfg.secret_path), folder / "logs")
        self.clusters.append(cluster)
        if start:
            if wired:
                cluster.start_sims()
            cluster.start_all()
            for n in cfg.nodes:
                if n.initial:
                    cluster.wait_api(n.id)
            cluster.wait_leader()
            want = sum(len(n.devices) for n in cfg.nodes if n.initial)
            end = time.monotonic() + 15
            while time.monotonic() < end:
                rows = cluster.client.status_all(timeout_s=0.5)
                if all(
                    r.get("reachable") and r["devices"] == want
                    for r in rows
                    if r["id"] in {n.id for n in cfg.nodes if n.initial}
                ):
                    break
                time.sleep(0.05)
            else:
                raise TimeoutError("devices were not declared within 15 s")
        return cluster

    def close(self) -> None:
        for c in self.clusters:
            c.stop_all()


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[ClusterFactory]:
    factory = ClusterFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One 3-node cluster for tests that do not break it."""
    factory = ClusterFactory(tmp_path_factory.mktemp("shared"))
    try:
        yield factory()
    finally:
        factory.close()


@contextlib.contextmanager
def sim_process(folder: Path, site: dict[str, Any]) -> Iterator[subprocess.Popen[bytes]]:
    """A `meshems sim` process serving `site` (written to FOLDER/site.yaml) until the block ends."""
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(site))
    ready = folder / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshems", "sim", "--site", str(path), "--ready-file", str(ready)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists() and time.monotonic() < deadline:
            assert proc.poll() is None, "meshems sim exited"
            time.sleep(0.05)
        assert ready.exists(), "meshems sim did not become ready"
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A real mosquitto with TLS 1.3 and client certificates from a fresh zone CA."""
    folder = tmp_path / "pki"
    pki.init_ca(folder, "test-ca")
    with MosquittoBroker(tmp_path, folder) as b:
        yield b


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """One throw-away PostgreSQL cluster for the session (tests take a database each with
    `pg_server.new_database()`); skipped with the reason when it cannot run here, failed
    instead in CI (scripts/setup installs it)."""
    import os

    from tests.pg_server import PgServer, available

    why = available()
    if why:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(why)
    with PgServer() as pg:
        yield pg
