"""A site blackout in a real 3-gateway lab (namespaces, wireguard-go, node daemons, each
data folder on its own lossyfs): every acknowledged write survives a power cut of all three
gateways at once with `raft.fsync: true`; with `raft.fsync: false` the power cut drops the
unsynced journals and the term/vote file (renamed into place unsynced, it comes back empty),
so every node refuses to start with E_JOURNAL_CORRUPT instead of forgetting its vote (so
the fault really drops what was not synced). Root and /dev/fuse; `lab.down` in `finally`."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from meshems.core import commands
from meshems.lab.gateways import Lab
from meshems.lab.powerloss import lossy_mounts
from tests.integration.test_cluster import wait_until
from tests.lab.test_lab_cluster import _rows, _setpoints
from tests.lab.test_lossyfs import needs_fuse

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures(needs_fuse.__name__)]


@pytest.mark.parametrize("fsync", [True, False], ids=["fsync", "nofsync"])
def test_a_blackout_of_every_gateway_keeps_acknowledged_writes_only_when_synced(
    tmp_path: Path, fsync: bool
) -> None:
    lab = Lab.create(tmp_path / "lab", nodes=3, sims=False, progress=lambda *a: None, blackout=True,
                     fsync=fsync)  # fmt: skip
    tag = lab.plan.tag
    try:
        assert len(lossy_mounts(f"lossyfs-{tag}-")) == 3
        lab.wait_leader(30)

        # the nodes declare their devices just after the election: wait until a write to n2's
        # battery commits (on whoever leads; an election in between only delays it)
        def n2_declared() -> bool:
            rid = uuid.uuid4().hex
            probe = commands.encode("set_setpoint", rid, device_id="n2-bat", kw=-1.0, source="test")
            if lab.client.propose(probe, deadline_s=20)["ok"]:
                return True
            time.sleep(0.2)
            return False

        wait_until(n2_declared, 60, "n2 to declare n2-bat")
        for i in range(10):
            # a leader can lose its term between two writes on a loaded machine: the client
            # retries the same bytes (request id) on whoever leads next, applied once
            data = commands.encode("set_setpoint", f"blackout-{tag}-{i}", device_id="n2-bat", kw=float(i),
                                   source="test")  # fmt: skip
            body = lab.client.propose(data, deadline_s=30)
            assert body["ok"], body
        acked, leader = body["index"], lab.wait_leader(30)
        assert _setpoints(lab, leader)["n2-bat"] == 9.0
        dropped = lab.blackout(list(lab.plan.nodes))
        held = sum(d["bytes"] for d in dropped.values())
        if fsync:
            leader = lab.wait_leader(30)

            # a new leader applies the old log only once its own first entry commits: read
            # after it has applied through the last acknowledged write (a lost one is then gone)
            def caught_up() -> dict | None:
                row = _rows(lab)[leader]
                return row if row.get("applied_index", 0) >= acked else None

            row = wait_until(caught_up, 15, f"{leader} to apply through index {acked}")
            assert _setpoints(lab, leader).get("n2-bat") == 9.0, (dropped, row)
            return
        assert all(d["bytes"] > 0 for d in dropped.values()), dropped
        end = time.monotonic() + 20
        while time.monotonic() < end and any(lab.running(n) for n in lab.plan.nodes):
            time.sleep(0.1)
        for n in lab.plan.nodes:
            assert not lab.running(n), n
            tail = lab.log_tail(n, 3000)
            assert "E_JOURNAL_CORRUPT" in tail and "raft.journal.meta" in tail, tail
        assert held > 0
    finally:
        lab.down()
    assert not lossy_mounts(f"lossyfs-{tag}-")
