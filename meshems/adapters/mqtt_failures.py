"""What a failure of the MQTT uplink means, as a stable code: E_AUTH_FAIL (own certificate
expired or refused, TLS handshake failed, broker said not authorized) or E_UNREACHABLE.

Owns the reading of TLS error texts, paho log lines and MQTT v5 reason codes. No I/O but the
link's own certificate check; the connection itself is `adapters.mqtt_link`.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Protocol

from paho.mqtt.reasoncodes import ReasonCode

from meshems.core.errors import AuthError, MeshemsError, UnreachableError

#: CONNACK / DISCONNECT reason codes that mean "these credentials are refused"
AUTH_REASON_CODES = frozenset({0x86, 0x87, 0x8A, 0x8C})
#: words of an OpenSSL error that mean the handshake failed or the peer refused a certificate
_TLS_MARKERS = (
    "ALERT", "CERTIFICATE", "HANDSHAKE", "VERIFY", "PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL",
    "NO_PROTOCOLS", "WRONG_VERSION", "UNKNOWN_CA",
)  # fmt: skip
#: context["cause"] of an AuthError for a connection that ended between handshake and CONNACK
CLOSED_BEFORE_CONNACK = "closed_before_connack"


class Link(Protocol):
    """What the classification needs of a link: who it is and its own certificate check."""

    client_id: str
    cert: Path

    @property
    def endpoint(self) -> str: ...

    def check_certificate(self) -> None: ...


def auth_error(link: Link, detail: str, cause: str = "refused") -> AuthError:
    """E_AUTH_FAIL naming broker, client and certificate; the own certificate's expiry when
    that is the cause (it may have expired since the connection started)."""
    try:
        link.check_certificate()
    except AuthError as exc:  # the own certificate expired meanwhile: the precise cause
        return exc
    except MeshemsError:
        pass
    return AuthError(
        f"broker {link.endpoint} refused {link.client_id} ({link.cert}): {detail}",
        endpoint=link.endpoint,
        cert=str(link.cert),
        cause=cause,
    )


def classify(link: Link, failure: BaseException | str, before_connack: bool) -> MeshemsError:
    """Map an exception or an error text to a stable code.

    E_AUTH_FAIL: a TLS error naming a handshake, protocol or certificate problem, or
    any TLS error or end of connection after the handshake but before the CONNACK (with
    TLS 1.3 that is how a broker refuses a client certificate: an alert, or a reset that
    swallowed it). E_UNREACHABLE: everything else of the network."""
    detail = str(failure) or type(failure).__name__
    tls_failure = isinstance(failure, ssl.SSLError) or "SSL" in detail.upper()
    if tls_failure and any(m in detail.upper() for m in _TLS_MARKERS):
        return auth_error(link, f"TLS handshake failed: {detail}")
    ended_after_handshake = tls_failure or not isinstance(failure, OSError)  # a text: paho's log
    if before_connack and ended_after_handshake:
        return auth_error(
            link,
            f"the connection ended before the CONNACK ({detail}); with TLS 1.3 this is how a "
            "broker refuses a client certificate (see its log)",
            cause=CLOSED_BEFORE_CONNACK,
        )
    return UnreachableError(f"broker {link.endpoint} unreachable: {detail}", endpoint=link.endpoint)


def reason_error(link: Link, reason: ReasonCode, what: str) -> MeshemsError:
    """A CONNACK or DISCONNECT reason code: E_AUTH_FAIL for the credential codes, else E_UNREACHABLE."""
    text = f"{what} {reason} (0x{reason.value:02X})"
    if reason.value in AUTH_REASON_CODES:
        return auth_error(link, text)
    return UnreachableError(f"broker {link.endpoint}: {text}", endpoint=link.endpoint)
