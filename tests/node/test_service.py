"""When the node tells systemd it is ready, how often it pings the watchdog, what its
STATUS says, and the refusal to run as root."""

from __future__ import annotations

import pytest

from meshems.adapters.sd_notify import Notifier
from meshems.core.errors import RootError
from meshems.core.node_events import RaftChanged
from meshems.node.service import ROOT_MESSAGE, ServiceNotify, refuse_root


class Recorder(Notifier):
    def __init__(self, watchdog_s: float | None = 1.0, enabled: bool = True) -> None:
        super().__init__("/run/test.sock" if enabled else None, watchdog_s)
        self.sent: list[dict[str, object]] = []

    def notify(self, **fields: object) -> bool:
        if not self.enabled:
            return False
        self.sent.append(fields)
        return True


FOLLOWER = RaftChanged("follower", 2, "n1", True, True)
NO_LEADER = RaftChanged("candidate", 3, None, False, False)


def test_ready_once_joined_and_polled() -> None:
    polled = [False]
    rec = Recorder(watchdog_s=None)
    s = ServiceNotify(rec, lambda: polled[0])
    s.tick(0.0, NO_LEADER)
    assert rec.sent == [{"STATUS": "candidate, term 3, leader none; joining the cluster"}]
    s.tick(0.1, FOLLOWER)  # joined, devices not yet polled: no READY
    waiting = "follower, term 2, leader n1; waiting for the first poll of its devices"
    assert rec.sent[-1] == {"STATUS": waiting}
    polled[0] = True
    s.tick(0.2, FOLLOWER)
    assert rec.sent[-1] == {"READY": 1, "STATUS": "follower, term 2, leader n1"}
    s.tick(0.3, FOLLOWER)  # nothing changed: nothing sent
    s.tick(0.4, RaftChanged("leader", 4, "n2", True, True))
    assert rec.sent[-1] == {"STATUS": "leader, term 4, leader n2"}  # READY only once
    assert sum("READY" in f for f in rec.sent) == 1


def test_not_caught_up_is_not_joined() -> None:
    rec = Recorder(watchdog_s=None)
    s = ServiceNotify(rec, lambda: True)
    s.tick(0.0, RaftChanged("follower", 2, "n1", True, False))
    assert not s.ready_sent and "READY" not in rec.sent[-1]


def test_watchdog_every_half_interval() -> None:
    rec = Recorder(watchdog_s=1.0)
    s = ServiceNotify(rec, lambda: True)
    for i in range(21):  # 2 s of 0.1 s ticks
        s.tick(i * 0.1, FOLLOWER)
    pings = [f for f in rec.sent if "WATCHDOG" in f]
    assert len(pings) == 5  # at 0, 0.5, 1.0, 1.5, 2.0


def test_nothing_without_a_manager() -> None:
    rec = Recorder(enabled=False)
    s = ServiceNotify(rec, lambda: pytest.fail("not asked without a manager"))
    s.tick(0.0, FOLLOWER)
    assert rec.sent == []


def test_root_is_refused_unless_allowed() -> None:
    with pytest.raises(RootError) as err:
        refuse_root(False, euid=0)
    assert err.value.code == "E_ROOT" and err.value.exit_code == 2
    assert err.value.message == ROOT_MESSAGE and "--allow-root" in ROOT_MESSAGE
    refuse_root(True, euid=0)
    refuse_root(False, euid=998)
