"""`meshems.adapters.nft`: nft's failures come back as stable codes (no nft, a ruleset nft
refuses with its message, no CAP_NET_ADMIN, an unknown namespace) and host names resolve
or name their config key. Only `nft -c` and `nft list` run here (nothing is loaded into
this namespace); loading is tested in namespaces in tests/lab/test_firewall.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from meshems.adapters import nft
from meshems.core.errors import ConfigError

ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="nft -c and nft list need root (CAP_NET_ADMIN)")
GOOD = "table inet meshems_t {}\nflush table inet meshems_t\ntable inet meshems_t {\n\tchain c {\n\t}\n}\n"


def test_no_nft_binary_is_e_nft_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nft, "NFT_PATHS", ("/nonexistent/nft",))
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(nft.NftMissingError) as err:
        nft.check(GOOD)
    assert err.value.code == "E_NFT_MISSING" and "nftables" in err.value.message


@ROOT
def test_a_ruleset_nft_refuses_is_e_nft_syntax_with_nfts_message() -> None:
    nft.check(GOOD)  # a good one passes
    with pytest.raises(nft.NftSyntaxError) as err:
        nft.check(GOOD.replace("chain c {", "chain c {\n\t\ttcp dport 99999 accept"), shown="ruleset of n1")
    assert err.value.code == "E_NFT_SYNTAX"
    assert "ruleset of n1:" in err.value.message and "99999" in err.value.message
    assert "/tmp/" not in err.value.message  # the temp file is named as what it is


@ROOT
def test_without_cap_net_admin_it_is_e_nft_permission() -> None:
    code = (
        "from meshems.adapters import nft\n"
        "try:\n    nft.list_table()\nexcept nft.NftError as e:\n    print(e.code)\n"
    )
    out = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.strip() == "E_NFT_PERMISSION", out.stdout + out.stderr


@ROOT
def test_an_unknown_namespace_is_e_nft_netns() -> None:
    with pytest.raises(nft.NftNetnsError) as err:
        nft.list_table(netns="meshems-no-such-ns")
    assert err.value.code == "E_NFT_NETNS" and err.value.exit_code == 2
    assert "meshems-no-such-ns" in err.value.message


def test_host_names_resolve_or_name_their_key() -> None:
    assert nft.resolve({"localhost": "cloud.broker_host"})["localhost"][0] in ("127.0.0.1", "::1")
    with pytest.raises(ConfigError) as err:
        nft.resolve({"no-such-host.invalid": "nodes[0].buses[1].host"})
    assert "nodes[0].buses[1].host" in err.value.message and "no-such-host.invalid" in err.value.message
