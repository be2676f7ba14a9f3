"""A real Prometheus (Debian's) scrapes GET /metrics of a 3-node cluster over HTTPS with a
read token made by `meshems token create`; PromQL through its HTTP API sees every node with
a leader, and the leader-change counter of the survivors rise after the leader is killed."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshems.ops.supervisor import LocalCluster
from tests.conftest import free_ports
from tests.integration.conftest import ClusterFactory, meshems_cli

pytestmark = pytest.mark.integration
PROMETHEUS = shutil.which("prometheus")


class Prometheus:
    """A Prometheus server on 127.0.0.1 scraping the cluster's nodes every `scrape_s` (the
    metrics benchmark uses it too)."""

    def __init__(self, cluster: LocalCluster, token: str, folder: Path, scrape_s: float = 1.0) -> None:
        assert PROMETHEUS is not None
        (self.port,) = free_ports(1)
        (folder / "token").write_text(token)
        (folder / "token").chmod(0o600)
        config = {
            "global": {
                "scrape_interval": f"{scrape_s:g}s",
                "scrape_timeout": "1s",
                "evaluation_interval": f"{scrape_s:g}s",
            },
            "scrape_configs": [
                {
                    "job_name": "meshems",
                    "scheme": "https",
                    "metrics_path": "/metrics",
                    "tls_config": {"ca_file": str(cluster.cfg.tls_dir / "ca.crt")},
                    "authorization": {"credentials_file": str(folder / "token")},
                    "static_configs": [{"targets": [n.api_endpoint for n in cluster.cfg.nodes if n.initial]}],
                }
            ],
        }
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (folder / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=2) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def wait(self, promql: str, ok: Any, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Query until `ok(result)`; the last result and the server's log in the failure."""
        deadline, result = time.monotonic() + timeout_s, []
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "prometheus exited"
            try:
                result = self.query(promql)
                if ok(result):
                    return result
            except OSError:
                pass  # not listening yet
            time.sleep(0.5)
        raise AssertionError(f"{promql}: {result} after {timeout_s} s; targets: {self.targets()}")

    def targets(self) -> Any:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/targets", timeout=2) as r:
                return [
                    (t["scrapeUrl"], t["health"], t["lastError"])
                    for t in json.load(r)["data"]["activeTargets"]
                ]
        except OSError as exc:
            return str(exc)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.log.close()


@pytest.fixture
def prometheus_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="meshems-prom-") as folder:
        yield Path(folder)


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus missing (Debian prometheus; scripts/setup)")
def test_prometheus_scrapes_every_node_and_sees_a_new_leader(
    make_cluster: ClusterFactory, prometheus_dir: Path
) -> None:
    cluster = make_cluster(nodes=3)
    res = meshems_cli(
        "token", "create", "--config", cluster.config_path, "--role", "read", "--name", "prom", "-o", "json"
    )
    assert res.returncode == 0, res.stderr
    prom = Prometheus(cluster, json.loads(res.stdout)["token"], prometheus_dir)
    try:
        prom.wait('sum(up{job="meshems"}) == 3', bool)  # the read token is enough for /metrics
        prom.wait("sum(meshems_raft_has_leader) == 3", bool)
        prom.wait("count(meshems_raft_is_leader == 1) == 1", bool)
        leader = cluster.wait_leader()
        endpoint = cluster.cfg.node(leader).api_endpoint
        before = {
            r["metric"]["instance"]: float(r["value"][1])
            for r in prom.query("meshems_raft_leader_changes_seen_total")
            if r["metric"]["instance"] != endpoint
        }
        assert len(before) == 2 and all(v >= 1 for v in before.values())  # the first leader counts
        cluster.kill(leader)
        cluster.wait_leader(timeout_s=20, exclude={leader})

        def risen(result: list[dict[str, Any]]) -> bool:
            seen = {r["metric"]["instance"]: float(r["value"][1]) for r in result}
            return all(seen.get(i, 0) > v for i, v in before.items())

        prom.wait("meshems_raft_leader_changes_seen_total", risen)
        killed = f'instance="{endpoint}"'
        prom.wait(f"sum(meshems_raft_has_leader{{{killed.replace('=', '!=')}}}) == 2", bool)
        prom.wait(f"up{{{killed}}} == 0", bool)  # the killed node is seen down
    finally:
        prom.close()
