"""The sandbox with real worker processes: a payload that answers is used; one that crashes,
raises, hangs, forks, allocates past memory_mb or answers past a device limit fails in its own
way and is counted; the network is out of reach where the worker could make a namespace; every
worker is gone after each test."""

from __future__ import annotations

import os
import pwd
import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshems.adapters.sandbox import Sandbox, SandboxSpec
from meshems.core.payload_decisions import check_decisions
from meshems.core.payload_shadow import shadow_cycle, verdict
from meshems.core.zone_records import Device

pytestmark = pytest.mark.integration

IMAGE = {"grid_kw": 42.0, "batteries": [{"id": "n1-bat", "ok": True, "power_kw": 0.0, "soc_pct": 60.0,
                                         "max_discharge_kw": 50.0, "max_charge_kw": 50.0}]}  # fmt: skip
POLICY = {"import_limit_kw": 30.0}
DEVICES = {"n1-bat": Device("n1-bat", "battery", "n1", -50.0, 50.0)}
EXAMPLE = Path(__file__).resolve().parents[2] / "cluster-configs/payloads/peak-guard/controller.py"


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def make(tmp_path: Path) -> Iterator:
    """make(source, **spec) -> a Sandbox of a payload folder holding files/controller.py;
    every sandbox is stopped and its worker checked gone at teardown."""
    made: list[tuple[Sandbox, list[int]]] = []

    def _make(source: str, clock: FakeClock | None = None, **options: object) -> Sandbox:
        folder = tmp_path / f"p{len(made)}"
        (folder / "files").mkdir(parents=True)
        (folder / "files" / "controller.py").write_text(textwrap.dedent(source))
        spec = SandboxSpec(
            "test", folder, "controller.py", **{"memory_mb": 64, "cycle_budget_ms": 200, **options}
        )
        sb = Sandbox(spec, clock or time.monotonic)
        made.append((sb, []))
        return sb

    yield _make
    for sb, _ in made:
        pid = sb.pid
        sb.stop()
        assert sb.pid is None
        if pid is not None:
            assert not Path(f"/proc/{pid}").exists(), f"worker {pid} outlived its sandbox"


def gone(pid: int | None) -> bool:
    return pid is not None and not Path(f"/proc/{pid}").exists()


def test_the_example_controller_answers_and_its_decisions_pass_the_checks(make) -> None:
    sb = make(EXAMPLE.read_text())
    out = sb.cycle(IMAGE, POLICY)
    assert out.status == "ok", out
    assert out.decisions == (
        {"device_id": "n1-bat", "kw": 12.0, "reason": "import 42.0 kW over the 30.0 kW limit"},
    )
    checked = check_decisions(list(out.decisions), DEVICES)
    assert checked.ok and checked.accepted == (("n1-bat", 12.0, "import 42.0 kW over the 30.0 kW limit"),)
    pid = sb.pid
    for _ in range(20):
        assert sb.cycle(IMAGE, POLICY).status == "ok"
    st = sb.status()
    assert st["pid"] == pid and st["starts"] == 1 and st["cycles"] == st["ok"] == 21
    assert st["timeouts"] == st["crashes"] == st["errors"] == 0
    assert 0 < st["p50_ms"] <= st["p99_ms"] < 200


def test_a_crash_is_counted_and_the_worker_restarts_after_a_backoff_that_doubles(make) -> None:
    clock = FakeClock()
    sb = make("""
        import os
        def decide(image, policy):
            if image.get("crash"):
                os._exit(7)
            return {"setpoints": {}}
    """, clock=clock)  # fmt: skip
    assert sb.cycle(IMAGE, POLICY).status == "ok"
    first = sb.pid
    out = sb.cycle({**IMAGE, "crash": True}, POLICY)
    assert out.status == "crash" and out.code == "E_PAYLOAD_CRASH"
    assert "exited with code 7" in out.message and gone(first)
    assert sb.cycle(IMAGE, POLICY).status == "backoff"  # 0.5 s not passed
    clock.now_s += 0.6
    assert sb.cycle(IMAGE, POLICY).status == "ok"
    assert sb.pid != first
    assert sb.cycle({**IMAGE, "crash": True}, POLICY).status == "crash"  # the backoff starts again at 0.5 s
    clock.now_s += 0.6
    assert sb.cycle(IMAGE, POLICY).status == "ok"
    assert sb.cycle({**IMAGE, "crash": True}, POLICY).status == "crash"
    assert sb.cycle({**IMAGE, "crash": True}, POLICY).status == "backoff"
    clock.now_s += 0.6
    out = sb.cycle({**IMAGE, "crash": True}, POLICY)
    assert out.status == "crash"  # restarted, crashed again: two in a row
    clock.now_s += 0.6
    assert sb.cycle(IMAGE, POLICY).status == "backoff"  # now 1 s
    clock.now_s += 0.5
    assert sb.cycle(IMAGE, POLICY).status == "ok"
    st = sb.status()
    assert st["crashes"] == 4 and st["starts"] == 5 and st["state"] == "running"
    assert st["last_error"].startswith("E_PAYLOAD_CRASH")


def test_an_exception_is_an_error_and_the_worker_keeps_running(make) -> None:
    sb = make("""
        def decide(image, policy):
            print("chatter on stdout does not reach the protocol")
            return {"setpoints": {"n1-bat": 1.0 / image["zero"]}}
    """)  # fmt: skip
    out = sb.cycle({**IMAGE, "zero": 0}, POLICY)
    assert out.status == "error" and out.code == "E_PAYLOAD_ERROR" and not out.decisions
    assert "ZeroDivisionError" in out.message and "controller.py:4" in out.message
    pid = sb.pid
    assert sb.cycle({**IMAGE, "zero": 2}, POLICY).decisions[0]["kw"] == 0.5
    assert sb.pid == pid and sb.status()["errors"] == 1


@pytest.mark.parametrize("body", ["while True:\n        pass", "import time\n    time.sleep(30)"])
def test_a_cycle_past_the_budget_kills_the_worker_and_counts_a_timeout(make, body: str) -> None:
    sb = make(f"def decide(image, policy):\n    {body}\n", cycle_budget_ms=50)
    sb.start()
    pid = sb.pid
    t0 = time.monotonic()
    out = sb.cycle(IMAGE, POLICY)
    assert time.monotonic() - t0 < 2.0
    assert out.status == "timeout" and out.code == "E_PAYLOAD_TIMEOUT"
    assert 50 <= out.elapsed_ms < 1000
    assert gone(pid) and sb.pid is None
    st = sb.status()
    assert st["timeouts"] == 1 and st["state"] == "backoff"
    record = shadow_cycle(out.status, out.elapsed_ms, None, message=out.message)
    v = verdict([record], want_cycles=30, budget_ms=50)
    assert v.state == "failed" and "budget" in v.reasons[0]


def test_setpoints_past_a_device_limit_are_refused_by_the_core_checks(make) -> None:
    sb = make("""
        def decide(image, policy):
            return {"decisions": [
                {"device_id": "n1-bat", "kw": 999.0, "reason": "too much"},
                {"device_id": "ghost", "kw": 1.0, "reason": "unknown"},
                {"device_id": "n1-bat2", "kw": float("nan"), "reason": "not a number"},
            ]}
    """)  # fmt: skip
    out = sb.cycle(IMAGE, POLICY)
    assert out.status == "ok"
    devices = {**DEVICES, "n1-bat2": Device("n1-bat2", "battery", "n1", -10.0, 10.0)}
    checked = check_decisions(list(out.decisions), devices)
    assert checked.accepted == ()
    assert [r.code for r in checked.refused] == ["E_LIMIT", "E_UNKNOWN_DEVICE", "E_CMD_MALFORMED"]
    v = verdict([shadow_cycle("ok", out.elapsed_ms, checked)], want_cycles=1, budget_ms=200)
    assert v.state == "failed" and v.refused == 3 and "E_LIMIT" in v.reasons[0]


def test_memory_past_memory_mb_fails_the_cycle(make) -> None:
    sb = make("""
        def decide(image, policy):
            block = bytearray(image["mb"] * 1024 * 1024)
            return {"setpoints": {"n1-bat": float(len(block) > 0)}}
    """, memory_mb=48)  # fmt: skip
    assert sb.cycle({**IMAGE, "mb": 2}, POLICY).status == "ok"  # within the limit
    out = sb.cycle({**IMAGE, "mb": 200}, POLICY)
    assert out.status in ("error", "crash") and not out.decisions
    assert "MemoryError" in out.message or "killed" in out.message
    assert sb.status()["ok"] == 1


def test_fork_is_refused_and_the_worker_runs_as_the_sandbox_user(make) -> None:
    sb = make("""
        import os
        def decide(image, policy):
            try:
                os.fork()
                verdict = "forked"
            except OSError as exc:
                verdict = f"fork refused errno {exc.errno}"
            return {"setpoints": {"n1-bat": 0.0}, "reason": f"{verdict}; uid {os.getuid()}"}
    """)  # fmt: skip
    out = sb.cycle(IMAGE, POLICY)
    assert out.status == "ok", out
    reason = out.decisions[0]["reason"]
    assert reason.startswith("fork refused"), reason
    if os.geteuid() == 0:
        assert reason.endswith(f"uid {pwd.getpwnam('nobody').pw_uid}") and sb.status()["user"] == "nobody"


def test_the_network_is_out_of_reach_in_the_worker_namespace(make) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        port = listener.getsockname()[1]
        sb = make(
            f"""
            import socket
            def decide(image, policy):
                try:
                    socket.create_connection(("127.0.0.1", {port}), timeout=0.5).close()
                    verdict = "connected"
                except OSError as exc:
                    verdict = f"refused: {{exc}}"
                return {{"setpoints": {{"n1-bat": 0.0}}, "reason": verdict}}
        """,
            user=None,
        )  # fmt: skip  (stays root where it is: the namespace alone keeps it off the network)
        sb.start()
        if not sb.net.startswith("isolated"):
            if os.environ.get("MESHEMS_REQUIRE_LAB") == "1":
                pytest.fail(f"MESHEMS_REQUIRE_LAB=1 but the worker has no network namespace: {sb.net}")
            pytest.skip(f"no network namespace for the worker here: {sb.net}")
        out = sb.cycle(IMAGE, POLICY)
        assert out.status == "ok", out
        assert out.decisions[0]["reason"].startswith("refused"), out.decisions[0]["reason"]
    finally:
        listener.close()


def test_a_payload_without_decide_or_below_the_interpreter_memory_does_not_start(make) -> None:
    sb = make("LIMIT_KW = 30.0\n")
    out = sb.cycle(IMAGE, POLICY)
    assert out.status == "start_failed" and out.code == "E_PAYLOAD_SANDBOX"
    assert "has no function decide(image, policy)" in out.message
    assert sb.cycle(IMAGE, POLICY).status == "backoff"
    tight = make("def decide(image, policy):\n    return {}\n", memory_mb=16)
    out = tight.cycle(IMAGE, POLICY)
    assert out.status == "start_failed" and "memory_mb 16" in out.message, out
    assert tight.status()["start_failures"] == 1


def test_an_answer_past_the_reply_cap_is_an_error_not_a_hang(make) -> None:
    sb = make("""
        def decide(image, policy):
            return {"setpoints": {f"dev-{i}-{'x' * 40}": 1.0 for i in range(20000)}}
    """)  # fmt: skip
    out = sb.cycle(IMAGE, POLICY)
    assert out.status == "error" and "at most 262144" in out.message, out
    assert sb.cycle({**IMAGE}, POLICY).status == "error"  # the same worker answers again


def test_the_payload_modules_import_one_another_from_memory(tmp_path: Path) -> None:
    folder = tmp_path / "multi"
    (folder / "files" / "lib").mkdir(parents=True)
    (folder / "files" / "lib" / "__init__.py").write_text("")
    (folder / "files" / "lib" / "share.py").write_text("def of(kw):\n    return kw / 2\n")
    code = (
        "from lib.share import of\ndef decide(image, policy):\n    return {'setpoints': {'n1-bat': of(8)}}\n"
    )
    (folder / "files" / "controller.py").write_text(code)
    with Sandbox(SandboxSpec("multi", folder, "controller.py", memory_mb=64)) as sb:
        out = sb.cycle(IMAGE, POLICY)
        pid = sb.pid
        assert out.status == "ok" and out.decisions[0]["kw"] == 4.0, out
    assert gone(pid)


BURN = """import time

def burn(ms):
    end = time.process_time() + ms / 1000
    while time.process_time() < end:
        pass
"""


@pytest.mark.parametrize(
    "source",
    [  # CPU inside decide(), within its cycle budget; CPU between cycles, from a timer signal
        BURN + "\ndef decide(image, policy):\n    burn(30)\n    return {'decisions': []}\n",
        BURN + "\nimport _signal as signal  # signal.py is out of reach, the builtin is not\n"
        "signal.signal(signal.SIGALRM, lambda *_: burn(20))\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.03, 0.03)\n\n"
        "def decide(image, policy):\n    return {'decisions': []}\n",
    ],
    ids=["in-decide", "between-cycles"],
)
def test_a_worker_past_its_cpu_share_is_killed_and_one_within_it_keeps_running(make, source: str) -> None:
    def run(sb: Sandbox, cycles: int) -> list:
        outs = []
        for _ in range(cycles):
            outs.append(sb.cycle(IMAGE, POLICY))
            if outs[-1].status != "ok":
                break
            time.sleep(0.05)
        return outs

    greedy = make(source, cpu_pct=5, cpu_window_s=0.4)
    greedy.start()
    pid = greedy.pid
    outs = run(greedy, 40)
    last = outs[-1]
    assert last.status == "crash" and last.code == "E_PAYLOAD_CPU", [o.status for o in outs]
    assert "past its cpu_pct of 5 %" in last.message and gone(pid)
    st = greedy.status()
    assert st["cpu_overruns"] == 1 and st["crashes"] == 1 and st["state"] == "backoff"
    v = verdict([shadow_cycle(o.status, o.elapsed_ms, None, message=o.message) for o in outs], 30, 200)
    assert v.state == "failed" and "E_PAYLOAD_CPU" not in v.reasons[0] and "cpu_pct" in v.reasons[0]

    calm = make(source, cpu_pct=95, cpu_window_s=0.4)
    outs = run(calm, 12)
    assert [o.status for o in outs] == ["ok"] * 12 and calm.status()["cpu_overruns"] == 0
