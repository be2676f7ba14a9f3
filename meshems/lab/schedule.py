"""The fault schedule of a lab run: a pure function of (seed, duration, kinds).

Owns which fault comes when and for how long; a fault names its target by role ("the
leader", "a follower") and a pick number, resolved against the live cluster when it is
injected. Pure: no clock, no I/O, no randomness but the seeded generator passed in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: every kind of fault the lab injects
KINDS: tuple[str, ...] = (
    "kill_leader",  # kill -9 the leader, restart it after the hold
    "pause_node",  # SIGSTOP any node (leader or not), SIGCONT after the hold
    "restart_node",  # graceful stop and start of any node
    "cut_link",  # drop the WireGuard link between the leader and one follower
    "partition_leader_minority",  # the leader on the minority side
    "partition_leader_majority",  # the leader on the majority side
    "lossy_links",  # every link drops 5-30 % of its packets at random
    "oneway_cut",  # the leader's packets to one follower dropped, or that follower's to it
    "clock_jump",  # a node's clocks jump 2-10 s forward or back, and back after the hold
    "blackout_node",  # power cut of any node: kill -9, its unsynced writes dropped, restart
    "blackout_all",  # power cut of every node at the same instant (a site blackout)
    "disk_full",  # a follower's or the leader's journal filesystem full (lab.diskfull), then room
)

#: the share of packets a lossy_links fault drops, chosen by its pick
LOSS_PERCENT: tuple[int, int] = (5, 30)


def clock_jump_s(pick: int) -> int:
    """The clock jump (s) of a clock_jump fault with this pick: 2 to 10, forward or back."""
    size = 2 + pick % 9
    return size if (pick >> 9) % 2 == 0 else -size


def loss_percent(pick: int) -> int:
    """The packet loss (%) of a lossy_links fault with this pick, within LOSS_PERCENT."""
    low, high = LOSS_PERCENT
    return low + pick % (high - low + 1)


@dataclass(frozen=True)
class Fault:
    at_s: float  # seconds after the start of the run
    kind: str
    hold_s: float  # how long the fault stays before it is undone
    pick: int  # which node / which split, resolved modulo the candidates at injection


def make_schedule(
    seed: int,
    duration_s: float,
    kinds: tuple[str, ...] = KINDS,
    hold_s: tuple[float, float] = (2.0, 5.0),
    gap_s: tuple[float, float] = (1.5, 3.0),
    warmup_s: float = 3.0,
) -> list[Fault]:
    """Faults one after another (never two at once) until `duration_s`; every kind comes
    once, in a seeded order, before any kind comes twice."""
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown fault kind {k!r}; known: {', '.join(KINDS)}")
    if not kinds:
        raise ValueError("no fault kinds given")
    rng = random.Random(seed)
    faults: list[Fault] = []
    t = warmup_s
    bag: list[str] = []
    while True:
        if not bag:
            bag = list(kinds)
            rng.shuffle(bag)
        hold = round(rng.uniform(*hold_s), 2)
        at = round(t, 2)
        if at + hold > duration_s:
            return faults
        faults.append(Fault(at, bag.pop(), hold, rng.randrange(1 << 16)))
        t += hold + rng.uniform(*gap_s)


def split(nodes: list[str], leader: str, leader_in_minority: bool, pick: int) -> tuple[list[str], list[str]]:
    """(minority, majority) sides of a partition with the leader on the side asked for."""
    others = sorted(n for n in nodes if n != leader)
    minority_size = (len(nodes) - 1) // 2
    if minority_size == 0:
        return [], list(nodes)
    rng = random.Random(pick)
    rng.shuffle(others)
    minority = [leader, *others[: minority_size - 1]] if leader_in_minority else others[:minority_size]
    majority = [n for n in nodes if n not in minority]
    return sorted(minority), sorted(majority)
