"""A small certificate authority for the cloud uplink: EC P-256 keys and X.509 certificates.

Owns the PKI folder (ca.key 0600 in a 0700 folder, ca.crt, NAME.key 0600 and NAME.crt per
node, client or broker) and reading certificate validity. Must not print or log a private
key, and must not overwrite a key unless asked to (force).
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshems.adapters.atomic_write import write_atomic
from meshems.core.access import ROLES
from meshems.core.errors import AuthError, ConfigError

Kind = Literal["node", "client", "server", "operator"]
KINDS: tuple[Kind, ...] = ("node", "client", "server", "operator")
#: an operator certificate's role (`core.access.ROLES`) is its subject's title
CA_KEY = "ca.key"
CA_CERT = "ca.crt"
_CN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_SERVER_SANS = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class CertInfo:
    """One certificate of the PKI folder, as `pki show` lists it."""

    name: str
    kind: str
    cn: str
    not_after: str
    days_to_expiry: int
    expired: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def iso_utc(when: datetime) -> str:
    """`2025-01-01T00:00:00Z`: the form every message and listing uses."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _key_usage(ca: bool) -> x509.KeyUsage:
    """Signatures only (EC keys agree, they do not encipher); a CA also signs certs and CRLs."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _make_folder(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)


def init_ca(folder: Path, name: str, days: int = 3650, force: bool = False) -> Path:
    """Create the CA key (0600, folder 0700) and self-signed certificate; returns ca.crt's path.

    Refuses (ConfigError) to replace an existing CA unless `force`: every certificate it
    signed would stop being trusted."""
    if days < 1:
        raise ConfigError(f"pki init: days must be at least 1, got {days}")
    key_path, cert_path = folder / CA_KEY, folder / CA_CERT
    for path in (key_path, cert_path):
        if path.exists() and not force:
            raise ConfigError(
                f"{path} already exists; keep it (every issued certificate chains to it) or pass --force",
                path=str(path),
            )
    _make_folder(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, name), x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)]
    )
    now = datetime.now(UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(ca=True),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_atomic(key_path, _key_pem(key), 0o600)
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _fsync_dir(folder)
    return cert_path


def _load_ca(folder: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key_path, cert_path = folder / CA_KEY, folder / CA_CERT
    try:
        mode = stat.S_IMODE(key_path.stat().st_mode)
        key_pem, cert_pem = key_path.read_bytes(), cert_path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{exc.filename}: no CA in {folder}; create one with: meshems pki init", path=str(folder)
        ) from None
    if mode & 0o077:
        raise ConfigError(
            f"{key_path} has mode {mode:04o}; the CA key must not be readable by group or others: "
            f"chmod 600 {key_path}",
            path=str(key_path),
        )
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{key_path}: not an EC private key", path=str(key_path))
    return key, x509.load_pem_x509_certificate(cert_pem)


def _san(entry: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(entry))
    except ValueError:
        return x509.DNSName(entry)


def issue(
    folder: Path,
    cn: str,
    kind: Kind,
    days: int = 825,
    sans: Iterable[str] = (),
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    force: bool = False,
    role: str | None = None,
) -> tuple[Path, Path]:
    """Issue a certificate signed by the folder's CA; returns (key path, cert path).

    CN = `cn` (a node id, client name, operator name or broker host name). Server certificates
    get SAN DNS localhost and IP 127.0.0.1 plus `sans`, and EKU serverAuth; node certificates
    the same SANs and both serverAuth (the node API) and clientAuth (the broker); client and
    operator certificates EKU clientAuth, an operator's `role` (read, operate, admin) in its
    subject's title. `not_before`/`not_after` override the validity (tests make expired
    certificates with them). Refuses to replace an existing key unless `force`."""
    if kind not in KINDS:
        raise ConfigError(f"pki issue: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not _CN.match(cn) or cn == "ca":
        raise ConfigError(
            f"pki issue: {cn!r} is not a usable name (letters, digits, '_', '.', '-'; not 'ca'); "
            "it is the certificate's CN and its file name"
        )
    if days < 1:
        raise ConfigError(f"pki issue: days must be at least 1, got {days}")
    if (kind == "operator") != (role is not None) or (role is not None and role not in ROLES):
        raise ConfigError(
            f"pki issue: an operator certificate needs a role ({', '.join(ROLES)}), got {role!r}"
        )
    key_path, cert_path = folder / f"{cn}.key", folder / f"{cn}.crt"
    if key_path.exists() and not force:
        raise ConfigError(f"{key_path} already exists; pass --force to replace it", path=str(key_path))
    ca_key, ca_cert = _load_ca(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    start = not_before or now - timedelta(minutes=5)
    end = not_after or now + timedelta(days=days)
    if end <= start:
        raise ConfigError(f"pki issue: not_after {iso_utc(end)} is not after not_before {iso_utc(start)}")
    attributes = [
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kind),
    ]
    if role is not None:
        attributes.append(x509.NameAttribute(NameOID.TITLE, role))
    subject = x509.Name(attributes)
    ekus = {
        "server": [ExtendedKeyUsageOID.SERVER_AUTH],
        "node": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    }.get(kind, [ExtendedKeyUsageOID.CLIENT_AUTH])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(ca=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if kind in ("server", "node"):
        names = list(dict.fromkeys([*_SERVER_SANS, cn, *sans]))
        builder = builder.add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
    elif sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([_san(n) for n in sans]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    write_atomic(key_path, _key_pem(key), 0o600)
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _fsync_dir(folder)
    return key_path, cert_path


def load_cert(path: Path) -> x509.Certificate:
    """Read a PEM certificate; ConfigError naming the file when missing or unreadable."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such certificate file", path=str(path)) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable PEM certificate: {exc}", path=str(path)) from None


def cert_expiry(path: Path) -> datetime:
    """The certificate's notAfter (UTC, timezone-aware)."""
    return load_cert(path).not_valid_after_utc


def require_valid(path: Path, now: datetime) -> x509.Certificate:
    """Raise AuthError (E_AUTH_FAIL) naming the file and the date when the certificate at
    `path` is expired or not yet valid at `now`; returns the certificate otherwise."""
    cert = load_cert(path)
    if now >= cert.not_valid_after_utc:
        raise AuthError(
            f"{path} expired on {iso_utc(cert.not_valid_after_utc)}; issue a new one "
            "(meshems pki issue ... --force) and restart",
            path=str(path),
            not_after=iso_utc(cert.not_valid_after_utc),
        )
    if now < cert.not_valid_before_utc:
        raise AuthError(
            f"{path} is not valid before {iso_utc(cert.not_valid_before_utc)} (is the clock right?)",
            path=str(path),
            not_before=iso_utc(cert.not_valid_before_utc),
        )
    return cert


def _kind(cert: x509.Certificate, name: str) -> str:
    if name == "ca":
        return "ca"
    units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    unit = str(units[0].value) if units else ""
    return unit if unit in KINDS else "?"


def list_certs(folder: Path, now: datetime) -> list[CertInfo]:
    """Every certificate of the folder (the CA first), with its expiry as seen at `now`."""
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no PKI folder; create it with: meshems pki init", path=str(folder))
    paths = sorted(folder.glob("*.crt"), key=lambda p: (p.name != CA_CERT, p.name))
    rows = []
    for path in paths:
        cert = load_cert(path)
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        end = cert.not_valid_after_utc
        left = end - now
        rows.append(
            CertInfo(
                name=path.stem,
                kind=_kind(cert, path.stem),
                cn=str(cns[0].value) if cns else "",
                not_after=iso_utc(end),
                days_to_expiry=left.days,
                expired=now >= end,
            )
        )
    return rows
