"""The rules of `meshems doctor`: what a probed fact means (ok, warn, fail) and the hint
that fixes it, and the checklist's rendering and exit code.

Pure: no I/O, no clock (the time is passed in); the probing is `ops.doctor`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from datetime import datetime

Status = Literal["ok", "warn", "fail"]
MARKS: dict[str, str] = {"ok": "✓", "warn": "!", "fail": "✗"}
#: a certificate expiring within this many days is a warning
CERT_WARN_DAYS = 30
#: a round trip to a peer above this is a warning
RTT_WARN_MS = 50.0
#: a clock offset above this is a warning (TLS and Raft leases start to break)
CLOCK_WARN_S = 0.5
#: a device answering in more than this share of its timeout is a warning
RESPONSE_WARN_SHARE = 0.5
#: a device whose polls failed more often than this share is a warning
POLL_ERROR_WARN_SHARE = 0.05
#: telemetry waiting in the outbox longer than this is a warning (the alert rule's 15 min)
OUTBOX_WARN_AGE_S = 900.0
_ERROR_HINTS = {
    "timeouts": "a slow converter or a wrong unit_id: raise timeout_s, check the wiring",
    "crc_errors": "line noise or wrong baud/parity: shielded twisted pair, 120 Ω termination, grounding",
    "frame_errors": "a second master on the line or a wrong profile: check the bus and the profile",
    "connect_errors": "the device or its converter drops the connection: check power and network",
    "exceptions": "the device refuses some reads: check the profile's addresses against its manual",
}


@dataclass(frozen=True)
class Check:
    """One line of the checklist: `hint` says what to do (empty when ok)."""

    name: str
    status: Status
    detail: str
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def warn(name: str, detail: str, hint: str) -> Check:
    return Check(name, "warn", detail, hint)


def fail(name: str, detail: str, hint: str) -> Check:
    return Check(name, "fail", detail, hint)


def file_mode(name: str, path: str, mode: int, want: int = 0o600) -> Check:
    """A secret or private key must not be readable by group or others (mode bits beyond
    `want` fail)."""
    if mode & 0o777 & ~want:
        return fail(
            name, f"{path} has mode {mode & 0o777:04o}, should be {want:04o}", f"chmod {want:o} {path}"
        )
    return ok(name, f"{path} {mode & 0o777:04o}")


def cert_validity(name: str, path: str, not_before: datetime, not_after: datetime, now: datetime) -> Check:
    """Expired or not yet valid (the clock?) fails; expiring within CERT_WARN_DAYS warns."""
    renew = f"meshems pki issue ... --force (renew {path}) and restart the node"
    if now >= not_after:
        return fail(name, f"{path} expired on {not_after:%Y-%m-%d %H:%M}Z", renew)
    if now < not_before:
        return fail(
            name,
            f"{path} is not valid before {not_before:%Y-%m-%d %H:%M:%S}Z (now {now:%Y-%m-%d %H:%M:%S}Z)",
            "the clock is behind: check NTP (chronyc tracking / timedatectl), or reissue the certificate",
        )
    days = (not_after - now).days
    if days < CERT_WARN_DAYS:
        return warn(name, f"{path} expires in {days} days ({not_after:%Y-%m-%d})", renew)
    return ok(name, f"{path} valid until {not_after:%Y-%m-%d} ({days} days)")


def cert_cn(name: str, path: str, cn: str, node_id: str) -> Check:
    """A node's certificate must carry its node id as CN (peers and the broker check it)."""
    if cn != node_id:
        return fail(
            name,
            f"{path} has CN {cn!r}, not the node id {node_id!r}",
            f"meshems pki issue {node_id} --kind node --force (in the TLS folder) and restart",
        )
    return ok(name, f"CN {cn}")


def cert_chain(name: str, path: str, problem: str | None, ca_path: str) -> Check:
    """`problem` is why the certificate does not verify against the zone CA, or None."""
    if problem:
        return fail(
            name,
            f"{path} does not chain to {ca_path}: {problem}",
            "reissue it from this zone's CA (meshems pki issue ... --force) or copy the right ca.crt",
        )
    return ok(name, f"signed by {ca_path}")


def rtt(name: str, endpoint: str, rtt_ms: float | None, error: str = "") -> Check:
    """A peer port: unreachable fails; a round trip above RTT_WARN_MS warns."""
    if rtt_ms is None:
        return fail(
            name,
            f"{endpoint}: {error or 'no answer'}",
            "is the node running (systemctl status meshems-node)? check the firewall "
            "(meshems firewall check) and the overlay (meshems overlay status)",
        )
    if rtt_ms > RTT_WARN_MS:
        return warn(
            name,
            f"{endpoint} answers in {rtt_ms:.1f} ms (> {RTT_WARN_MS:g} ms)",
            "investigate the link and the node's CPU load (top); Raft timeouts assume a LAN",
        )
    return ok(name, f"{endpoint} {rtt_ms:.1f} ms")


def clock_offset(name: str, offset_s: float) -> Check:
    """A clock offset to a peer (or to NTP) above CLOCK_WARN_S warns."""
    if abs(offset_s) > CLOCK_WARN_S:
        return warn(
            name,
            f"clock offset {offset_s:+.3f} s (> {CLOCK_WARN_S:g} s)",
            "synchronise the clocks (chrony/systemd-timesyncd); TLS fails once they drift further",
        )
    return ok(name, f"clock offset {offset_s:+.3f} s")


def response_time(name: str, where: str, response_s: float, timeout_s: float) -> Check:
    """A device answering in more than RESPONSE_WARN_SHARE of its timeout warns: a slower
    answer (a busy serial converter) is one step from E_TIMEOUT."""
    ms, limit_ms = response_s * 1000, timeout_s * 1000
    if response_s > timeout_s * RESPONSE_WARN_SHARE:
        return warn(
            name,
            f"{where} answered in {ms:.0f} ms, timeout {limit_ms:.0f} ms",
            f"raise the device's timeout_s (e.g. {max(timeout_s * 2, response_s * 3):.1f}) or its bus's",
        )
    return ok(name, f"{where} answered in {ms:.0f} ms (timeout {limit_ms:.0f} ms)")


def poll_errors(name: str, polls: int, errors: dict[str, int]) -> Check:
    """A node's error counters for one device (`timeouts`, `crc_errors`, ...): failing more
    than POLL_ERROR_WARN_SHARE of its polls warns, with the hint of the commonest error."""
    total = sum(errors.values())
    if polls <= 0:
        return ok(name, "not polled yet")
    listed = ", ".join(f"{k} {v}" for k, v in sorted(errors.items()) if v)
    if total / polls > POLL_ERROR_WARN_SHARE:
        worst = max(errors, key=lambda k: errors[k])
        return warn(
            name, f"{total} errors in {polls} polls ({listed})", _ERROR_HINTS.get(worst, "check the bus")
        )
    return ok(name, f"{total} errors in {polls} polls" + (f" ({listed})" if listed else ""))


def handshake(name: str, endpoint: str, age_s: float | None, max_age_s: float) -> Check:
    """A WireGuard peer: no handshake yet fails, one older than overlay.handshake_max_age_s
    fails too (the tunnel carries Raft and the API, so the peer is cut off)."""
    hint = "check the peer's overlay_endpoint, UDP to its listen_port and its key (meshems overlay status)"
    if age_s is None:
        return fail(name, f"{endpoint or 'no endpoint'}: no handshake yet", hint)
    if age_s > max_age_s:
        return fail(name, f"{endpoint}: last handshake {age_s:.0f} s ago (> {max_age_s:g} s)", hint)
    return ok(name, f"{endpoint}: handshake {age_s:.0f} s ago")


def outbox(name: str, records: int, oldest_age_s: float | None) -> Check:
    """The cloud outbox: telemetry older than OUTBOX_WARN_AGE_S is not reaching the broker."""
    if oldest_age_s is not None and oldest_age_s > OUTBOX_WARN_AGE_S:
        return warn(
            name,
            f"{records} records waiting, the oldest for {oldest_age_s / 60:.0f} min",
            "the uplink is down or throttled: see the broker checks and meshems status (cloud)",
        )
    return ok(name, f"{records} records waiting")


def free_space(name: str, path: str, free_mib: float, min_free_mib: int) -> Check:
    """Below raft.min_free_mib the node stops accepting writes: fail; below twice it: warn."""
    hint = f"free space on the file system of {path} (the journals need {min_free_mib} MiB)"
    if free_mib < min_free_mib:
        return fail(name, f"{path}: {free_mib:.0f} MiB free, below raft.min_free_mib {min_free_mib}", hint)
    if free_mib < 2 * min_free_mib:
        return warn(name, f"{path}: {free_mib:.0f} MiB free, near raft.min_free_mib {min_free_mib}", hint)
    return ok(name, f"{path}: {free_mib:.0f} MiB free")


def chrony_offset_s(system_time: str) -> float | None:
    """chrony's "System time" line ("0.000012 seconds fast of NTP time") as seconds ahead
    of NTP (negative: slow), or None when it does not read that way."""
    parts = system_time.split()
    try:
        value = float(parts[0])
    except (IndexError, ValueError):
        return None
    return -value if "slow" in parts else value


def time_sync(name: str, source: str, synchronised: bool, offset_s: float | None, state: str) -> Check:
    """The local clock against NTP: not synchronised warns, as does an offset over CLOCK_WARN_S."""
    if not synchronised:
        return warn(
            name,
            f"{source}: not synchronised ({state})",
            "check the NTP servers are reachable (UDP 123): chronyc sources / timedatectl timesync-status",
        )
    if offset_s is not None:
        check = clock_offset(name, offset_s)
        return Check(name, check.status, f"{source}: {check.detail}", check.hint)
    return ok(name, f"{source}: synchronised")


def failed(checks: Iterable[Check]) -> bool:
    return any(c.status == "fail" for c in checks)


def exit_code(checks: Iterable[Check]) -> int:
    """0 when nothing failed (warnings do not fail), 1 otherwise."""
    return 1 if failed(checks) else 0


def summary(checks: Sequence[Check]) -> str:
    counts = {s: sum(c.status == s for c in checks) for s in MARKS}
    return f"{counts['ok']} ok, {counts['warn']} warnings, {counts['fail']} failed"


def render(checks: Sequence[Check]) -> list[str]:
    """The checklist: `✓ name  detail`, and under each warning and failure `    → hint`."""
    width = max((len(c.name) for c in checks), default=0)
    lines = []
    for c in checks:
        lines.append(f"{MARKS[c.status]} {c.name:<{width}}  {c.detail}")
        if c.hint and c.status != "ok":
            lines.append(f"    → {c.hint}")
    lines.append(summary(checks))
    return lines
