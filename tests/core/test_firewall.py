"""Unit tests for `meshems.core.firewall`: what a node's nftables ruleset lets in and out.

Each rule is checked present and absent per config (peers' WireGuard endpoints only, Raft and
the API only on the overlay from peers, operator networks, Modbus field hosts, the broker),
the text is deterministic, drift names the differing rules, and `nft -c -f` accepts every
rendered ruleset (nft's check needs root; it changes nothing).
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from meshems.adapters.config_file import load_config
from meshems.adapters.wireguard import interface_name as wg_interface_name
from meshems.core.config import ClusterConfig, parse_config
from meshems.core.errors import ConfigError
from meshems.core.firewall import drift, hostnames, interface_name, normalize, render

LOCAL_3 = Path(__file__).resolve().parents[2] / "cluster-configs" / "local-3.yaml"
RESOLVED = {"broker.example.net": ["203.0.113.5", "2001:db8:5::5"], "conv.site": ["10.0.0.30"]}


def gateways() -> dict[str, Any]:
    """Three gateways on an underlay with a WireGuard overlay; g1 has two Modbus buses."""
    return {
        "cluster": "prod",
        "zone": "zone-b",
        "raft": {"secret_file": "raft.secret"},
        "api": {"operator_networks": ["192.168.10.0/24"]},
        "overlay": {"key_dir": "keys"},
        "cloud": {"broker_host": "broker.example.net"},
        "nodes": [
            {"id": "g1", "address": "192.0.2.1", "overlay_address": "10.77.0.1", "raft_port": 7101,
             "api_port": 8443, "buses": [
                 {"id": "site", "type": "tcp", "host": "10.0.0.20", "port": 502},
                 {"id": "conv", "type": "rtu-over-tcp", "host": "conv.site", "port": 4001}]},
            {"id": "g2", "address": "192.0.2.2", "overlay_address": "10.77.0.2", "raft_port": 7101,
             "api_port": 8443},
            {"id": "g3", "address": "192.0.2.3", "overlay_address": "10.77.0.3", "raft_port": 7101,
             "api_port": 8443, "overlay_endpoint": "[2001:db8:1::3]:51821", "overlay_port": 51821},
        ],
    }  # fmt: skip


def cfg_of(doc: dict[str, Any]) -> ClusterConfig:
    return parse_config(copy.deepcopy(doc), "gw.yaml")


def rules(cfg: ClusterConfig, node: str = "g1") -> dict[str, list[str]]:
    return render(cfg, node, RESOLVED).rules


def test_input_drops_by_default_and_lets_in_loopback_established_and_icmp() -> None:
    got = rules(cfg_of(gateways()))
    assert got["input"][0] == "type filter hook input priority filter; policy drop;"
    assert got["output"][0] == "type filter hook output priority filter; policy accept;"
    head = got["input"][1:4]
    assert head == ['iifname "lo" accept', "ct state invalid drop", "ct state established,related accept"]
    icmp = " ".join(got["input"])
    for kind in ("destination-unreachable", "packet-too-big", "time-exceeded", "parameter-problem"):
        assert kind in icmp
    for nd in ("nd-neighbor-solicit", "nd-neighbor-advert", "nd-router-advert"):
        assert nd in icmp
    echo = [r for r in got["input"] if "echo-request" in r]
    assert len(echo) == 2 and all("limit rate" in r for r in echo)


def test_wireguard_only_from_the_peers_endpoints_and_not_from_the_node_itself() -> None:
    wg = [r for r in rules(cfg_of(gateways()))["input"] if "udp dport" in r]
    assert wg == [
        'ip saddr 192.0.2.2 udp dport 51820 accept comment "wireguard from peers"',
        'ip6 saddr 2001:db8:1::3 udp dport 51820 accept comment "wireguard from peers"',
    ]
    # g3's own listen port is 51821 and its peers are g1 and g2 (by their addresses)
    wg3 = [r for r in rules(cfg_of(gateways()), "g3")["input"] if "udp dport" in r]
    assert wg3 == ['ip saddr { 192.0.2.1, 192.0.2.2 } udp dport 51821 accept comment "wireguard from peers"']


def test_raft_and_api_only_on_the_overlay_interface_from_the_peers() -> None:
    mesh = [r for r in rules(cfg_of(gateways()))["input"] if "7101" in r]
    assert mesh == [
        'iifname "mwg-g1" ip saddr { 10.77.0.2, 10.77.0.3 } tcp dport { 7101, 8443 } accept '
        'comment "raft and api from peers"'
    ]
    assert interface_name(cfg_of(gateways()), "g1") == wg_interface_name(cfg_of(gateways()), "g1")


def test_the_api_from_operator_networks_only_when_configured() -> None:
    doc = gateways()
    doc["api"]["operator_networks"] = [
        "2001:db8::/48",
        "10.1.2.0/24",
        "10.1.0.0/16",
        "10.9.9.9",
        "10.9.9.9/32",
    ]
    api = [r for r in rules(cfg_of(doc))["input"] if "api from operators" in r]
    ssh = [r for r in rules(cfg_of(doc))["input"] if "ssh from operators" in r]
    assert ssh == [r.replace("8443", "22").replace("api from", "ssh from") for r in api]  # operators keep SSH
    assert api == [  # sorted, the /24 inside the /16 and the repeated host dropped, IPv6 apart
        'ip saddr 10.9.9.9 tcp dport 8443 accept comment "api from operators"',
        'ip saddr 10.1.0.0/16 tcp dport 8443 accept comment "api from operators"',
        'ip6 saddr 2001:db8::/48 tcp dport 8443 accept comment "api from operators"',
    ]
    doc["api"]["operator_networks"] = []
    ruleset = render(cfg_of(doc), "g1", RESOLVED)
    assert not [r for r in ruleset.rules["input"] if "operators" in r]
    assert any("operator_networks is empty" in n for n in ruleset.notes)


@pytest.mark.parametrize("bad", ["10.0.0.1/24", "10.0.0.0/33", "lan", "", "::1/129"])
def test_a_bad_operator_network_names_the_key(bad: str) -> None:
    doc = gateways()
    doc["api"]["operator_networks"] = ["10.0.0.0/8", bad]
    with pytest.raises(ConfigError) as err:
        cfg_of(doc)
    assert "gw.yaml: api.operator_networks[1]:" in err.value.message and repr(bad) in err.value.message
    assert err.value.exit_code == 2


def test_modbus_only_towards_the_field_hosts_and_other_modbus_dropped() -> None:
    out = rules(cfg_of(gateways()))["output"]
    modbus = [r for r in out if "modbus" in r]
    assert modbus == [
        'ip daddr 10.0.0.20 tcp dport 502 accept comment "modbus bus site"',
        'ip daddr 10.0.0.30 tcp dport 4001 accept comment "modbus bus conv"',
        'tcp dport { 502, 4001 } drop comment "modbus to other hosts"',
    ]
    # the accepts come before the drop (nft stops at the first verdict)
    assert out.index(modbus[0]) < out.index(modbus[1]) < out.index(modbus[2])
    # g2 has no bus: every Modbus connection out is dropped
    assert [r for r in rules(cfg_of(gateways()), "g2")["output"] if "modbus" in r] == [
        'tcp dport 502 drop comment "modbus to other hosts"'
    ]


def test_mqtt_only_towards_the_broker_and_dns_for_host_names() -> None:
    out = rules(cfg_of(gateways()))["output"]
    assert [r for r in out if "mqtt" in r] == [
        'ip daddr 203.0.113.5 tcp dport 8883 accept comment "mqtt to the broker"',
        'ip6 daddr 2001:db8:5::5 tcp dport 8883 accept comment "mqtt to the broker"',
        'tcp dport 8883 drop comment "mqtt to other hosts"',
    ]
    assert 'udp dport 53 accept comment "dns for host names"' in out
    doc = gateways()
    del doc["cloud"]
    doc["nodes"][0]["buses"] = doc["nodes"][0]["buses"][:1]
    out = rules(cfg_of(doc))["output"]
    assert [r for r in out if "mqtt" in r] == ['tcp dport 8883 drop comment "mqtt to other hosts"']
    assert not [r for r in out if "dport 53" in r]  # no host name: no need for DNS


def test_output_lets_the_node_reach_its_peers_before_any_drop() -> None:
    out = rules(cfg_of(gateways()))["output"]
    first_drop = next(i for i, r in enumerate(out) if r.endswith('drop comment "modbus to other hosts"'))
    wg = out.index('ip daddr 192.0.2.2 udp dport { 51820, 51821 } accept comment "wireguard to peers"')
    tunnel = next(
        i for i, r in enumerate(out) if r.startswith('oifname "mwg-g1" ip daddr { 10.77.0.2, 10.77.0.3 }')
    )
    assert wg < first_drop and tunnel < first_drop


def test_host_names_are_listed_with_their_keys_and_must_be_resolved() -> None:
    cfg = cfg_of(gateways())
    assert hostnames(cfg, "g1") == {
        "broker.example.net": "cloud.broker_host",
        "conv.site": "nodes[0].buses[1].host",
    }
    with pytest.raises(ConfigError) as err:
        render(cfg, "g1", {"broker.example.net": ["203.0.113.5"]})
    assert "nodes[0].buses[1].host" in err.value.message and "conv.site" in err.value.message


def test_overlay_needs_every_overlay_address_and_names_the_node() -> None:
    doc = gateways()
    del doc["nodes"][1]["overlay_address"]
    with pytest.raises(ConfigError) as err:
        render(cfg_of(doc), "g1", RESOLVED)
    assert "nodes[1].overlay_address: missing" in err.value.message


def test_the_local_demo_renders_and_says_everything_is_on_loopback() -> None:
    ruleset = render(load_config(LOCAL_3), "n1")
    got = ruleset.rules
    assert 'iifname "lo" accept' in got["input"]
    assert not [r for r in got["input"] if "17101" in r or "saddr" in r]  # loopback covers the mesh
    assert any("on loopback" in n for n in ruleset.notes)
    assert "# note: no overlay and every node on loopback" in ruleset.text
    assert 'tcp dport { 502, 15021 } drop comment "modbus to other hosts"' in got["output"]


def test_without_overlay_raft_and_api_come_from_the_peers_addresses() -> None:
    doc = gateways()
    del doc["overlay"]
    for n in doc["nodes"]:
        for key in ("overlay_address", "overlay_endpoint", "overlay_port"):
            n.pop(key, None)
    ruleset = render(cfg_of(doc), "g1", RESOLVED)
    mesh = [r for r in ruleset.rules["input"] if "7101" in r]
    assert mesh == [
        'ip saddr { 192.0.2.2, 192.0.2.3 } tcp dport { 7101, 8443 } accept comment "raft and api from peers"'
    ]
    assert not [r for r in ruleset.rules["input"] if "51820" in r]
    assert any("no overlay" in n for n in ruleset.notes)


def test_rendering_is_deterministic_and_names_meshems_and_the_node() -> None:
    doc = gateways()
    shuffled = copy.deepcopy(doc)
    shuffled["nodes"] = [doc["nodes"][0], doc["nodes"][2], doc["nodes"][1]]
    shuffled["api"]["operator_networks"] = list(reversed(doc["api"]["operator_networks"]))
    a, b = render(cfg_of(doc), "g1", RESOLVED).text, render(cfg_of(doc), "g1", RESOLVED).text
    c = render(cfg_of(shuffled), "g1", {k: list(reversed(v)) for k, v in RESOLVED.items()}).text
    assert a == b == c
    assert a.startswith("# meshems firewall of node g1, cluster prod")
    assert 'comment "meshems g1: dropped by policy"' in a
    # one atomic transaction: created if missing, flushed, defined
    body = [line for line in a.splitlines() if not line.startswith("#")]
    assert body[:3] == ["table inet meshems {}", "flush table inet meshems", "table inet meshems {"]


def test_drift_names_the_rules_that_differ() -> None:
    expected = rules(cfg_of(gateways()))
    listed = render(cfg_of(gateways()), "g1", RESOLVED).text.replace(
        "counter ", "counter packets 9 bytes 640 "
    )
    assert drift(expected, normalize(listed)) == []  # counters are no drift
    extra = listed.replace("\t\tcounter", "\t\ttcp dport 22 accept\n\t\tcounter")
    assert drift(expected, normalize(extra)) == ["+ chain input: tcp dport 22 accept"]
    missing = listed.replace(
        '\t\tip saddr 192.168.10.0/24 tcp dport 8443 accept comment "api from operators"\n', ""
    )
    assert drift(expected, normalize(missing)) == [
        '- chain input: ip saddr 192.168.10.0/24 tcp dport 8443 accept comment "api from operators"'
    ]
    no_output = listed[: listed.index("\tchain output")] + "}\n"
    assert drift(expected, normalize(no_output)) == ["- chain output: the whole chain is not loaded"]


NEEDS_NFT = pytest.mark.skipif(
    os.geteuid() != 0 or (shutil.which("nft") is None and not Path("/usr/sbin/nft").exists()),
    reason="nft -c needs root (it reads the kernel's state) and Debian's nftables",
)


@NEEDS_NFT
@pytest.mark.parametrize("variant", ["gateways", "ipv4-only", "no-overlay", "local-3"])
def test_nft_accepts_the_rendered_ruleset(variant: str, tmp_path: Path) -> None:
    doc = gateways()
    if variant == "ipv4-only":
        del doc["cloud"]
        doc["nodes"][2].pop("overlay_endpoint")
    if variant == "no-overlay":
        del doc["overlay"]
        for n in doc["nodes"]:
            for key in ("overlay_address", "overlay_endpoint", "overlay_port"):
                n.pop(key, None)
    cfg = load_config(LOCAL_3) if variant == "local-3" else cfg_of(doc)
    node = cfg.nodes[0].id
    path = tmp_path / "ruleset.nft"
    path.write_text(render(cfg, node, RESOLVED).text)
    nft = shutil.which("nft") or "/usr/sbin/nft"
    out = subprocess.run([nft, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    # and nft does refuse what is broken (the check can fail)
    path.write_text(path.read_text().replace("policy drop;", "policy maybe;"))
    bad = subprocess.run([nft, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "Error" in bad.stderr
