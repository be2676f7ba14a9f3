"""Incoming appendEntries, made Raft's: pysyncobj 0.3.17 deletes every entry after a
message's prevLogIdx and appends the message's entries, also when the entries it deletes
match (Raft deletes only from the first conflict). A resend of fewer entries than a
follower holds (a reply held for group commit moves the leader's next index back; batches
are capped) then shrinks the follower's log below what it acknowledged, and a leader that
dies before it sends them again can take a committed entry with it.

`trim_append` rewrites such a message into one pysyncobj applies without that deletion:
the entries the log already holds are dropped from it and its prevLogIdx moves past them;
when every entry matches and all the log holds after them is of the message's own term
(that leader's entries: a leader never deletes its own), prevLogIdx moves to the log's
end. pysyncobj then checks prevLogTerm, deletes only past a real conflict, and commits up
to min(leaderCommit, its last index), which Raft allows for entries of the leader's term.
Pure: a message and the log in, a message out; `raft_transport` calls it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def trim_append(message: Any, log: Sequence[Sequence[Any]]) -> dict[str, Any] | None:
    """The Raft-equivalent message to hand pysyncobj instead of `message`, or None to hand it
    on as it is (not an appendEntries of entries, a prevLogIdx the log does not hold or whose
    term differs, nothing after it)."""
    if not isinstance(message, dict) or message.get("type") != "append_entries":
        return None
    if "prevLogIdx" not in message or "transmission" in message or "serialized" in message:
        return None
    entries = message.get("entries") or []
    if not log:
        return None
    first, last = int(log[0][1]), int(log[-1][1])
    prev = message["prevLogIdx"]
    if (
        not isinstance(prev, int)
        or not first <= prev < last
        or log[prev - first][2] != message.get("prevLogTerm")
    ):
        return None
    held = 0  # the message's leading entries the log holds (same index and term)
    for e in entries:
        i = int(e[1]) - first
        if i >= len(log) or log[i][2] != e[2]:
            break
        held += 1
    if held < len(entries):  # a conflict or new entries: start the message there
        if held == 0:
            return None
        e = entries[held - 1]
        return {**message, "prevLogIdx": e[1], "prevLogTerm": e[2], "entries": list(entries[held:])}
    end = int(entries[-1][1]) if entries else prev
    if all(t == message.get("term") for _, _, t in log[end - first + 1 :]):
        return {**message, "prevLogIdx": last, "prevLogTerm": log[-1][2], "entries": []}
    if not entries:
        return None  # older entries after it may conflict: pysyncobj deletes them, as Raft may
    e = entries[-1]
    return {**message, "prevLogIdx": e[1], "prevLogTerm": e[2], "entries": []}
