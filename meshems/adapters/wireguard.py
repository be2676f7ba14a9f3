"""WireGuard overlay keys and configs: X25519 keys from `cryptography` (private keys written
0600) and a wg-quick style config per node rendered from the cluster config.

Owns key files, config text and the interface (kernel module where present, wireguard-go
where not); must run as root for `up`/`down`.
"""

from __future__ import annotations

import base64
import os
import subprocess
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from meshems.adapters.atomic_write import write_atomic
from meshems.core.config import ClusterConfig
from meshems.core.errors import ConfigError, MeshemsError

RAW = serialization.Encoding.Raw


def generate_keypair() -> tuple[str, str]:
    """(private, public) keys in WireGuard's base64 form."""
    key = X25519PrivateKey.generate()
    private = key.private_bytes(RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    public = key.public_key().public_bytes(RAW, serialization.PublicFormat.Raw)
    return base64.b64encode(private).decode(), base64.b64encode(public).decode()


def public_from_private(private_b64: str) -> str:
    key = X25519PrivateKey.from_private_bytes(base64.b64decode(private_b64))
    return base64.b64encode(key.public_key().public_bytes(RAW, serialization.PublicFormat.Raw)).decode()


def key_paths(cfg: ClusterConfig, node_id: str) -> tuple[Path, Path]:
    assert cfg.overlay is not None
    folder = cfg.path(cfg.overlay.key_dir)
    return folder / f"{node_id}.key", folder / f"{node_id}.pub"


def keygen(cfg: ClusterConfig, node_id: str, force: bool = False) -> tuple[Path, str]:
    """Write a node's key pair (private 0600, folder 0700); returns (private path, public key)."""
    private_path, public_path = key_paths(cfg, node_id)
    if private_path.exists() and not force:
        raise ConfigError(f"{private_path} exists; keep it (peers know its public key) or pass --force")
    private_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    private, public = generate_keypair()
    write_atomic(private_path, (private + "\n").encode(), 0o600)
    public_path.write_text(public + "\n")
    return private_path, public


def _public(cfg: ClusterConfig, node_id: str) -> str:
    _, public_path = key_paths(cfg, node_id)
    try:
        return public_path.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(
            f"{public_path}: no public key for {node_id}; run meshems overlay keygen --config {cfg.source}"
        ) from None


def render(cfg: ClusterConfig, node_id: str) -> str:
    """A wg-quick style config for `node_id` with every other node as a peer."""
    if cfg.overlay is None:
        raise ConfigError(f"{cfg.source}: overlay: no overlay section in the config")
    ov = cfg.overlay
    me = cfg.node(node_id)
    if me.overlay_address is None:
        raise ConfigError(f"{cfg.source}: nodes[{node_id}].overlay_address: missing")
    private_path, _ = key_paths(cfg, node_id)
    try:
        private = private_path.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(f"{private_path}: no private key; run meshems overlay keygen") from None
    lines = [
        "[Interface]",
        f"# meshems node {node_id}, zone {cfg.zone}",
        f"PrivateKey = {private}",
        f"ListenPort = {me.overlay_port or ov.listen_port}",
        f"Address = {me.overlay_address}/{ov.prefix_len}",
    ]
    for peer in cfg.nodes:
        if peer.id == node_id:
            continue
        if peer.overlay_address is None:
            raise ConfigError(f"{cfg.source}: nodes[{peer.id}].overlay_address: missing")
        endpoint = peer.overlay_endpoint or f"{peer.address}:{peer.overlay_port or ov.listen_port}"
        host = endpoint.rsplit(":", 1)[0]
        if ":" in host and not host.startswith("["):  # an IPv6 endpoint needs brackets
            endpoint = f"[{host}]:{endpoint.rsplit(':', 1)[1]}"
        lines += [
            "",
            "[Peer]",
            f"# {peer.id}",
            f"PublicKey = {_public(cfg, peer.id)}",
            f"AllowedIPs = {peer.overlay_address}/32",
            f"Endpoint = {endpoint}",
            f"PersistentKeepalive = {ov.keepalive_s}",
        ]
    return "\n".join(lines) + "\n"


def strip_wg_quick(text: str) -> str:
    """The config without wg-quick-only fields (Address), as `wg setconf` wants it."""
    return "\n".join(line for line in text.splitlines() if not line.startswith(("Address", "#"))) + "\n"


# --- bringing the interface up and down (runs `ip`, `wg`, `wireguard-go`) -----------------------


def interface_name(cfg: ClusterConfig, node_id: str) -> str:
    """One interface name per node: wireguard-go's UAPI sockets share /var/run/wireguard."""
    prefix = cfg.overlay.interface_prefix if cfg.overlay is not None else "mwg-"
    return f"{prefix}{node_id}"[:15]


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=20)
    if check and out.returncode != 0:
        raise OverlayError(f"{' '.join(cmd)} failed: {out.stderr.strip() or out.stdout.strip()}")
    return out


class OverlayError(MeshemsError):
    code = "E_OVERLAY"


def link_exists(ifname: str) -> bool:
    return _run("ip", "link", "show", ifname, check=False).returncode == 0


def up(cfg: ClusterConfig, node_id: str) -> str:
    """Bring the node's overlay up (idempotent): the kernel module where present, else
    wireguard-go; then its keys and peers, its address and the link. Returns how."""
    assert cfg.overlay is not None
    me = cfg.node(node_id)
    ifname = interface_name(cfg, node_id)
    how = "existing interface"
    if not link_exists(ifname):
        if _run("ip", "link", "add", ifname, "type", "wireguard", check=False).returncode == 0:
            how = "kernel module"
        else:
            env = {**os.environ, "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}
            out = subprocess.run(
                ["wireguard-go", ifname], capture_output=True, text=True, timeout=20, env=env
            )
            if out.returncode != 0:
                raise OverlayError(f"wireguard-go {ifname} failed: {out.stderr.strip()}")
            how = "wireguard-go"
            for _ in range(100):
                if link_exists(ifname):
                    break
                time.sleep(0.05)
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
        os.chmod(f.name, 0o600)
        f.write(strip_wg_quick(render(cfg, node_id)))
    try:
        _run("wg", "setconf", ifname, f.name)
    finally:
        os.unlink(f.name)
    _run("ip", "address", "replace", f"{me.overlay_address}/{cfg.overlay.prefix_len}", "dev", ifname)
    _run("ip", "link", "set", ifname, "up")
    return how


def down(cfg: ClusterConfig, node_id: str) -> bool:
    """Remove the node's overlay interface (wireguard-go exits with it); False if absent."""
    ifname = interface_name(cfg, node_id)
    if not link_exists(ifname):
        return False
    _run("ip", "link", "del", ifname)
    Path(f"/var/run/wireguard/{ifname}.sock").unlink(missing_ok=True)
    return True


def peer_status(cfg: ClusterConfig, node_id: str, now_s: float | None = None) -> list[dict[str, object]]:
    """Per peer: handshake age, transfer counters and whether the handshake is too old."""
    assert cfg.overlay is not None
    ifname = interface_name(cfg, node_id)
    out = _run("wg", "show", ifname, "dump")
    now = time.time() if now_s is None else now_s
    by_key = {}
    for n in cfg.nodes:
        if n.id != node_id:
            try:
                by_key[_public(cfg, n.id)] = n.id
            except ConfigError:
                continue
    rows = []
    for line in out.stdout.splitlines()[1:]:  # the first line is the interface itself
        public, _psk, endpoint, _ips, handshake, rx, tx, _ka = line.split("\t")[:8]
        age = None if handshake == "0" else round(now - int(handshake), 1)
        rows.append(
            {
                "peer": by_key.get(public, public[:8]),
                "endpoint": endpoint,
                "handshake_age_s": age,
                "rx_bytes": int(rx),
                "tx_bytes": int(tx),
                "stale": age is None or age > cfg.overlay.handshake_max_age_s,
            }
        )
    return rows
