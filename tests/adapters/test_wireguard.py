"""Overlay keys and configs: 0600 private keys, public keys that `wg pubkey` agrees with, and
a rendered config with every peer."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from meshems.adapters.config_file import load_config
from meshems.adapters.wireguard import generate_keypair, keygen, public_from_private, render, strip_wg_quick
from meshems.core.config import ClusterConfig
from meshems.core.errors import ConfigError
from tests.conftest import write_config


def overlay_config(tmp_path: Path) -> ClusterConfig:
    path = write_config(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["overlay"] = {"key_dir": "keys", "listen_port": 51820}
    for i, n in enumerate(doc["nodes"]):
        n["overlay_address"] = f"10.77.0.{i + 1}"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_config(path)


def test_keygen_writes_a_0600_private_key_and_its_public_key(tmp_path: Path) -> None:
    cfg = overlay_config(tmp_path)
    path, public = keygen(cfg, "n1")
    assert path.stat().st_mode & 0o777 == 0o600
    assert public_from_private(path.read_text().strip()) == public
    with pytest.raises(ConfigError, match="exists"):
        keygen(cfg, "n1")


@pytest.mark.skipif(shutil.which("wg") is None, reason="wireguard-tools is installed by scripts/setup")
def test_public_keys_match_wg_pubkey() -> None:
    for _ in range(3):
        private, public = generate_keypair()
        out = subprocess.run(
            ["wg", "pubkey"], input=private + "\n", capture_output=True, text=True, timeout=10
        )
        assert out.stdout.strip() == public


def test_render_lists_every_peer(tmp_path: Path) -> None:
    cfg = overlay_config(tmp_path)
    for n in ("n1", "n2", "n3"):
        keygen(cfg, n)
    text = render(cfg, "n2")
    assert "Address = 10.77.0.2/24" in text and "ListenPort = 51820" in text
    assert text.count("[Peer]") == 2
    assert "AllowedIPs = 10.77.0.1/32" in text and "AllowedIPs = 10.77.0.3/32" in text
    assert "PersistentKeepalive = 25" in text
    assert "Address" not in strip_wg_quick(text)


def test_render_without_keys_names_the_command(tmp_path: Path) -> None:
    cfg = overlay_config(tmp_path)
    keygen(cfg, "n1")
    with pytest.raises(ConfigError, match="meshems overlay keygen"):
        render(cfg, "n1")


def test_raft_and_the_api_bind_to_the_overlay_address(tmp_path: Path) -> None:
    cfg = overlay_config(tmp_path)
    n1 = cfg.node("n1")
    assert n1.bind_host == "10.77.0.1"
    assert n1.raft_endpoint.startswith("10.77.0.1:") and n1.api_endpoint.startswith("10.77.0.1:")
    # the tunnel itself runs over the underlay address
    assert (
        f"Endpoint = {cfg.node('n1').address}:51820"
        in (keygen(cfg, "n1"), keygen(cfg, "n2"), keygen(cfg, "n3"), render(cfg, "n2"))[3]
    )
