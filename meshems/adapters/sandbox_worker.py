"""The sandbox worker: one controller payload in a process of its own, run by `adapters.sandbox`
as `python -I sandbox_worker.py` with the payload's store folder as its cwd, spoken to over its
stdin and stdout in length-prefixed msgpack frames (the framing below serves both ends).

It confines itself before the payload's first line runs: an empty network namespace when it
may make one, the payload's sources read into memory, then (started as root) the user it is
told to become, no new privileges, and rlimits (address space, CPU time, files, processes,
core dumps, file size). Imports only the stdlib and msgpack, never meshems.
"""

from __future__ import annotations

import ctypes
import importlib.abc
import importlib.util
import os
import pwd
import resource
import struct
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import msgpack

HEADER = struct.Struct(">I")
#: supervisor -> worker: the hello and one cycle's image and policy
MAX_REQUEST_BYTES = 1024 * 1024
#: worker -> supervisor: 2000 decisions of ~100 bytes fit
MAX_REPLY_BYTES = 256 * 1024
MAX_MESSAGE_CHARS = 500
MAX_SOURCE_BYTES = 8 * 1024 * 1024  # all the payload's .py files together
NOFILE = 8  # stdin, stdout, stderr, the reply fd and a few the interpreter may need
CLONE_NEWNET, CLONE_NEWUSER = 0x40000000, 0x10000000
PR_SET_NO_NEW_PRIVS = 38
#: imported before the user changes: a user that cannot read the interpreter's stdlib (a pyenv
#: below /root) can still import these, and everything the worker itself loaded (typing, ...)
PRELOAD = ("math", "json", "bisect", "heapq")


class ProtocolError(Exception):
    """A frame past its cap, not msgpack, or not a map."""


def _no_ext(code: int, data: bytes) -> None:
    raise ProtocolError(f"msgpack extension type {code} is not part of the protocol")


def encode(msg: dict[str, Any], cap: int) -> bytes:
    """One frame: a 4-byte big-endian length, then the msgpack map; ProtocolError past `cap`."""
    body = msgpack.packb(msg, use_bin_type=True)
    if len(body) > cap:
        raise ProtocolError(f"a {msg.get('t')} message of {len(body)} bytes, at most {cap}")
    return HEADER.pack(len(body)) + body


def decode(body: bytes, cap: int) -> dict[str, Any]:
    """A frame's body as a map of str keys; ProtocolError for anything else."""
    try:
        if len(body) > cap:
            raise ProtocolError(f"a frame of {len(body)} bytes, at most {cap}")
        msg = msgpack.unpackb(body, raw=False, strict_map_key=True, ext_hook=_no_ext)
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("a message must be a msgpack map")
    return msg


def _read_exact(fd: int, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def read_message(fd: int, cap: int) -> dict[str, Any] | None:
    """The next message from a blocking fd; None at end of file."""
    head = _read_exact(fd, HEADER.size)
    if head is None:
        return None
    (size,) = HEADER.unpack(head)
    if size > cap:
        raise ProtocolError(f"a frame of {size} bytes, at most {cap}")
    body = _read_exact(fd, size)
    if body is None:
        return None
    return decode(body, cap)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# --- confinement ------------------------------------------------------------------------------


def _unshare_net() -> str:
    """An empty network namespace (no interface but a loopback that is down): as root directly,
    otherwise inside a new user namespace where the kernel allows one."""
    libc = ctypes.CDLL(None, use_errno=True)
    flags = CLONE_NEWNET if os.geteuid() == 0 else CLONE_NEWNET | CLONE_NEWUSER
    if libc.unshare(flags) == 0:
        return "isolated" if flags == CLONE_NEWNET else "isolated (user namespace)"
    err = ctypes.get_errno()
    return f"not isolated: unshare failed ({os.strerror(err)}); run as root for an empty network namespace"


def _read_sources(folder: Path) -> dict[str, tuple[str, str, bool]]:
    """module name -> (file name, source, is package) of every .py file below `folder`."""
    out: dict[str, tuple[str, str, bool]] = {}
    total = 0
    for path in sorted(folder.rglob("*.py")):
        if not path.is_file() or path.is_symlink():
            continue
        rel = path.relative_to(folder).with_suffix("").parts
        is_pkg = rel[-1] == "__init__"
        name = ".".join(rel[:-1] if is_pkg else rel)
        data = path.read_bytes()
        total += len(data)
        if total > MAX_SOURCE_BYTES:
            raise ValueError(f"the payload's sources pass {MAX_SOURCE_BYTES} bytes")
        if name:
            out[name] = (str(path), data.decode("utf-8"), is_pkg)
    return out


def _drop_privileges(user: str | None, uid: int) -> str:
    if uid != 0:
        return f"unchanged (uid {uid}: not root)"
    if user is None:
        return "unchanged (uid 0: no sandbox user asked for)"
    pw = pwd.getpwnam(user)  # KeyError: no such user, the worker does not start
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    if os.geteuid() == 0 or os.getuid() == 0:
        raise PermissionError(f"still root after becoming {user!r}")
    return user


def _limits(memory_mb: int, cpu_s: int) -> None:
    address_space = memory_mb * 1024 * 1024
    used = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    if used >= address_space:
        raise MemoryError(f"memory_mb {memory_mb} is below the {used >> 20} MiB the interpreter already maps")
    for which, value in (
        (resource.RLIMIT_AS, address_space), (resource.RLIMIT_CPU, cpu_s), (resource.RLIMIT_NOFILE, NOFILE),
        (resource.RLIMIT_NPROC, 0), (resource.RLIMIT_CORE, 0), (resource.RLIMIT_FSIZE, 0),
    ):  # fmt: skip
        hard = value + 1 if which == resource.RLIMIT_CPU else value  # SIGXCPU first, SIGKILL a second later
        resource.setrlimit(which, (value, hard))


def _no_new_privileges() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


class _Sources(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports the payload's own modules from memory (it may no longer read its folder)."""

    def __init__(self, sources: dict[str, tuple[str, str, bool]]) -> None:
        self.sources = sources

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in self.sources:
            return None
        filename, _, is_pkg = self.sources[name]
        return importlib.util.spec_from_loader(name, self, origin=filename, is_package=is_pkg)

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: Any) -> None:
        filename, text, _ = self.sources[module.__name__]
        module.__file__ = filename
        exec(compile(text, filename, "exec"), module.__dict__)


def start(hello: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Confine this process as `hello` says, then load the payload: (its decide, status)."""
    uid = os.geteuid()  # before a user namespace shows it as nobody
    net = _unshare_net() if hello.get("isolate_net", True) else "not isolated: turned off"
    entry = str(hello["entry_point"])
    sources = _read_sources(Path("files"))
    module_name = ".".join(Path(entry).with_suffix("").parts)
    if module_name not in sources:
        raise FileNotFoundError(f"files/{entry} is not among the payload's sources")
    for name in PRELOAD:  # what the payload may still import should the user not read the stdlib
        importlib.import_module(name)
    asked = hello.get("user", "nobody")
    user = _drop_privileges(None if asked is None else str(asked), uid)
    _no_new_privileges()
    _limits(int(hello["memory_mb"]), int(hello["cpu_s"]))
    sys.meta_path.append(_Sources(sources))
    module = importlib.import_module(module_name)
    decide = getattr(module, "decide", None)
    if not callable(decide):
        raise AttributeError(f"{entry} has no function decide(image, policy)")
    return decide, {"net": net, "user": user}


def decisions_of(result: Any) -> list[dict[str, Any]]:
    """A decide() result as [{device_id, kw, reason}]: the example's {"setpoints": {id: kW},
    "reason": ...} or {"decisions": [...]} (checked by the core, not here)."""
    if not isinstance(result, dict):
        raise TypeError(f"decide() returned {type(result).__name__}, not a map")
    if "decisions" in result:
        return list(result["decisions"])
    setpoints = result.get("setpoints", {})
    if not isinstance(setpoints, dict):
        raise TypeError("decide()['setpoints'] must map device ids to kW")
    reason = result.get("reason", "")
    return [{"device_id": d, "kw": kw, "reason": reason} for d, kw in setpoints.items()]


def _problem(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" at {Path(where[0].filename).name}:{where[0].lineno}" if where else ""
    return f"{type(exc).__name__}: {exc}{at}"[:MAX_MESSAGE_CHARS]


def serve(decide: Any, inp: int, out: int) -> int:
    """Answer cycles until `stop` or end of file."""
    while True:
        msg = read_message(inp, MAX_REQUEST_BYTES)
        if msg is None or msg.get("t") == "stop":
            return 0
        n = msg.get("n")
        try:
            reply = {"t": "decisions", "n": n, "decisions": decisions_of(decide(msg["image"], msg["policy"]))}
            reply["cpu_s"] = time.process_time()
            data = encode(reply, MAX_REPLY_BYTES)
        except Exception as exc:  # MemoryError too: the payload failed, the worker answers
            reply = {"t": "error", "n": n, "message": _problem(exc), "cpu_s": time.process_time()}
            data = encode(reply, MAX_REPLY_BYTES)
        write_all(out, data)


def main() -> int:
    out = os.dup(1)
    os.dup2(2, 1)  # the payload's print() goes to stderr, never into the protocol
    hello = read_message(0, MAX_REQUEST_BYTES)
    if hello is None:
        return 0
    try:
        decide, status = start(hello)
    except BaseException as exc:
        write_all(out, encode({"t": "error", "n": 0, "message": _problem(exc)}, MAX_REPLY_BYTES))
        return 3
    write_all(out, encode({"t": "ready", "pid": os.getpid(), **status}, MAX_REPLY_BYTES))
    return serve(decide, 0, out)


if __name__ == "__main__":
    sys.exit(main())
