"""What the commands print: JSON, rich tables on stdout, the error line on stderr, and the
cells and tables several commands share (`status_table`, `overlay_cell`).

Presentation only; imports rich inside the functions (about 60 ms), so JSON output and
`--help` never load it.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from meshems.core.errors import MeshemsError


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def fail(code: object, message: object) -> int:
    """`error CODE: message` on stderr; the exit code of a failed operation (1)."""
    print(f"error {code}: {message}", file=sys.stderr)
    return 1


def print_error(exc: MeshemsError) -> None:
    """A MeshemsError as the CLI reports it: `error CODE: message` on stderr (red on a terminal)."""
    from rich.console import Console

    Console(stderr=True).print(
        f"[red]error[/red] {exc.code}: {exc.message}",
        highlight=False,
        markup=True,
        soft_wrap=True,
    )


def out_console() -> Console:
    """stdout console; a pipe or file gets full-width tables instead of 80 truncated columns."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


def table(*columns: str, right: tuple[str, ...] = (), **kwargs: Any) -> Table:
    """A table with bold headers and these columns (the ones in `right` right-aligned)."""
    from rich.table import Table

    t = Table(header_style="bold", **kwargs)
    for col in columns:
        t.add_column(col, justify="right" if col in right else "left")
    return t


def size(n: float) -> str:
    """Bytes as `512B`, `1.2K`, `3.4M`, `1.0G`."""
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}G"  # pragma: no cover


def overlay_cell(peers: Any) -> str:
    """WireGuard peers as `n2 3s rx 1.2K tx 3.4K, ...`: handshake age and transfer counters
    per peer, stale ones marked."""
    if peers is None:
        return "-"
    if isinstance(peers, dict):
        return f"[red]{str(peers.get('error', '?'))[:60]}[/red]"
    parts = []
    for p in peers:
        age = "never" if p.get("handshake_age_s") is None else f"{p['handshake_age_s']:.0f}s"
        text = f"{p['peer']} {age} rx {size(p.get('rx_bytes', 0))} tx {size(p.get('tx_bytes', 0))}"
        parts.append(f"[red]{text} stale[/red]" if p.get("stale") else text)
    return ", ".join(parts)


def clock_cell(offsets: dict[str, float] | None) -> str:
    """The largest peer clock offset a node measured, red beyond 0.5 s (A_CLOCK_SKEW)."""
    if not offsets:
        return "-"
    peer, worst = max(offsets.items(), key=lambda kv: abs(kv[1]))
    text = f"{worst * 1000:+.0f}ms {peer}"
    return f"[red]{text}[/red]" if abs(worst) > 0.5 else text


def status_table(rows: list[dict[str, Any]]) -> Table:
    """Every node's Raft status, one row each, as `meshems status` shows it."""
    overlay = any(r.get("overlay") is not None for r in rows)
    cols = [
        "ID",
        "ENDPOINT",
        "REACHABLE",
        "ROLE",
        "TERM",
        "COMMIT",
        "APPLIED",
        "LAG",
        "QUORUM",
        "UPTIME",
        "CLOCK",
    ]
    cols += ["LEADER", *(["WG HANDSHAKES"] if overlay else [])]
    t = table(*cols, right=("TERM", "COMMIT", "APPLIED", "LAG"), title=None, show_lines=False)
    for r in rows:
        if not r.get("reachable"):
            t.add_row(r["id"], r["endpoint"], "[red]no[/red]", *["-"] * (len(cols) - 3))
            continue
        role = r["role"]
        role_s = f"[bold green]{role}[/bold green]" if role == "leader" else role
        t.add_row(
            r["id"],
            r["endpoint"],
            "yes",
            role_s,
            str(r["term"]),
            str(r["commit_index"]),
            str(r["applied_index"]),
            "-" if r.get("lag") is None else str(r["lag"]),
            "yes" if r["has_quorum"] else "[red]no[/red]",
            f"{r['uptime_s']:.0f}s",
            clock_cell(r.get("clock_offsets_s")),
            r.get("leader") or "-",
            *([overlay_cell(r.get("overlay"))] if overlay else []),
        )
    return t
