"""The systemd units of one gateway, rendered from its cluster config: the hardened
`meshems-node.service` (Type=notify, watchdog, the `meshems` user, no capability), the
oneshot `meshems-overlay.service` and `meshems-firewall.service` (CAP_NET_ADMIN) that run
before it, and the sysusers.d / tmpfiles.d entries. Pure: text out, `meshems install` writes.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import PurePosixPath

from meshems.core.config import ClusterConfig

USER = "meshems"
#: where `meshems install` puts the config; the units name it
CONFIG_PATH = "/etc/meshems/cluster.yaml"
STATE_DIR = "/var/lib/meshems"
NODE_UNIT, OVERLAY_UNIT, FIREWALL_UNIT = (
    "meshems-node.service",
    "meshems-overlay.service",
    "meshems-firewall.service",
)
#: paths ProtectHome= / PrivateTmp= hide from the node
HIDDEN = ("/home", "/root", "/run/user", "/tmp", "/var/tmp")


@dataclass(frozen=True, slots=True)
class Install:
    """What the units need beyond the config: the interpreter the node runs with
    (`sys.executable`, absolute), where the config lives, the watchdog."""

    python: str
    config_path: str = CONFIG_PATH
    watchdog_s: int = 30
    restart_s: int = 5


def serial_ports(cfg: ClusterConfig, node_id: str) -> list[str]:
    return [b.serial_port for b in cfg.node(node_id).buses if b.serial_port is not None]


def writable_dirs(cfg: ClusterConfig, node_id: str) -> list[str]:
    """Folders the node writes (journals, SunSpec cache, load history; the cloud outbox),
    as they resolve from the installed config (`cfg.source`)."""
    dirs = [_norm(cfg.path(cfg.raft.data_dir))]
    if cfg.cloud is not None:
        dirs.append(_norm(cfg.path(cfg.cloud.outbox_dir)))
    return list(dict.fromkeys(dirs))


def _norm(path: object) -> str:
    return posixpath.normpath(str(path))


def _under(path: str, root: str) -> bool:
    p, r = PurePosixPath(path), PurePosixPath(root)
    return p == r or r in p.parents


def secret_file(cfg: ClusterConfig) -> str:
    """The Raft secret's path as the installed config resolves it."""
    return _norm(cfg.secret_path)


def warnings(cfg: ClusterConfig, node_id: str, inst: Install | None = None) -> list[str]:
    """Paths of the installed config the service cannot use as they are (each says what to do)."""
    out = []
    read = [("raft.secret_file", secret_file(cfg))]
    if inst is not None:
        read.append(("the interpreter (install meshems outside /home, e.g. in /opt/meshems)", inst.python))
    for key, path in [*read, *(("a folder the node writes", d) for d in writable_dirs(cfg, node_id))]:
        if any(_under(path, h) for h in HIDDEN):
            out.append(f"{key} resolves to {path}, which the service cannot see (ProtectHome/PrivateTmp)")
    data = _norm(cfg.path(cfg.raft.data_dir))
    if not _under(data, STATE_DIR):
        out.append(
            f"raft.data_dir resolves to {data}; on a gateway set "
            f"`raft.data_dir: {STATE_DIR}` (the unit's StateDirectory) in the config"
        )
    return out


def _exec(inst: Install, *args: str) -> str:
    return " ".join([inst.python, "-m", "meshems", *args])


def _section(name: str, lines: list[str]) -> str:
    return f"[{name}]\n" + "".join(line + "\n" for line in lines)


HARDENING = [
    "ProtectSystem=strict",
    "PrivateMounts=yes",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "NoNewPrivileges=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "ProtectProc=invisible",
    "ProcSubset=pid",
    "LockPersonality=yes",
    "MemoryDenyWriteExecute=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "RestrictNamespaces=yes",
    "SystemCallArchitectures=native",
    "UMask=0077",
]


def node_unit(cfg: ClusterConfig, node_id: str, inst: Install) -> str:
    """`meshems-node.service`: the node daemon as the unprivileged `meshems` user."""
    ports = serial_ports(cfg, node_id)
    before = [FIREWALL_UNIT, *([OVERLAY_UNIT] if cfg.overlay is not None else [])]
    unit = [
        f"Description=meshems node {node_id} (zone {cfg.zone}, cluster {cfg.cluster})",
        f"Wants=network-online.target {' '.join(before)}",
        f"After=network-online.target {' '.join(before)}",
    ]
    devices = (
        ["DevicePolicy=closed", *(f"DeviceAllow={p} rw" for p in ports)] if ports else ["PrivateDevices=yes"]
    )
    extra_rw = [d for d in writable_dirs(cfg, node_id) if not _under(d, STATE_DIR)]
    service = [
        "Type=notify",
        "NotifyAccess=main",
        f"WatchdogSec={inst.watchdog_s}",
        # a node whose peers are down still runs its site (survival): it may take long to join
        "TimeoutStartSec=infinity",
        "Restart=on-failure",
        f"RestartSec={inst.restart_s}",
        # 2 = usage or configuration error: restarting does not fix a bad config
        "RestartPreventExitStatus=2",
        f"ExecStart={_exec(inst, 'node', 'run', '--config', inst.config_path, '--node', node_id)}",
        f"User={USER}",
        f"Group={USER}",
        *(["SupplementaryGroups=dialout"] if ports else []),
        "StateDirectory=meshems",
        "StateDirectoryMode=0700",
        "ConfigurationDirectory=meshems",
        *(f"ReadWritePaths={d}" for d in extra_rw),
        *HARDENING,
        *devices,
        # a user namespace would hide the dialout group a serial port needs
        *(["PrivateUsers=yes"] if not ports else []),
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "SystemCallFilter=~@privileged @resources",
        "SystemCallErrorNumber=EPERM",
        "RemoveIPC=yes",
        "KeyringMode=private",
    ]
    return _doc(node_id) + _section("Unit", unit) + "\n" + _section("Service", service) + "\n" + _install()


def overlay_unit(cfg: ClusterConfig, node_id: str, inst: Install) -> str | None:
    """`meshems-overlay.service` (None without an overlay): brings the WireGuard interface
    up before the node binds to its overlay address; wireguard-go stays in this unit."""
    if cfg.overlay is None:
        return None
    args = ("--config", inst.config_path, "--node", node_id)
    unit = [
        f"Description=meshems WireGuard overlay of {node_id}",
        "Wants=network-online.target",
        "After=network-online.target",
        f"Before={NODE_UNIT}",
    ]
    service = [
        "Type=oneshot",
        "RemainAfterExit=yes",
        f"ExecStart={_exec(inst, 'overlay', 'up', *args)}",
        f"ExecStop={_exec(inst, 'overlay', 'down', *args)}",
        "CapabilityBoundingSet=CAP_NET_ADMIN",
        "AmbientCapabilities=CAP_NET_ADMIN",
        "RuntimeDirectory=wireguard",
        "RuntimeDirectoryPreserve=yes",
        "ReadWritePaths=/run/wireguard",
        *HARDENING,
        "DevicePolicy=closed",
        "DeviceAllow=/dev/net/tun rw",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
        "SystemCallFilter=@system-service",
    ]
    return _doc(node_id) + _section("Unit", unit) + "\n" + _section("Service", service) + "\n" + _install()


def firewall_unit(cfg: ClusterConfig, node_id: str, inst: Install) -> str:
    """`meshems-firewall.service`: applies the node's nftables allow-list before it runs."""
    unit = [
        f"Description=meshems nftables allow-list of {node_id}",
        # as nftables.service: in place before any interface is configured
        "DefaultDependencies=no",
        "Wants=network-pre.target",
        f"Before=network-pre.target shutdown.target {NODE_UNIT}",
        "After=local-fs.target",
        "Conflicts=shutdown.target",
    ]
    service = [
        "Type=oneshot",
        "RemainAfterExit=yes",
        f"ExecStart={_exec(inst, 'firewall', 'apply', '--config', inst.config_path, '--node', node_id)}",
        "CapabilityBoundingSet=CAP_NET_ADMIN",
        "AmbientCapabilities=CAP_NET_ADMIN",
        *HARDENING,
        "PrivateDevices=yes",
        "RestrictAddressFamilies=AF_UNIX AF_NETLINK",
        "SystemCallFilter=@system-service",
    ]
    return _doc(node_id) + _section("Unit", unit) + "\n" + _section("Service", service) + "\n" + _install()


def sysusers(cfg: ClusterConfig, node_id: str) -> str:
    """`sysusers.d/meshems.conf`: the system user (and `dialout` when a bus is serial)."""
    lines = [f'u {USER} - "meshems node" {STATE_DIR}']
    if serial_ports(cfg, node_id):
        lines.append(f"m {USER} dialout")
    return "# meshems: the node's system user (systemd-sysusers meshems.conf)\n" + "\n".join(lines) + "\n"


def tmpfiles(cfg: ClusterConfig, node_id: str, inst: Install) -> str:
    """`tmpfiles.d/meshems.conf`: the state folder, and the config (0640 root:meshems) and
    secret (0600 meshems) ownership fixed (systemd-tmpfiles --create meshems.conf)."""
    lines = [f"d {STATE_DIR} 0700 {USER} {USER} -"]
    lines += [f"d {d} 0700 {USER} {USER} -" for d in writable_dirs(cfg, node_id) if not _under(d, STATE_DIR)]
    lines.append(f"z {inst.config_path} 0640 root {USER} -")
    lines.append(f"z {secret_file(cfg)} 0600 {USER} {USER} -")
    return "# meshems: state folder and config/secret ownership\n" + "\n".join(lines) + "\n"


def render_all(cfg: ClusterConfig, node_id: str, inst: Install) -> dict[str, str]:
    """Every file for the gateway, by its path below the root (`etc/systemd/system/...`).
    `cfg` is the config as installed (`cfg.source` = `inst.config_path`)."""
    out = {
        f"etc/systemd/system/{NODE_UNIT}": node_unit(cfg, node_id, inst),
        f"etc/systemd/system/{FIREWALL_UNIT}": firewall_unit(cfg, node_id, inst),
    }
    overlay = overlay_unit(cfg, node_id, inst)
    if overlay is not None:
        out[f"etc/systemd/system/{OVERLAY_UNIT}"] = overlay
    out["usr/lib/sysusers.d/meshems.conf"] = sysusers(cfg, node_id)
    out["usr/lib/tmpfiles.d/meshems.conf"] = tmpfiles(cfg, node_id, inst)
    return out


def _doc(node_id: str) -> str:
    return f"# written by `meshems install --node {node_id}`; run it again rather than editing\n"


def _install() -> str:
    return _section("Install", ["WantedBy=multi-user.target"])
