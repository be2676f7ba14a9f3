"""The `nft` binary: check a ruleset file (`nft -c -f`), load it (`nft -f`, one atomic
transaction), list `table inet meshems`, in this network namespace or another one
(`ip netns exec NAME nft ...`); and the host-name lookups a ruleset filters by.

Owns nft's invocation and turns its failures into stable codes (E_NFT_MISSING,
E_NFT_SYNTAX, E_NFT_PERMISSION, E_NFT_NETNS, E_NFT_FAILED); the rules are core.firewall's.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from meshems.core.errors import ConfigError, MeshemsError

#: where Debian's nftables package puts it (root's PATH has /usr/sbin; a user's may not)
NFT_PATHS = ("/usr/sbin/nft", "/sbin/nft")
TABLE = "inet meshems"
TIMEOUT_S = 20.0


class NftError(MeshemsError):
    """nft failed in a way none of the subclasses names."""

    code = "E_NFT_FAILED"


class NftMissingError(NftError):
    code = "E_NFT_MISSING"


class NftSyntaxError(NftError):
    code = "E_NFT_SYNTAX"


class NftPermissionError(NftError):
    code = "E_NFT_PERMISSION"


class NftNetnsError(NftError):
    code = "E_NFT_NETNS"
    exit_code = 2


def binary() -> str:
    """The nft executable, or E_NFT_MISSING naming the package."""
    for path in NFT_PATHS:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("nft")
    if found is None:
        raise NftMissingError(
            f"nft not found ({', '.join(NFT_PATHS)} or PATH): install Debian's nftables package "
            "(scripts/setup does)"
        )
    return found


def _command(netns: str | None, *args: str) -> list[str]:
    nft = binary()
    return ["ip", "netns", "exec", netns, nft, *args] if netns else [nft, *args]


def _run(netns: str | None, *args: str, shown: str = "") -> subprocess.CompletedProcess[str]:
    """Run nft; raise the error class its failure maps to (`shown` replaces a temp file's
    name in nft's messages)."""
    cmd = _command(netns, *args)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except FileNotFoundError as exc:
        raise NftMissingError(
            f"{exc.filename or cmd[0]} not found: install nftables (and iproute2)"
        ) from None
    except subprocess.TimeoutExpired:
        raise NftError(f"{' '.join(cmd)} did not finish within {TIMEOUT_S:.0f} s") from None
    if out.returncode == 0:
        return out
    message = (out.stderr or out.stdout).strip()
    where = f" (network namespace {netns})" if netns else ""
    if netns and ("Cannot open network namespace" in message or "setting the network namespace" in message):
        raise NftNetnsError(f"--netns {netns}: no such network namespace ({message.splitlines()[0]})")
    if "Operation not permitted" in message or "you must be root" in message:
        raise NftPermissionError(
            f"nft{where}: operation not permitted: run as root or with CAP_NET_ADMIN "
            "(meshems-firewall.service has it)"
        )
    if shown:
        for name in args:
            if name.startswith(tempfile.gettempdir()):
                message = message.replace(name, shown)
    if "Error:" in message and args[:1] != ("list",):
        raise NftSyntaxError(f"nft{where} refused the ruleset: {message}")
    raise NftError(f"nft {' '.join(args)}{where} failed: {message}")


def _with_file(text: str, *args: str, netns: str | None, shown: str) -> None:
    fd, name = tempfile.mkstemp(prefix="meshems-nft-", suffix=".nft")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        _run(netns, *args, name, shown=shown)
    finally:
        Path(name).unlink(missing_ok=True)


def check(text: str, netns: str | None = None, shown: str = "ruleset") -> None:
    """`nft -c -f`: parse and validate against the kernel without changing anything."""
    _with_file(text, "-c", "-f", netns=netns, shown=shown)


def apply(text: str, netns: str | None = None, shown: str = "ruleset") -> None:
    """`nft -f`: the file is one transaction; all of it is loaded or none of it."""
    _with_file(text, "-f", netns=netns, shown=shown)


def list_table(netns: str | None = None) -> str | None:
    """`nft list table inet meshems` as text, or None when the table is not loaded."""
    try:
        return _run(netns, "list", "table", *TABLE.split()).stdout
    except NftError as exc:
        if type(exc) is NftError and "No such file or directory" in exc.message:
            return None
        raise


def resolve(names: Mapping[str, str]) -> dict[str, list[str]]:
    """The addresses of each host name (`names`: name -> the config key it comes from),
    as getaddrinfo gives them now; E_CONFIG naming the key when one does not resolve."""
    out: dict[str, list[str]] = {}
    for host, key in sorted(names.items()):
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ConfigError(
                f"{key}: host name {host!r} does not resolve ({exc.strerror}); the firewall filters "
                "by address: give an address or fix DNS",
                key=key,
            ) from None
        out[host] = sorted({str(i[4][0]) for i in infos})
    return out
