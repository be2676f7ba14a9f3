"""`meshems demo --deploy`: a controller payload rolled out in the demo. A throw-away release
key in the demo's data folder, a copy of the demo's config beside it that also trusts that key
(the nodes run from the copy, so its relative paths stay the same), the payload built with the
key and deployed to the zone once every node is a member, and its rollout per node for the view.
Owns no checks: the nodes verify and roll it out as for `meshems deploy`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Group

    from meshems.core.config import ClusterConfig
    from meshems.ops.supervisor import LocalCluster

#: the example controller payload of the repository (`--deploy` without a folder)
EXAMPLE_PAYLOAD = Path(__file__).resolve().parents[2] / "cluster-configs" / "payloads" / "peak-guard"
#: the demo's shadow and watch cycles per node (the example's manifest asks 30 and 60: minutes)
DEMO_CYCLES = 5
_HEADER = "# written by `meshems demo --deploy` from {src}: that config, also trusting the demo's key\n"


def trusting_config(cfg: ClusterConfig, config_path: str) -> tuple[str, Path]:
    """The demo's release key (made once, in DATA_DIR/demo-payload/) and a copy of the config
    beside it whose payloads.trusted_keys also hold that key, threshold 1: (copy's path, key)."""
    import yaml

    from meshems.adapters.atomic_write import write_atomic
    from meshems.adapters.config_file import load_yaml
    from meshems.adapters.payload_bundle import keygen, public_path

    key = cfg.path(cfg.raft.data_dir) / "demo-payload" / "release.key"
    if key.is_file() and public_path(key).is_file():
        public = public_path(key).read_text().strip()
    else:
        _, public = keygen(key, force=True)
    doc = load_yaml(config_path)
    assert isinstance(doc, dict)  # cfg was parsed from it
    payloads = dict(doc.get("payloads") or {})
    keys = [k for k in payloads.get("trusted_keys") or [] if k != public]
    doc["payloads"] = {**payloads, "trusted_keys": [*keys, public], "threshold": 1}
    src = Path(config_path)
    out = src.with_name(f".{src.stem}.demo-deploy.yaml")
    text = _HEADER.format(src=src.name) + yaml.safe_dump(doc, sort_keys=False)
    write_atomic(out, text.encode(), 0o644)
    return str(out), key


class DemoDeploy:
    """Build and deploy the payload once every node is a member of the zone (a `--zone` deploy
    targets the members when it commits), then follow its deployment."""

    def __init__(self, cluster: LocalCluster, key: Path, folder: Path, cycles: int = DEMO_CYCLES) -> None:
        self.cluster, self.key, self.folder, self.cycles = cluster, key, folder, cycles
        self.dep_id = ""
        self.note = f"payload {folder.name}: deployed once every node is a member"
        self.dep: dict[str, Any] | None = None

    def step(self, rows: list[dict[str, Any]]) -> None:
        """One round of the demo: deploy when due, then read the deployment's state."""
        row = next((r for r in rows if r.get("reachable") and r.get("role") == "leader"), None)
        if row is None:
            return
        leader = row["id"]
        ids = {n.id for n in self.cluster.cfg.nodes if n.initial}
        if not self.dep_id and ids <= set(row.get("members") or ()):  # the deploy targets the members
            self._deploy(leader)
        if self.dep_id:
            self.dep = self._read(leader) or self.dep

    def _deploy(self, leader: str) -> None:
        from meshems.adapters.payload_bundle import build
        from meshems.cli.deploy import push
        from meshems.core.errors import MeshemsError

        out = self.key.parent / f"{self.folder.name}.mpkg"
        try:
            built = build(self.folder, [self.key], out, time.time())
            earlier = self._earlier(leader, built.manifest.name, str(built.manifest.version))
            if earlier:
                self.dep_id, self.note = earlier, f"active in this zone since an earlier demo ({earlier})"
                return
            res = push(self.cluster.client, self.cluster.cfg.raft.commit_timeout_s, out, via=leader,
                       shadow_cycles=self.cycles, watch_cycles=self.cycles)  # fmt: skip
        except MeshemsError as exc:
            res = {"ok": False, "code": exc.code, "message": exc.message}
        if not res.get("ok"):
            self.note = f"deploy failed, tried again next round: {res.get('code')}: {res.get('message')}"
            return
        self.dep_id = res["deployment_id"]
        self.note = (f"deployed {res['name']} {res['version']} via {res['via']}: rolling, {self.cycles} "
                     f"shadow and {self.cycles} watch cycles per node")  # fmt: skip

    def _deployments(self, node_id: str) -> list[dict[str, Any]]:
        client = self.cluster.client
        _, body = client.request(self.cluster.cfg.node(node_id), "GET", "/v1/deployments", timeout_s=0.5)
        return list(body.get("deployments") or [])

    def _earlier(self, leader: str, name: str, version: str) -> str:
        """The id of a rollout of this very version that ended done ("" when there is none)."""
        rows = self._deployments(leader)
        return next((d["id"] for d in reversed(rows)
                     if (d["name"], d["version"], d["state"]) == (name, version, "done")), "")  # fmt: skip

    def _read(self, leader: str) -> dict[str, Any] | None:
        try:
            return next((d for d in self._deployments(leader) if d["id"] == self.dep_id), None)
        except Exception:  # a node restarting (chaos): the last state read stays shown
            return None

    def view(self) -> Group:
        """The deployment's line and each target's copy, phase and health figures."""
        from rich.console import Group
        from rich.text import Text

        from meshems.cli.deploy import health
        from meshems.cli.output import table

        d = self.dep
        if d is None:
            return Group(Text(self.note))
        head = Text(
            f"payload {d['name']} {d['version']} ({d['id']}, {d['strategy']}): {d['state']}  {self.note}"
        )
        t = table("NODE", "COPY", "PHASE", "HEALTH", "WHY")
        for node, c in d["nodes"].items():
            why = f"{c['phase_code']}: {c['reason']}" if c["phase"] in ("failed", "rolled_back") else ""
            t.add_row(node, c["status"], c["phase"].replace("_", " "), health(c), why)
        return Group(head, t)

    def summary(self) -> str:
        """One line for the end of the demo: the deployment's state and each node's phase."""
        d = self.dep
        if d is None:
            return f"--deploy: {self.note}"
        phases = ", ".join(f"{n} {c['phase']}" for n, c in d["nodes"].items())
        return f"--deploy: {d['name']} {d['version']} ({d['id']}) {d['state']}; {phases}"
