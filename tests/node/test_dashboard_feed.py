"""The dashboard's snapshot and import history from a hand-built zone state (two nodes' reports,
a policy, a dispatch record), and the feed's server-sent events and the login's cookie."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any, cast

from meshems.adapters.consensus import RaftStatus
from meshems.core.clock import ClockWatch
from meshems.core.cluster import ZoneState
from meshems.core.config import ClusterConfig
from meshems.core.policy import Policy
from meshems.core.zone_records import Device, DispatchRecord, Member, NodeReport, Reading
from meshems.node.dashboard import Dashboard, login_cookie, sse
from meshems.node.dashboard_feed import HISTORY_S, ImportHistory, snapshot
from meshems.node.views import Views
from meshems.ops.http import Raw, Request
from tests.node.metrics_fixtures import FakeClock, FakeRaft

LIMITS = Policy(import_limit_kw=20.0)


def _state(policy: Policy | None = LIMITS) -> ZoneState:
    members = {n: Member(n, f"127.0.0.1:{9000 + i}", f"127.0.0.1:{9100 + i}") for i, n in enumerate("abc")}
    devices = {
        d.id: d
        for d in (
            Device("a-meter", "meter", "a", 0, 0),
            Device("a-bat", "battery", "a", -50, 50),
            Device("a-pv", "pv", "a", 0, 40),
            Device("b-meter", "meter", "b", 0, 0),
            Device("b-relays", "relay", "b", 0, 0),
        )
    }
    reports = {
        "a": NodeReport("a", 7, 2, 40, (
            Reading("a-meter", "ok", (("power_kw", 12.5),)),
            Reading("a-bat", "ok", (("power_kw", -3.25), ("soc_pct", 61.04))),
            Reading("a-pv", "ok", (("power_kw", 8.0),)),
        )),
        "b": NodeReport("b", 5, 2, 41, (
            Reading("b-meter", "ok", (("power_kw", 9.5),)),
            Reading("b-relays", "ok", (("relay_1", 1.0), ("load_1_kw", 3.0),
                                       ("relay_2", 0.0), ("load_2_kw", 4.0))),
        )),
    }  # fmt: skip
    dispatch = DispatchRecord(
        12, 2, 42, (("zone_import_kw", 21.0), ("import_limit_kw", 20.0)),
        (("a-bat", "import_limit", "peak shaving: " + "x" * 500), ("b-relays:2", "load_shedding", "over")),
    )  # fmt: skip
    return ZoneState(members=members, devices=devices, reports=reports, policy=policy, last_dispatch=dispatch)


def _views(state: ZoneState, role: str = "follower", leader: str | None = "b") -> Views:
    status = RaftStatus(role, 2, 42, 42, 42, leader, True, 10, {"b": True, "c": False}, {})
    raft = FakeRaft(status, state)
    cfg = cast(ClusterConfig, SimpleNamespace(zone="z1", cluster="c1"))
    cloud = {"link": "connected", "backlog": 3, "alarms": ["A_CLOUD_BACKLOG"], "stream_seq": 9}
    clock = ClockWatch()
    views = Views(cfg, "a", cast(Any, raft), cast(Any, SimpleNamespace(mode="normal")), None,
                  lambda: cloud, lambda: None, clock)  # fmt: skip
    return views


def test_the_snapshot_holds_members_grid_batteries_pv_shed_loads_alarms_dispatch_and_cloud() -> None:
    snap = snapshot(_views(_state()), 1234.5678)
    json.dumps(snap)  # what the feed sends must be JSON
    assert snap["t"] == 1234.568 and snap["node"] == "a" and snap["zone"] == "z1" and snap["leader"] == "b"
    assert snap["members"] == [
        {"id": "a", "role": "follower", "self": True},
        {"id": "b", "role": "leader", "self": False},
        {"id": "c", "role": "unreachable", "self": False},  # not connected to this node
    ]
    # the import is the meters' sum now (12.5 + 9.5), not the dispatch's older 21.0
    assert snap["grid"] == {"import_kw": 22.0, "import_limit_kw": 20.0, "export_limit_kw": 1e9}
    assert snap["batteries"] == [{"id": "a-bat", "node": "a", "ok": True, "power_kw": -3.25, "soc_pct": 61.0}]
    assert snap["pv"] == [{"id": "a-pv", "node": "a", "ok": True, "power_kw": 8.0}] and snap["pv_kw"] == 8.0
    assert snap["shed"] == ["b-relays:2"]  # channel 2 is open
    assert snap["alarms"] == ["A_CLOUD_BACKLOG"]
    d = snap["dispatch"]
    assert (d["cycle"], d["index"], d["inputs"]["zone_import_kw"]) == (12, 42, 21.0)
    assert [x["target"] for x in d["decisions"]] == ["a-bat", "b-relays:2"]
    assert len(d["decisions"][0]["reason"]) == 200 and d["decisions"][1]["controller"] == "load_shedding"
    assert snap["cloud"] == {"link": "connected", "backlog": 3}


def test_without_meters_the_import_is_the_last_dispatch_s_and_without_policy_its_limit() -> None:
    state = _state(policy=None)
    state = ZoneState(
        members=state.members,
        devices={k: v for k, v in state.devices.items() if v.kind != "meter"},
        reports=state.reports,
        last_dispatch=state.last_dispatch,
    )
    views = _views(state, role="leader", leader="a")
    snap = snapshot(views, 0.0)
    assert snap["grid"]["import_kw"] == 21.0 and snap["grid"]["import_limit_kw"] == 20.0
    assert snap["leader"] == "a" and snap["members"][0] == {"id": "a", "role": "leader", "self": True}


def test_an_empty_zone_gives_a_snapshot_with_nothing_in_it() -> None:
    snap = snapshot(_views(ZoneState(), leader=None), 0.0)
    assert snap["leader"] is None and snap["members"] == [] and snap["dispatch"] is None
    assert snap["grid"]["import_kw"] is None and snap["batteries"] == [] and snap["shed"] == []


def test_the_history_keeps_one_hour_of_samples_as_columns() -> None:
    clock = FakeClock(0.0)
    history = ImportHistory(_views(_state()), clock)
    for _ in range(HISTORY_S + 5):
        history.sample()
        clock.now += 1.0
    cols = history.columns()
    assert len(cols["t"]) == HISTORY_S and cols["t"][0] == 5.0 and cols["t"][-1] == HISTORY_S + 4.0
    assert set(cols["import_kw"]) == {22.0} and set(cols["import_limit_kw"]) == {20.0}


def test_the_feed_sends_the_history_first_then_a_snapshot_per_interval() -> None:
    clock = FakeClock(100.0)
    board = Dashboard(_views(_state()), interval_s=0.01, wall=clock)
    board.history.sample()

    async def first(n: int) -> list[bytes]:
        out, feed = [], board.feed()
        async for chunk in feed:
            out.append(chunk)
            if len(out) == n:
                break
        await feed.aclose()
        return out

    chunks = asyncio.run(first(3))
    assert chunks[0].startswith(b"retry: 2000\n\nevent: history\ndata: ")
    history = json.loads(chunks[0].split(b"data: ", 1)[1])
    assert history == {"t": [100.0], "import_kw": [22.0], "import_limit_kw": [20.0]}
    for chunk in chunks[1:]:
        assert chunk.startswith(b"data: ") and chunk.endswith(b"\n\n") and chunk.count(b"\n") == 2
        assert json.loads(chunk[len(b"data: ") :])["leader"] == "b"
    assert sse({"a": 1}, "x") == b'event: x\ndata: {"a":1}\n\n'


def test_streams_share_one_snapshot_per_interval() -> None:
    wall, mono = FakeClock(100.0), FakeClock(5.0)
    board = Dashboard(_views(_state()), interval_s=1.0, wall=wall, clock=mono)
    first = board.latest()
    wall.now += 0.5
    mono.now += 0.5
    assert board.latest() is first  # another stream within the interval: the same bytes
    wall.now += 0.5
    mono.now += 0.5
    later = board.latest()
    assert later is not first and json.loads(later[len(b"data: ") :])["t"] == 101.0


def test_the_login_sets_a_strict_httponly_cookie_and_drops_the_token_from_the_url() -> None:
    board = Dashboard(_views(_state()))

    def page(query: dict[str, str]) -> tuple[int, Any]:
        return asyncio.run(board.page(Request("GET", "/dashboard", query, {})))

    status, body = page({"token": "abc.DEF-123_x"})
    assert status == 303 and isinstance(body, Raw) and body.headers is not None
    assert body.headers["Location"] == "/dashboard"
    assert body.headers["Set-Cookie"] == login_cookie("abc.DEF-123_x")
    assert all(f in body.headers["Set-Cookie"] for f in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"))
    status, body = page({"token": "a\r\nSet-Cookie: x=1"})  # never into a header
    assert status == 400
    status, body = page({})
    assert status == 200 and isinstance(body, Raw) and body.content_type.startswith("text/html")
    assert b"<script>" not in body.body and b'<script src="/dashboard/app.js">' in body.body  # CSP: no inline
    assert body.headers is not None and "script-src 'self'" in body.headers["Content-Security-Policy"]
    assert board.files["/dashboard/vendor/uPlot.LICENSE"][0].startswith(b"The MIT License")
