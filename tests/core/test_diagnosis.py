"""The rules of `meshems doctor`: thresholds, statuses, hints, rendering and exit code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from meshems.core import diagnosis as dx

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_a_key_readable_by_others_fails_with_the_chmod_to_run() -> None:
    assert dx.file_mode("secret", "/s", 0o100600).status == "ok"
    assert dx.file_mode("secret", "/s", 0o100400).status == "ok"
    bad = dx.file_mode("secret", "/s", 0o100644)
    assert bad.status == "fail" and "0644" in bad.detail and bad.hint == "chmod 600 /s"
    assert dx.file_mode("secret", "/s", 0o100640).status == "fail"


@pytest.mark.parametrize(
    ("start", "end", "status", "words"),
    [
        (-10, 365, "ok", "valid until"),
        (-10, 29, "warn", "expires in 29 days"),
        (-10, 31, "ok", "valid until"),
        (-400, -1, "fail", "expired on"),
        (1, 365, "fail", "not valid before"),
    ],
)
def test_certificate_validity_against_the_time_passed_in(
    start: int, end: int, status: str, words: str
) -> None:
    c = dx.cert_validity("cert n1", "n1.crt", NOW + timedelta(days=start), NOW + timedelta(days=end), NOW)
    assert c.status == status and words in c.detail
    assert (c.hint != "") == (status != "ok")
    if words == "not valid before":
        assert "clock" in c.hint


def test_a_certificate_expiring_now_is_expired() -> None:
    assert dx.cert_validity("c", "p", NOW - timedelta(days=1), NOW, NOW).status == "fail"


def test_cn_must_be_the_node_id() -> None:
    assert dx.cert_cn("cn", "n1.crt", "n1", "n1").status == "ok"
    bad = dx.cert_cn("cn", "n1.crt", "n9", "n1")
    assert bad.status == "fail" and "'n9'" in bad.detail and "pki issue n1" in bad.hint


def test_chain_problem_fails() -> None:
    assert dx.cert_chain("c", "n1.crt", None, "ca.crt").status == "ok"
    assert dx.cert_chain("c", "n1.crt", "bad signature", "ca.crt").status == "fail"


@pytest.mark.parametrize(("ms", "status"), [(0.4, "ok"), (50.0, "ok"), (50.1, "warn"), (None, "fail")])
def test_rtt_over_50_ms_warns_and_no_answer_fails(ms: float | None, status: str) -> None:
    c = dx.rtt("n2 raft", "127.0.0.1:1", ms, "Connection refused")
    assert c.status == status
    if ms is None:
        assert "Connection refused" in c.detail and "running" in c.hint


@pytest.mark.parametrize(("offset", "status"), [(0.0, "ok"), (0.5, "ok"), (-0.51, "warn"), (2.0, "warn")])
def test_clock_offset_over_half_a_second_warns(offset: float, status: str) -> None:
    assert dx.clock_offset("clock", offset).status == status


@pytest.mark.parametrize(("response", "status"), [(0.01, "ok"), (0.25, "ok"), (0.26, "warn"), (0.6, "warn")])
def test_a_device_answering_in_over_half_its_timeout_warns(response: float, status: str) -> None:
    c = dx.response_time("device m", "h:1 unit 1", response, 0.5)
    assert c.status == status
    if status == "warn":
        assert "timeout_s" in c.hint


@pytest.mark.parametrize(("free", "status"), [(100.0, "ok"), (31.0, "warn"), (15.9, "fail")])
def test_free_space_against_min_free_mib(free: float, status: str) -> None:
    assert dx.free_space("data", "/d", free, 16).status == status


def test_chrony_and_time_sync() -> None:
    assert dx.chrony_offset_s("0.000012 seconds fast of NTP time") == pytest.approx(0.000012)
    assert dx.chrony_offset_s("0.7 seconds slow of NTP time") == pytest.approx(-0.7)
    assert dx.chrony_offset_s("") is None
    assert dx.time_sync("t", "chrony", True, 0.001, "Normal").status == "ok"
    assert dx.time_sync("t", "chrony", True, -0.7, "Normal").status == "warn"
    assert dx.time_sync("t", "timesyncd", False, None, "no").status == "warn"


def test_warnings_do_not_fail_and_render_shows_hints() -> None:
    checks = [dx.ok("a", "fine"), dx.warn("bb", "slow", "look")]
    assert dx.exit_code(checks) == 0
    lines = dx.render(checks)
    assert lines[0] == "✓ a   fine" and lines[1] == "! bb  slow" and lines[2] == "    → look"
    assert lines[-1] == "1 ok, 1 warnings, 0 failed"
    checks.append(dx.fail("c", "down", "start it"))
    assert dx.exit_code(checks) == 1
    assert "✗ c   down" in dx.render(checks)


def test_poll_errors_over_five_percent_warn_with_the_commonest_errors_hint() -> None:
    assert dx.poll_errors("p", 0, {}).detail == "not polled yet"
    assert dx.poll_errors("p", 100, {"timeouts": 5, "crc_errors": 0}).status == "ok"
    bad = dx.poll_errors("p", 100, {"timeouts": 1, "crc_errors": 6})
    assert bad.status == "warn" and "crc_errors 6" in bad.detail and "termination" in bad.hint


def test_an_outbox_older_than_15_minutes_warns() -> None:
    assert dx.outbox("outbox", 0, None).status == "ok"
    assert dx.outbox("outbox", 10, 899.0).status == "ok"
    assert dx.outbox("outbox", 10, 901.0).status == "warn"


def test_a_wireguard_peer_without_a_recent_handshake_fails() -> None:
    assert dx.handshake("o", "10.0.0.2:51820", 20.0, 180.0).status == "ok"
    assert dx.handshake("o", "10.0.0.2:51820", 181.0, 180.0).status == "fail"
    never = dx.handshake("o", "", None, 180.0)
    assert never.status == "fail" and "no handshake" in never.detail and "listen_port" in never.hint
