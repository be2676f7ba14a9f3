"""TLS for the node API: the zone's CA and certificates in the API's TLS folder (`api.tls_dir`,
default .meshems/pki, the folder `meshems pki` manages), the server context a node serves with
(TLS 1.3 only, its own certificate, client certificates of the zone CA verified when offered),
the client context the CLI uses, and `ensure_zone_pki`, which creates what a zone on one
machine lacks (the CA, each node's certificate with its addresses, an admin operator
certificate): `meshems secret init`, the demo and the local supervisor call it.

Uses the standard library's `ssl` (OpenSSL): aiohttp serves with the server context as is.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshems.core.access import ROLES
from meshems.core.errors import ConfigError

if TYPE_CHECKING:  # the CLI's client path stays free of pydantic and cryptography
    from meshems.core.config import ClusterConfig, NodeConfig

CA_CERT = "ca.crt"  # = pki.CA_CERT, named here so the CLI's path does not import cryptography

#: the operator certificate the CLI presents when it finds one (made by `ensure_zone_pki`)
OPERATOR = "operator"


def tls_dir(cfg: ClusterConfig) -> Path:
    return cfg.tls_dir


def node_sans(node: NodeConfig) -> list[str]:
    """The names a node's API certificate must hold: every address it is reached at."""
    names = [node.address, node.bind_host]
    if node.overlay_address:
        names.append(node.overlay_address)
    return list(dict.fromkeys(names))


def ensure_zone_pki(cfg: ClusterConfig) -> list[str]:
    """Create the CA, node certificates and the admin operator certificate that are missing
    from the TLS folder; returns what was created. Never replaces an existing file."""
    from meshems.adapters import pki  # cryptography: only where certificates are made

    folder = tls_dir(cfg)
    made = []
    if not (folder / CA_CERT).exists():
        pki.init_ca(folder, f"meshems-{cfg.cluster}")
        made.append(str(folder / CA_CERT))
    if not (folder / pki.CA_KEY).exists():
        return made  # a gateway with the CA's certificate only: its certificates come from elsewhere
    for node in cfg.nodes:
        if not (folder / f"{node.id}.crt").exists():
            made.append(str(pki.issue(folder, node.id, "node", sans=node_sans(node), force=True)[1]))
    if not (folder / f"{OPERATOR}.crt").exists():
        made.append(str(pki.issue(folder, OPERATOR, "operator", role="admin", force=True)[1]))
    return made


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise ConfigError(
            f"{path}: no {what}; create the zone's certificates with: meshems pki init && "
            "meshems pki issue --node ID (or meshems secret init on a lab machine)",
            path=str(path),
        )
    return path


def server_context(cfg: ClusterConfig, node_id: str) -> ssl.SSLContext:
    """TLS 1.3 only, the node's certificate, client certificates verified against the zone CA
    when a client offers one (tokens are the other credential)."""
    folder = tls_dir(cfg)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        ctx.load_cert_chain(
            _need(folder / f"{node_id}.crt", f"certificate for node {node_id}"),
            _need(folder / f"{node_id}.key", f"key for node {node_id}"),
        )
        ctx.load_verify_locations(_need(folder / CA_CERT, "zone CA certificate"))
    except ssl.SSLError as exc:
        raise ConfigError(f"{folder}: the certificates of node {node_id} do not load: {exc}") from None
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(folder: Path, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """TLS 1.3 only, the node's certificate checked against the zone CA (`folder`/ca.crt) and
    its address; the operator certificate `cert`/`key` presented, else the folder's
    `operator` one when this user can read it, else none (a token then); `cert=""`: none."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(_need(folder / CA_CERT, "zone CA certificate"))
    if cert is None:
        own_cert, own_key = folder / f"{OPERATOR}.crt", folder / f"{OPERATOR}.key"
        if own_cert.exists() and _readable(own_key):
            cert, key = str(own_cert), str(own_key)
    if cert:
        try:
            ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{cert}: cannot use this certificate and key: {exc}", path=cert) from None
    return ctx


def _readable(path: Path) -> bool:
    try:
        with path.open("rb"):
            return True
    except OSError:
        return False


def peer_identity(peercert: dict[str, Any] | None) -> tuple[str, str, str] | None:
    """(kind, name, role) of a verified client certificate as `ssl` reports it, or None."""
    if not peercert:
        return None
    fields: dict[str, str] = {}
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            fields.setdefault(key, value)
    kind, name = fields.get("organizationalUnitName", ""), fields.get("commonName", "")
    if kind == "node":
        return kind, name, "admin"
    if kind == "operator" and fields.get("title") in ROLES:
        return kind, name, fields["title"]
    return None
