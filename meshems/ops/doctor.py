"""The probes of `meshems doctor` on this machine: the config, file modes of secrets and
keys, certificates, every peer's API and Raft port, the data folder, time sync. Each
probe returns `core.diagnosis.Check`s; the rules (thresholds, hints) are in the core.
Field devices and the broker are `ops.doctor_field`. Must not change anything it checks.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from meshems.adapters.config_file import load_config
from meshems.adapters.pki import CA_CERT, load_cert
from meshems.core import diagnosis as dx
from meshems.core.config import ClusterConfig, NodeConfig
from meshems.core.errors import MeshemsError
from meshems.ops.client import NodeClient

#: seconds a TCP connect or an API request of a peer may take
CONNECT_TIMEOUT_S = 2.0


def check_config(path: str) -> tuple[ClusterConfig | None, dx.Check]:
    """Load and validate the config; its ConfigError message names the file and the key."""
    try:
        cfg = load_config(path)
    except MeshemsError as exc:
        detail = "; ".join(line.strip() for line in exc.message.splitlines() if line.strip())
        if not Path(path).is_file():
            return None, dx.fail("config", detail, "pass the cluster config of this zone with --config")
        return None, dx.fail("config", detail, "fix the named key (README: configuration)")
    return cfg, dx.ok("config", f"{path}: {len(cfg.nodes)} nodes, zone {cfg.zone}")


def targets(cfg: ClusterConfig, node_id: str | None) -> list[NodeConfig]:
    """The nodes this run is about: `--node`, else every node of the config."""
    return [cfg.node(node_id)] if node_id else list(cfg.nodes)


def _mode(name: str, path: Path) -> dx.Check:
    try:
        return dx.file_mode(name, str(path), path.stat().st_mode)
    except OSError as exc:
        return dx.fail(name, f"{path}: {exc.strerror}", "run doctor as the service user, or fix the path")


def check_modes(cfg: ClusterConfig) -> list[dx.Check]:
    """The Raft secret and every private key (the API TLS folder, the overlay's keys) 0600."""
    if not cfg.secret_path.exists():
        out = [dx.fail("secret", f"{cfg.secret_path}: missing", f"meshems secret init --config {cfg.source}")]
    else:
        out = [_mode("secret", cfg.secret_path)]
    folders = [cfg.tls_dir]
    if cfg.overlay is not None:
        folders.append(cfg.path(cfg.overlay.key_dir))
    if cfg.cloud is not None:
        folders += [cfg.path(cfg.cloud.cert_dir), cfg.path(cfg.cloud.pki_dir)]
    seen: set[Path] = set()
    for folder in folders:
        for key in sorted(folder.glob("*.key")) if folder.is_dir() else ():
            if key.resolve() not in seen:
                seen.add(key.resolve())
                out.append(_mode(f"key {key.name}", key))
    return out


def _cn(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else ""


def _chain_problem(cert: x509.Certificate, ca: x509.Certificate | None) -> str | None:
    if ca is None:
        return "no CA certificate"
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        return str(exc) or "the CA's signature does not verify"
    return None


def _cert_folders(cfg: ClusterConfig) -> list[Path]:
    folders = [cfg.tls_dir]
    if cfg.cloud is not None:
        folders += [cfg.path(cfg.cloud.cert_dir), cfg.path(cfg.cloud.pki_dir)]
    out: list[Path] = []
    for f in folders:
        if f.resolve() not in [o.resolve() for o in out]:
            out.append(f)
    return out


def check_certs(cfg: ClusterConfig, nodes: list[NodeConfig], now: datetime) -> list[dx.Check]:
    """Every certificate of the TLS folder (and the cloud's): validity at `now`, the chain
    to the folder's ca.crt; each node's own certificate also CN = node id."""
    out: list[dx.Check] = []
    for folder in _cert_folders(cfg):
        ca_path = folder / CA_CERT
        if not ca_path.is_file():
            hint = f"meshems pki init --config {cfg.source} (or copy the zone's ca.crt)"
            out.append(dx.fail(f"ca {folder.name}", f"{ca_path}: missing", hint))
        ca = load_cert(ca_path) if ca_path.is_file() else None
        for node in nodes:
            if not (folder / f"{node.id}.crt").is_file():
                out.append(dx.fail(f"cert {node.id}", f"{folder / node.id}.crt: missing",
                                   f"meshems pki issue {node.id} --kind node"))  # fmt: skip
        for path in sorted(folder.glob("*.crt"), key=lambda p: (p.name != CA_CERT, p.name)):
            name = f"cert {path.stem}"
            try:
                cert = load_cert(path)
            except MeshemsError as exc:
                out.append(dx.fail(name, exc.message, "reissue it (meshems pki issue ... --force)"))
                continue
            out.append(
                dx.cert_validity(name, str(path), cert.not_valid_before_utc, cert.not_valid_after_utc, now)
            )
            if path.name != CA_CERT:
                out.append(dx.cert_chain(f"{name} chain", str(path), _chain_problem(cert, ca), str(ca_path)))
            if path.stem in {n.id for n in nodes}:
                out.append(dx.cert_cn(f"{name} CN", str(path), _cn(cert), path.stem))
    return out


def tcp_rtt_ms(host: str, port: int, timeout_s: float = CONNECT_TIMEOUT_S) -> float:
    """The time a TCP connect takes (OSError when refused or silent)."""
    start = time.perf_counter()
    with socket.create_connection((host, port), timeout=timeout_s):
        return (time.perf_counter() - start) * 1000


def check_peers(cfg: ClusterConfig, client: NodeClient | None) -> tuple[list[dx.Check], list[dict[str, Any]]]:
    """Every node's Raft port (TCP) and API port (TCP, then GET /v1/status over HTTPS when
    a client is given); returns the checks and the status bodies that answered."""
    out: list[dx.Check] = []
    rows: list[dict[str, Any]] = []
    for node in cfg.nodes:
        for what, port in (("raft", node.raft_port), ("api", node.api_port)):
            name, endpoint = f"{node.id} {what}", f"{node.bind_host}:{port}"
            try:
                ms = tcp_rtt_ms(node.bind_host, port)
            except OSError as exc:
                out.append(dx.rtt(name, endpoint, None, exc.strerror or str(exc)))
                continue
            check = dx.rtt(name, endpoint, ms)
            if what == "api" and client is not None:
                check, body = _api_status(client, node, check)
                if body is not None:
                    rows.append(body)
            out.append(check)
    return out, rows


def _api_status(client: NodeClient, node: NodeConfig, tcp: dx.Check) -> tuple[dx.Check, dict | None]:
    try:
        code, body = client.request(node, "GET", "/v1/status", timeout_s=CONNECT_TIMEOUT_S)
    except MeshemsError as exc:
        hint = "check the zone CA and the node's certificate (meshems pki show)"
        return dx.fail(tcp.name, f"HTTPS: {exc.message}", hint), None
    if code != 200:
        message = body.get("message") if isinstance(body, dict) else body
        hint = "use the cluster secret or an operator certificate with the read role"
        return dx.fail(tcp.name, f"{node.api_endpoint}: HTTP {code} {message}", hint), None
    role = body.get("role", "?")
    return dx.Check(tcp.name, tcp.status, f"{tcp.detail}, {role} term {body.get('term')}", tcp.hint), body


def check_clock_offsets(rows: list[dict[str, Any]]) -> list[dx.Check]:
    """Peer clock offsets, when the status API reports them (`clock_offsets_s`: peer ->
    seconds); nothing when it does not."""
    out = []
    for row in rows:
        offsets = row.get("clock_offsets_s")
        if isinstance(offsets, dict):
            for peer, offset in sorted(offsets.items()):
                if isinstance(offset, int | float):
                    out.append(dx.clock_offset(f"clock {row.get('id')}→{peer}", float(offset)))
    return out


def check_overlay(cfg: ClusterConfig, node_id: str) -> list[dx.Check]:
    """This gateway's WireGuard peers (`wg show`, needs CAP_NET_ADMIN): every handshake
    younger than overlay.handshake_max_age_s."""
    from meshems.adapters import wireguard

    if cfg.overlay is None:
        return []
    ifname = wireguard.interface_name(cfg, node_id)
    if shutil.which("wg") is None:
        return [dx.warn("overlay", "wg is not installed", "apt install wireguard-tools")]
    try:
        rows = wireguard.peer_status(cfg, node_id)
    except MeshemsError as exc:
        hint = f"meshems overlay up --config {cfg.source} --node {node_id} (as root)"
        return [dx.fail("overlay", f"{ifname}: {exc.message}", hint)]
    max_age_s = cfg.overlay.handshake_max_age_s
    return [
        dx.handshake(f"overlay {r['peer']}", str(r["endpoint"]), r["handshake_age_s"], max_age_s)
        for r in rows
    ]  # type: ignore[arg-type]


#: the poll counters of /v1/devices that count failures
ERROR_COUNTERS = ("timeouts", "crc_errors", "frame_errors", "connect_errors")


def check_node_counters(
    client: NodeClient, nodes: list[NodeConfig], rows: list[dict[str, Any]]
) -> list[dx.Check]:
    """What the running nodes count: each polled device's errors (/v1/devices of `nodes`)
    and the leader's cloud outbox (its status body)."""
    out: list[dx.Check] = []
    answered = {r.get("id") for r in rows}
    for node in nodes:
        if node.id not in answered:
            continue
        try:
            code, body = client.request(node, "GET", "/v1/devices", timeout_s=CONNECT_TIMEOUT_S)
        except MeshemsError:
            continue
        for dev in body.get("devices", []) if code == 200 and isinstance(body, dict) else []:
            errors = {k: int(dev.get(k) or 0) for k in ERROR_COUNTERS}
            errors["exceptions"] = sum(int(v) for v in (dev.get("exceptions") or {}).values())
            out.append(dx.poll_errors(f"poll errors {dev.get('id')}", int(dev.get("polls") or 0), errors))
    for row in rows:
        cloud = row.get("cloud")
        if row.get("role") == "leader" and isinstance(cloud, dict) and "outbox_records" in cloud:
            out.append(dx.outbox("outbox", int(cloud["outbox_records"]), cloud.get("oldest_unsent_age_s")))
    return out


def _run(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=3, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def check_time_sync() -> list[dx.Check]:
    """chrony's tracking (offset to NTP, leap status) or timesyncd's NTPSynchronized."""
    text = _run(["chronyc", "tracking"])
    if text is not None:
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        leap = fields.get("Leap status", "?")
        offset = dx.chrony_offset_s(fields.get("System time", ""))
        return [dx.time_sync("time sync", "chrony", leap == "Normal", offset, leap)]
    text = _run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
    if text is not None:
        return [dx.time_sync("time sync", "timesyncd", text.strip() == "yes", None, text.strip())]
    return []


def _existing(path: Path) -> Path:
    for p in (path, *path.parents):
        if p.exists():
            return p
    return Path("/")


def check_data_dirs(cfg: ClusterConfig, nodes: list[NodeConfig]) -> list[dx.Check]:
    """Each node's data folder (or its nearest existing parent): free space against
    raft.min_free_mib, and that a file can be written there."""
    out = []
    for node in nodes:
        path = cfg.data_dir(node.id)
        where = _existing(path)
        usage = shutil.disk_usage(where)
        out.append(dx.free_space(f"data {node.id}", str(path), usage.free / (1 << 20), cfg.raft.min_free_mib))
        try:
            with tempfile.NamedTemporaryFile(dir=where, prefix=".doctor-") as f:
                f.write(b"x" * 4096)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            hint = f"make {where} writable by the service user, or free space on it"
            out.append(dx.fail(f"data {node.id} writable", f"{where}: {exc.strerror}", hint))
        else:
            out.append(dx.ok(f"data {node.id} writable", f"{where}"))
    return out


def now_utc() -> datetime:
    return datetime.now(UTC)


def as_json(checks: list[dx.Check]) -> str:
    return json.dumps(
        {"ok": not dx.failed(checks), "checks": [c.to_dict() for c in checks]}, indent=2, ensure_ascii=False
    )
