"""A rendered overlay config is accepted by `wg setconf` on a real wireguard-go interface in a
network namespace (root only; the namespace, interface and process are removed afterwards)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from meshems.adapters.wireguard import keygen, render, strip_wg_quick
from tests.adapters.test_wireguard import overlay_config

pytestmark = pytest.mark.lab


@pytest.mark.skipif(shutil.which("wireguard-go") is None, reason="wireguard-go is installed by scripts/setup")
def test_wg_setconf_accepts_the_rendered_config(tmp_path: Path) -> None:
    cfg = overlay_config(tmp_path)
    for n in ("n1", "n2", "n3"):
        keygen(cfg, n)
    conf = tmp_path / "wg.conf"
    conf.write_text(strip_wg_quick(render(cfg, "n1")))
    tag = uuid.uuid4().hex[:6]
    ns, ifname = f"mtest{tag}", f"mwg{tag}"
    env = {**os.environ, "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
    try:
        subprocess.run(
            ["ip", "netns", "exec", ns, "wireguard-go", ifname],
            check=True,
            timeout=20,
            env=env,
            capture_output=True,
        )
        for _ in range(100):
            if Path(f"/var/run/wireguard/{ifname}.sock").exists():
                break
            time.sleep(0.05)
        out = subprocess.run(
            ["ip", "netns", "exec", ns, "wg", "setconf", ifname, str(conf)],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert out.returncode == 0, out.stderr
        shown = subprocess.run(
            ["ip", "netns", "exec", ns, "wg", "show", ifname, "peers"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.split()
        expected = {Path(tmp_path / "keys" / f"{n}.pub").read_text().strip() for n in ("n2", "n3")}
        assert set(shown) == expected
    finally:
        subprocess.run(
            ["ip", "netns", "exec", ns, "ip", "link", "del", ifname], capture_output=True, timeout=10
        )
        subprocess.run(["pkill", "-f", f"wireguard-go {ifname}"], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        Path(f"/var/run/wireguard/{ifname}.sock").unlink(missing_ok=True)
