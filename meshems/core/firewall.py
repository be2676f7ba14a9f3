"""A gateway's nftables allow-list, rendered from the cluster config as one atomic ruleset
(`table inet meshems`: input policy drop with what the node needs let in; output keeping
Modbus and MQTT to the configured hosts), and the drift between two listings of it.

Pure: no I/O. Host names come resolved from the caller (`addresses`), as nft wants
addresses; the text is what `nft list table inet meshems` prints, so listings compare.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from meshems.core.config import ClusterConfig, NodeConfig
from meshems.core.errors import ConfigError

TABLE = "inet meshems"
MODBUS_PORT = 502
MQTT_TLS_PORT = 8883
#: the ICMP that must pass (RFC 4890 for ICMPv6), in nft's listing order (by type number)
ICMP_ERRORS = "destination-unreachable, time-exceeded, parameter-problem"
ICMPV6_ERRORS = "destination-unreachable, packet-too-big, time-exceeded, parameter-problem"
ND_TYPES = "nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert"
ECHO_LIMIT = "limit rate 10/second burst 20 packets"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Ruleset:
    """A node's rendered ruleset: the nft file (`text`) and what a reader should know."""

    node_id: str
    text: str
    notes: tuple[str, ...]

    @property
    def rules(self) -> dict[str, list[str]]:
        return normalize(self.text)


def interface_name(cfg: ClusterConfig, node_id: str) -> str:
    """The node's WireGuard interface, as `adapters.wireguard.interface_name` names it."""
    prefix = cfg.overlay.interface_prefix if cfg.overlay is not None else "mwg-"
    return f"{prefix}{node_id}"[:15]


def _host_of(endpoint: str) -> str:
    host = endpoint.rsplit(":", 1)[0] if endpoint.count(":") == 1 or "]" in endpoint else endpoint
    return host.strip("[]")


def _ip(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _wg_host(peer: NodeConfig) -> str:
    return _host_of(peer.overlay_endpoint) if peer.overlay_endpoint else peer.address


def _key(cfg: ClusterConfig, node: NodeConfig, field: str) -> str:
    return f"nodes[{[n.id for n in cfg.nodes].index(node.id)}].{field}"


def hostnames(cfg: ClusterConfig, node_id: str) -> dict[str, str]:
    """The host names (not addresses) the node's ruleset filters by, each with the config
    key it comes from: the caller resolves them for `render`."""
    me = cfg.node(node_id)
    found: dict[str, str] = {}
    for peer in cfg.nodes:
        if peer.id == node_id:
            continue
        if cfg.overlay is not None:
            field = "overlay_endpoint" if peer.overlay_endpoint else "address"
            found.setdefault(_wg_host(peer), _key(cfg, peer, field))
        elif not peer.overlay_address:
            found.setdefault(peer.address, _key(cfg, peer, "address"))
    for i, bus in enumerate(me.buses):
        if bus.host is not None:
            found.setdefault(bus.host, f"{_key(cfg, me, 'buses')}[{i}].host")
    if cfg.cloud is not None:
        found.setdefault(cfg.cloud.broker_host, "cloud.broker_host")
    return {h: k for h, k in found.items() if _ip(h) is None}


def _addresses(host: str, key: str, resolved: Mapping[str, Sequence[str]]) -> list[Address]:
    literal = _ip(host)
    if literal is not None:
        return [literal]
    if host not in resolved:
        raise ConfigError(f"{key}: host name {host!r} was not resolved (the firewall filters by address)")
    out = [a for a in (_ip(x) for x in resolved[host]) if a is not None]
    if not out:
        raise ConfigError(f"{key}: host name {host!r} resolves to no address", key=key)
    return out


def _elements(items: Iterable[Address | Network]) -> tuple[list[str], list[str]]:
    """Per family (IPv4, IPv6): the match values for these addresses and networks, sorted,
    without duplicates or what another one covers, loopback left to the loopback rule.
    Hosts share one set; each network is a value of its own (nft merges neighbouring
    intervals of a set when it lists it, so listings would not compare)."""
    nets = sorted(
        {n for n in map(ipaddress.ip_network, items) if not n.is_loopback},
        key=lambda n: (n.version, n.prefixlen == n.max_prefixlen, n.network_address, n.prefixlen),
    )
    out: tuple[list[str], list[str]] = ([], [])
    kept: list[Network] = []
    hosts: tuple[list[str], list[str]] = ([], [])
    for net in nets:
        if any(net.version == k.version and net.subnet_of(k) for k in kept):  # type: ignore[arg-type]
            continue
        kept.append(net)
        if net.prefixlen == net.max_prefixlen:
            hosts[net.version == 6].append(str(net.network_address))
        else:
            out[net.version == 6].append(str(net))
    for family in (0, 1):
        if hosts[family]:
            out[family].insert(0, _set(hosts[family]))
    return out


def _set(values: Sequence[object]) -> str:
    """One value bare, several in braces: as nft lists an anonymous set."""
    return str(values[0]) if len(values) == 1 else "{ " + ", ".join(map(str, values)) + " }"


def _by_family(field: str, items: Iterable[Address | Network], rest: str) -> list[str]:
    """`ip FIELD VALUE REST` and `ip6 FIELD VALUE REST` rules for these addresses."""
    v4, v6 = _elements(items)
    return [f"{fam} {field} {value} {rest}" for fam, values in (("ip", v4), ("ip6", v6)) for value in values]


def _comment(text: str) -> str:
    return f'comment "{text[:120]}"'


def _overlay_rules(
    cfg: ClusterConfig, me: NodeConfig, peers: list[NodeConfig], resolved: Mapping[str, Sequence[str]]
) -> tuple[list[str], list[str], list[str]]:
    """(input, output, notes) for the mesh over WireGuard: UDP from and to the peers'
    endpoints, Raft and the API only on the overlay interface from the peers' addresses."""
    ov = cfg.overlay
    assert ov is not None
    if me.overlay_address is None:
        raise ConfigError(f"{cfg.source}: {_key(cfg, me, 'overlay_address')}: missing (overlay is on)")
    endpoints: list[Address] = []
    tunnel: list[Address] = []
    for peer in peers:
        if peer.overlay_address is None or _ip(peer.overlay_address) is None:
            what = "missing" if peer.overlay_address is None else "not an IP address"
            raise ConfigError(f"{cfg.source}: {_key(cfg, peer, 'overlay_address')}: {what}")
        field = "overlay_endpoint" if peer.overlay_endpoint else "address"
        endpoints += _addresses(_wg_host(peer), _key(cfg, peer, field), resolved)
        tunnel.append(ipaddress.ip_address(peer.overlay_address))
    ifname = interface_name(cfg, me.id)
    listen = me.overlay_port or ov.listen_port
    mine = _set(sorted({me.raft_port, me.api_port}))
    inp = _by_family("saddr", endpoints, f"udp dport {listen} accept {_comment('wireguard from peers')}")
    inp += [
        f'iifname "{ifname}" {r}'
        for r in _by_family("saddr", tunnel, f"tcp dport {mine} accept {_comment('raft and api from peers')}")
    ]
    out: list[str] = []
    if peers:
        wg_ports = _set(sorted({p.overlay_port or ov.listen_port for p in peers}))
        theirs = _set(sorted({port for p in peers for port in (p.raft_port, p.api_port)}))
        out += _by_family("daddr", endpoints, f"udp dport {wg_ports} accept {_comment('wireguard to peers')}")
        out += [
            f'oifname "{ifname}" {r}'
            for r in _by_family(
                "daddr", tunnel, f"tcp dport {theirs} accept {_comment('raft and api to peers')}"
            )
        ]
    notes = []
    if peers and _elements(endpoints) == ([], []):
        notes.append("every peer's WireGuard endpoint is on loopback: the loopback rule lets them in")
    return inp, out, notes


def _underlay_rules(
    cfg: ClusterConfig, me: NodeConfig, peers: list[NodeConfig], resolved: Mapping[str, Sequence[str]]
) -> tuple[list[str], list[str], list[str]]:
    """(input, output, notes) without an overlay: Raft and the API from and to the peers'
    addresses on any interface (on loopback, the loopback rules cover them)."""
    hosts = [a for p in peers for a in _addresses(p.address, _key(cfg, p, "address"), resolved)]
    if _elements(hosts) == ([], []):
        return (
            [],
            [],
            [
                f"no overlay and every node on loopback ({me.bind_host}): Raft and the API pass the "
                "loopback rule only; nothing from outside reaches them"
            ],
        )
    mine = _set(sorted({me.raft_port, me.api_port}))
    theirs = _set(sorted({port for p in peers for port in (p.raft_port, p.api_port)}))
    inp = _by_family("saddr", hosts, f"tcp dport {mine} accept {_comment('raft and api from peers')}")
    out = _by_family("daddr", hosts, f"tcp dport {theirs} accept {_comment('raft and api to peers')}")
    note = (
        "no overlay: Raft and the API are let in from the peers' addresses on any interface "
        "(in clear); an overlay restricts them to the WireGuard interface"
    )
    return inp, out, [note]


def _field_rules(cfg: ClusterConfig, me: NodeConfig, resolved: Mapping[str, Sequence[str]]) -> list[str]:
    """Output: Modbus only to each bus's host and port, MQTT only to the broker; the rest
    of those ports dropped (after the accepts: nft stops at the first verdict)."""
    out: list[str] = []
    modbus_ports = {MODBUS_PORT}
    for i, bus in enumerate(me.buses):
        if bus.host is None or bus.port is None:
            continue
        modbus_ports.add(bus.port)
        targets = _addresses(bus.host, f"{_key(cfg, me, 'buses')}[{i}].host", resolved)
        out += _by_family("daddr", targets, f"tcp dport {bus.port} accept {_comment(f'modbus bus {bus.id}')}")
    out.append(f"tcp dport {_set(sorted(modbus_ports))} drop {_comment('modbus to other hosts')}")
    mqtt_ports = {MQTT_TLS_PORT}
    if cfg.cloud is not None:
        port = cfg.cloud.broker_port
        mqtt_ports.add(port)
        broker = _addresses(cfg.cloud.broker_host, "cloud.broker_host", resolved)
        out += _by_family("daddr", broker, f"tcp dport {port} accept {_comment('mqtt to the broker')}")
    out.append(f"tcp dport {_set(sorted(mqtt_ports))} drop {_comment('mqtt to other hosts')}")
    return out


def render(cfg: ClusterConfig, node_id: str, addresses: Mapping[str, Sequence[str]] | None = None) -> Ruleset:
    """The node's ruleset as an nft file: create-if-missing, flush and define in one
    transaction, so `nft -f` replaces it atomically (twice leaves one table). `addresses`
    resolves the host names `hostnames` lists."""
    resolved = addresses or {}
    me = cfg.node(node_id)
    peers = [p for p in cfg.nodes if p.id != node_id]
    mesh = _overlay_rules if cfg.overlay is not None else _underlay_rules
    mesh_in, mesh_out, notes = mesh(cfg, me, peers, resolved)
    inp = [
        'iifname "lo" accept',
        "ct state invalid drop",
        "ct state established,related accept",
        f"icmp type {{ {ICMP_ERRORS} }} accept",
        f"icmp type echo-request {ECHO_LIMIT} accept",
        f"icmpv6 type {{ {ICMPV6_ERRORS} }} accept",
        f"icmpv6 type {{ {ND_TYPES} }} ip6 hoplimit 255 accept",
        f"icmpv6 type echo-request {ECHO_LIMIT} accept",
        *mesh_in,
    ]
    operators = [ipaddress.ip_network(n) for n in cfg.api.operator_networks]
    inp += _by_family("saddr", operators, f"tcp dport {me.api_port} accept {_comment('api from operators')}")
    # the operators' networks may also log in: a remote gateway must not lock its operators out
    inp += _by_family("saddr", operators, f"tcp dport 22 accept {_comment('ssh from operators')}")
    if not operators:
        notes.append(
            "api.operator_networks is empty: only the peers (and this host) reach the API, and new SSH "
            "logins are dropped (open sessions stay); set it before applying on a remote gateway"
        )
    inp.append(f"counter {_comment(f'meshems {node_id}: dropped by policy')}")
    out = ['oifname "lo" accept', "ct state established,related accept", *mesh_out]
    named = hostnames(cfg, node_id)
    if named:
        out += [f"{proto} dport 53 accept {_comment('dns for host names')}" for proto in ("udp", "tcp")]
        found = [f"{k} {h} -> {', '.join(sorted(resolved.get(h, ())))}" for h, k in sorted(named.items())]
        notes.append(f"resolved at render time (re-apply when DNS changes): {'; '.join(found)}")
    out += _field_rules(cfg, me, resolved)
    notes.append("nothing else is let in (SSH included); connections already open stay open")

    header = [f"# meshems firewall of node {node_id}, cluster {cfg.cluster}, zone {cfg.zone} ({cfg.source})"]
    header += [f"# note: {n}" for n in notes]
    body = [
        f"table {TABLE} {{}}",
        f"flush table {TABLE}",
        f"table {TABLE} {{",
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy drop;",
        *(f"\t\t{r}" for r in inp),
        "\t}",
        "",
        "\tchain output {",
        "\t\ttype filter hook output priority filter; policy accept;",
        *(f"\t\t{r}" for r in out),
        "\t}",
        "}",
    ]
    return Ruleset(node_id, "\n".join(header + body) + "\n", tuple(notes))


def normalize(text: str) -> dict[str, list[str]]:
    """The chains of a ruleset file or of `nft list table inet meshems`: per chain, its
    lines (hook and policy first) with whitespace collapsed and counter values dropped."""
    chains: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in text.splitlines():
        line = " ".join(raw.split())
        if not line or line.startswith("#") or line in (f"table {TABLE} {{}}", f"flush table {TABLE}"):
            continue
        m = re.fullmatch(r"chain (\S+) \{", line)
        if m:
            current = chains.setdefault(m.group(1), [])
        elif line == "}":
            current = None
        elif current is not None:
            current.append(re.sub(r"counter packets \d+ bytes \d+", "counter", line))
    return chains


def drift(expected: Mapping[str, list[str]], loaded: Mapping[str, list[str]]) -> list[str]:
    """What differs, one line each: `- chain input: RULE` rendered but not loaded, `+ ...`
    loaded but not rendered (order counts: nft evaluates rules in order)."""
    lines: list[str] = []
    for chain in sorted(set(expected) | set(loaded)):
        want, have = expected.get(chain, []), loaded.get(chain, [])
        if chain not in loaded:
            lines.append(f"- chain {chain}: the whole chain is not loaded")
            continue
        if chain not in expected:
            lines.append(f"+ chain {chain}: a chain meshems does not render")
            continue
        sm = difflib.SequenceMatcher(a=want, b=have, autojunk=False)
        for op, a0, a1, b0, b1 in sm.get_opcodes():
            if op != "equal":
                lines += [f"- chain {chain}: {r}" for r in want[a0:a1]]
                lines += [f"+ chain {chain}: {r}" for r in have[b0:b1]]
    return lines
