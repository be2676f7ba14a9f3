"""The notify protocol against a real datagram socket, as systemd listens: path and abstract
addresses, the watchdog interval and its PID check, silence without NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshems.adapters.sd_notify import Notifier, encode, socket_address, watchdog_interval_s


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(2.0)
    try:
        yield sock, path
    finally:
        sock.close()


def test_ready_and_status_arrive_as_one_datagram(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = Notifier.from_env({"NOTIFY_SOCKET": path}, pid=os.getpid())
    assert n.enabled
    assert n.notify(READY=1, status="leader, term 3\nleader n1")
    assert sock.recv(4096) == b"READY=1\nSTATUS=leader, term 3 leader n1"
    assert n.notify(WATCHDOG=1)
    assert sock.recv(4096) == b"WATCHDOG=1"
    n.close()


def test_abstract_namespace_address() -> None:
    name = f"meshems-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2.0)
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert n.notify(READY=1)
        assert sock.recv(4096) == b"READY=1"
        n.close()
    finally:
        sock.close()


def test_no_socket_means_no_op() -> None:
    n = Notifier.from_env({"WATCHDOG_USEC": "30000000"})
    assert not n.enabled
    assert n.watchdog_s is None  # no manager to ping
    assert n.notify(READY=1) is False


def test_a_vanished_manager_is_not_an_error(tmp_path: Path) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.enabled and n.notify(WATCHDOG=1) is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "4242"}, 0.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4243"}, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval_s(env, pid=4242) == expected


def test_addresses_and_encoding() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@x") == b"\0x"
    assert socket_address("") is None and socket_address("relative") is None and socket_address("@") is None
    assert encode({"ready": 1, "STATUS": "a\nb"}) == b"READY=1\nSTATUS=a b"
