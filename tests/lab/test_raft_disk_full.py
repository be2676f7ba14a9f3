"""A node whose data folder runs out of space (root: a real tmpfs), with real node processes.

Found by an attack probe: on a 2 MB tmpfs a catching-up node died of SIGBUS (pysyncobj's
mmap journal), and restarted there it logged 55 ENOSPC tracebacks and a misleading
E_QUORUM. Now: E_DISK_FULL naming the path and the free space, a clean exit (code 1), no
acknowledgement of an entry it could not journal, a refusal to join while the disk stays
full, and a clean catch-up once there is room.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from meshems.adapters.config_file import load_config
from meshems.adapters.journal import check_journal
from meshems.adapters.secret import init_secret, read_secret
from meshems.core import commands
from meshems.ops.supervisor import LocalCluster
from tests.conftest import write_config
from tests.integration.test_cluster import status_of, wait_until

pytestmark = pytest.mark.lab
MIB = 1 << 20


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_a_full_disk_stops_the_node_cleanly_and_it_catches_up_once_there_is_room(tmp_path: Path) -> None:
    path = write_config(tmp_path, nodes=3, min_free_mib=0)
    cfg = load_config(path)
    init_secret(cfg.secret_path)
    c = LocalCluster(cfg, str(path), read_secret(cfg.secret_path), tmp_path / "logs")
    small = cfg.data_dir("n3")
    small.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(small)], check=True)
    try:
        c.start("n1")
        c.start("n2")
        c.wait_leader()
        wait_until(lambda: status_of(c, "n1")["devices"] >= 2, what="declarations")

        # a history of more than 1 MiB of entries, while n3 is away: policies with every price
        # list at its longest (~5.4 KiB an entry), so 250 proposals instead of thousands of
        # small setpoints
        start_s = 1_800_000_000.0 - 1_800_000_000 % 900

        def write(i: int) -> bool:
            values = {
                "import_price": [0.1 + i * 1e-4] * 96,
                "export_price": [0.05 + k * 1e-4 for k in range(96)],
                "price_series_start_s": start_s,
                "import_price_series": [0.2 + k * 1e-4 for k in range(192)],
                "export_price_series": [0.03 + k * 1e-4 for k in range(192)],
            }
            data = commands.encode("set_policy", f"h-{uuid.uuid4().hex}", values=values)
            assert len(data) > 5 * 1024, len(data)
            return bool(c.client.propose(data, deadline_s=30)["ok"])

        with ThreadPoolExecutor(16) as pool:  # many in flight: a journal sync serves many (raft.fsync)
            assert all(pool.map(write, range(250)))
        # n3's folder has room for its first 1 MiB of journal and not for the next step
        filler = small / "filler"
        with open(filler, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, free_bytes(small) - int(1.5 * MIB))
        proc = c.start("n3")
        leader = c.wait_leader()
        acked = 0  # the most the leader saw n3 acknowledge
        end = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < end:
            acked = max(acked, status_of(c, leader)["match_index"].get("n3", 0))
            time.sleep(0.05)
        assert proc.wait(timeout=5) == 1  # a clean exit, not SIGBUS (135) or a hang
        log = c.log_text("n3")
        assert "E_DISK_FULL" in log and "KiB free" in log and str(small) in log
        assert "Traceback" not in log
        journal = check_journal(small / "raft.journal")
        assert journal is not None and acked <= journal.last_index, (acked, journal)
        # the cluster goes on without it
        assert c.client.propose(commands.encode("set_setpoint", "after", device_id="n2-bat", kw=2.0,
                                                source="test"))["ok"]  # fmt: skip
        # restarted on the still-full disk, with the default floor of 16 MiB: it refuses to join
        config2 = tmp_path / "floor.yaml"
        config2.write_text(path.read_text().replace("min_free_mib: 0", "min_free_mib: 16"))
        refused = subprocess.run([*c.procs["n3"].args[:3], "node", "run", "--config", str(config2),
                                  "--node", "n3", "--allow-root"], capture_output=True, text=True,
                                 timeout=60)  # fmt: skip
        assert refused.returncode == 1
        assert "E_DISK_FULL" in refused.stderr and "min_free_mib" in refused.stderr
        # room again: it starts cleanly and catches up to the same state
        filler.unlink()
        c.stop("n3")
        c.start("n3")
        c.wait_api("n3")
        wait_until(lambda: status_of(c, "n3")["applied_index"] >= status_of(c, "n1")["commit_index"] - 5,
                   60, "n3 catches up")  # fmt: skip
        wait_until(lambda: len({status_of(c, n)["state_hash"] for n in ("n1", "n2", "n3")}) == 1, 30,
                   "equal state hashes")  # fmt: skip
        assert "Traceback" not in c.log_text("n3")
    finally:
        c.stop_all()
        subprocess.run(["umount", "-l", str(small)], check=False)
