"""Tests for `meshems.adapters.pki` (the uplink's certificate authority); `meshems pki` is
tested in tests/cli/test_pki.py.

Keys are 0600 in a 0700 folder, certificates carry the CN, kind and extended key usage the
broker checks, expiry is listed and detected, and nothing is overwritten unasked.
"""

from __future__ import annotations

import ipaddress
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshems.adapters import pki
from meshems.core.errors import AuthError, ConfigError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    folder = tmp_path / "pki"
    pki.init_ca(folder, "test-ca")
    return folder


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_init_ca_modes_and_a_p256_ca_certificate(ca: Path) -> None:
    assert mode(ca) == 0o700
    assert mode(ca / "ca.key") == 0o600
    cert = load(ca / "ca.crt")
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "test-ca"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    assert not list(ca.glob("*.tmp"))


def test_init_ca_refuses_to_overwrite_and_names_the_file(ca: Path) -> None:
    before = (ca / "ca.key").read_bytes()
    with pytest.raises(ConfigError) as info:
        pki.init_ca(ca, "again")
    assert str(ca / "ca.key") in str(info.value)
    assert info.value.code == "E_CONFIG"
    assert (ca / "ca.key").read_bytes() == before
    pki.init_ca(ca, "again", force=True)
    assert (ca / "ca.key").read_bytes() != before


def test_node_certificate_cn_eku_key_mode_and_chain(ca: Path) -> None:
    key, crt = pki.issue(ca, "n1", "node")
    assert (key, crt) == (ca / "n1.key", ca / "n1.crt")
    assert mode(key) == 0o600
    cert = load(crt)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "n1"
    assert eku(cert) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]  # API + broker
    cert.verify_directly_issued_by(load(ca / "ca.crt"))
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert 824 <= days <= 825


def test_an_operator_certificate_carries_its_role(ca: Path) -> None:
    _, crt = pki.issue(ca, "alice", "operator", role="operate")
    cert = load(crt)
    assert cert.subject.get_attributes_for_oid(NameOID.TITLE)[0].value == "operate"
    assert eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    for kind, role in (("operator", None), ("operator", "root"), ("client", "read")):
        with pytest.raises(ConfigError, match="operator certificate needs a role"):
            pki.issue(ca, "bob", kind, role=role)  # type: ignore[arg-type]


def test_server_certificate_names_localhost_and_loopback(ca: Path) -> None:
    _, crt = pki.issue(ca, "broker", "server", sans=("mqtt.example.net", "10.0.0.7"))
    cert = load(crt)
    assert eku(cert) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "broker", "mqtt.example.net"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.0.0.7"),
    }


def test_issue_refuses_to_overwrite_a_key(ca: Path) -> None:
    key, _ = pki.issue(ca, "cloud-reader", "client")
    with pytest.raises(ConfigError, match=r"cloud-reader\.key already exists"):
        pki.issue(ca, "cloud-reader", "client")
    before = key.read_bytes()
    pki.issue(ca, "cloud-reader", "client", force=True)
    assert key.read_bytes() != before


def test_issue_without_a_ca_and_with_a_bad_name(tmp_path: Path, ca: Path) -> None:
    with pytest.raises(ConfigError, match="pki init"):
        pki.issue(tmp_path / "empty", "n1", "node")
    for bad in ("../n1", "ca", "", "a/b"):
        with pytest.raises(ConfigError, match="not a usable name"):
            pki.issue(ca, bad, "node")


def test_list_certs_expiry_and_expired_detection(ca: Path) -> None:
    now = datetime.now(UTC)
    pki.issue(ca, "n1", "node", days=90)
    pki.issue(ca, "old", "node", not_before=now - timedelta(days=60), not_after=now - timedelta(days=2))
    pki.issue(ca, "broker", "server")
    rows = {r.name: r for r in pki.list_certs(ca, now)}
    assert next(iter(rows)) == "ca"
    assert rows["ca"].kind == "ca"
    assert (rows["n1"].kind, rows["n1"].cn, rows["n1"].expired) == ("node", "n1", False)
    assert rows["n1"].days_to_expiry in (89, 90)
    assert rows["broker"].kind == "server"
    old = rows["old"]
    assert old.expired and old.days_to_expiry <= -2
    assert old.not_after == pki.iso_utc(now - timedelta(days=2))
    assert pki.cert_expiry(ca / "old.crt") == load(ca / "old.crt").not_valid_after_utc


def test_require_valid_names_the_file_and_the_date(ca: Path) -> None:
    expired_at = datetime(2025, 1, 1, tzinfo=UTC)
    _, crt = pki.issue(ca, "old", "node", not_before=expired_at - timedelta(days=30), not_after=expired_at)
    with pytest.raises(AuthError) as info:
        pki.require_valid(crt, datetime.now(UTC))
    assert str(info.value).startswith(f"E_AUTH_FAIL: {crt} expired on 2025-01-01T00:00:00Z")
    pki.require_valid(crt, expired_at - timedelta(days=1))  # valid back then
    with pytest.raises(AuthError, match="not valid before"):
        pki.require_valid(crt, expired_at - timedelta(days=31))
    with pytest.raises(ConfigError, match="no such certificate"):
        pki.require_valid(ca / "missing.crt", datetime.now(UTC))


def test_a_group_readable_ca_key_is_refused(ca: Path) -> None:
    (ca / "ca.key").chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        pki.issue(ca, "n1", "node")
