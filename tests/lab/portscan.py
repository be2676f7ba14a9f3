"""A small port scanner for the lab tests, run inside a network namespace as a script
(`ip netns exec NS python portscan.py < JSON`): plain non-blocking TCP connects and UDP
probes, in batches, each with a timeout. Prints {"open": [...], "refused": [...],
"silent": [...]} as JSON: TCP open = connected, UDP open = an answer came back; refused =
RST or ICMP port unreachable; silent = nothing within the timeout (dropped, or a UDP
service that does not answer garbage, as WireGuard does not). Stdlib only."""

from __future__ import annotations

import errno
import json
import resource
import selectors
import socket
import sys
import time

BATCH = 500


def _tcp(batch: list[tuple[str, int]], timeout_s: float, result: dict[str, list[list[object]]]) -> None:
    sel = selectors.DefaultSelector()
    for host, port in batch:
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex((host, port))
        if err in (0, errno.EINPROGRESS):
            sel.register(s, selectors.EVENT_WRITE, (host, port))
        else:
            result["refused" if err == errno.ECONNREFUSED else "silent"].append(["tcp", host, port])
            s.close()
    end = time.monotonic() + timeout_s
    while sel.get_map() and time.monotonic() < end:
        for key, _ in sel.select(timeout=max(0.0, end - time.monotonic())):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            kind = "open" if err == 0 else "refused" if err == errno.ECONNREFUSED else "silent"
            result[kind].append(["tcp", *key.data])
            sel.unregister(s)
            s.close()
    for key in list(sel.get_map().values()):
        result["silent"].append(["tcp", *key.data])
        key.fileobj.close()  # type: ignore[union-attr]
    sel.close()


def _udp(batch: list[tuple[str, int]], timeout_s: float, result: dict[str, list[list[object]]]) -> None:
    sel = selectors.DefaultSelector()
    for host, port in batch:
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.connect((host, port))
        s.send(b"\x00meshems-portscan")
        sel.register(s, selectors.EVENT_READ, (host, port))
    end = time.monotonic() + timeout_s
    while sel.get_map() and time.monotonic() < end:
        for key, _ in sel.select(timeout=max(0.0, end - time.monotonic())):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                s.recv(2048)
                kind = "open"
            except ConnectionRefusedError:
                kind = "refused"
            except OSError:
                kind = "silent"
            result[kind].append(["udp", *key.data])
            sel.unregister(s)
            s.close()
    for key in list(sel.get_map().values()):
        result["silent"].append(["udp", *key.data])
        key.fileobj.close()  # type: ignore[union-attr]
    sel.close()


def scan(targets: list[tuple[str, str, int]], timeout_s: float) -> dict[str, list[list[object]]]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * BATCH)), hard))
    result: dict[str, list[list[object]]] = {"open": [], "refused": [], "silent": []}
    for proto, probe in (("tcp", _tcp), ("udp", _udp)):
        todo = [(h, p) for pr, h, p in targets if pr == proto]
        for i in range(0, len(todo), BATCH):
            probe(todo[i : i + BATCH], timeout_s, result)
    for kind in result:
        result[kind].sort()
    return result


if __name__ == "__main__":
    args = json.loads(sys.stdin.read())
    print(json.dumps(scan([tuple(t) for t in args["targets"]], float(args["timeout_s"]))))
