"""The ingest workers' container image and Kubernetes Deployment (cluster-configs/cloud/):
the command they run is a real `meshems` command, the ConfigMap's cloud.yaml is a valid
cloud config whose files are in volumes the worker mounts, each worker has its own client id,
and the extra the image installs exists."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from meshems.cli.cloud import cmd_ingest
from meshems.cli.parser import build_parser, command_of
from meshems.core.cloud_config import parse_cloud_config

REPO = Path(__file__).resolve().parents[2]
CLOUD = REPO / "cluster-configs" / "cloud"


def docs() -> dict[str, Any]:
    return {d["kind"]: d for d in yaml.safe_load_all((CLOUD / "ingest-deployment.yaml").read_text())}


def parse(argv: list[str]) -> Any:
    assert argv[0] == "meshems"
    return build_parser(command_of(argv[1:])).parse_args(argv[1:])


def test_the_deployment_runs_cloud_ingest_with_a_client_id_per_pod() -> None:
    spec = docs()["Deployment"]["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    argv = [a.replace("$(POD_NAME)", "meshems-ingest-7d9f-x2") for a in c["command"] + c["args"]]
    args = parse(argv)
    assert args.run is cmd_ingest and args.client_id == "meshems-ingest-7d9f-x2"
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts[args.config] == "config"


def test_the_configmap_is_a_valid_cloud_config_with_its_files_mounted() -> None:
    d = docs()
    cfg = parse_cloud_config(yaml.safe_load(d["ConfigMap"]["data"]["cloud.yaml"]), "cloud.yaml")
    assert cfg.postgres and cfg.password_file
    spec = d["Deployment"]["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    (init,) = spec["initContainers"]
    run_dir = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "run")
    for f in (cfg.ca_file, cfg.cert_file, cfg.key_file, cfg.password_file):
        assert Path(f).parent == Path(run_dir), f  # the copies the init container made, 0600
    assert "install -m 600" in " ".join(init["command"]) and run_dir in " ".join(init["command"])
    assert {m["name"] for m in init["volumeMounts"]} == {"tls", "db", "run"}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["run"]["emptyDir"]["medium"] == "Memory"
    assert volumes["config"]["configMap"]["name"] == d["ConfigMap"]["metadata"]["name"]


def test_the_containerfile_runs_the_same_command_with_an_existing_extra() -> None:
    text = (CLOUD / "Containerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"^CMD (.+)$", text, re.M).group(1))  # type: ignore[union-attr]
    assert parse(entry + cmd).run is cmd_ingest
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "pip install '.[cloud]'" in text and any(d.startswith("psycopg") for d in extras["cloud"])
    assert re.search(r"^USER 10001$", text, re.M)  # not root
    spec = docs()["Deployment"]["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsUser"] == 10001 and spec["securityContext"]["runAsNonRoot"]
