"""Unit tests for `meshems.core.config`: loading and validating the cluster YAML.

An operator fixes a broken config from the error message alone, so every error case here
checks that `ConfigError` names the file and the exact key (`f.yaml: nodes[1].raft_port:
...`), carries exit code 2, and that valid configs resolve their relative paths against
the config file's folder rather than the working directory.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from meshems.adapters.config_file import load_config
from meshems.core.config import ClusterConfig, parse_config
from meshems.core.errors import ConfigError, MeshemsError

REPO = Path(__file__).resolve().parents[2]
LOCAL_3 = REPO / "cluster-configs" / "local-3.yaml"


def base() -> dict[str, Any]:
    """A small valid config: two nodes, one device each."""
    return {
        "cluster": "test",
        "zone": "zone-a",
        "raft": {"secret_file": "raft.secret"},
        "nodes": [
            {
                "id": "n1",
                "address": "127.0.0.1",
                "raft_port": 4001,
                "api_port": 5001,
                "devices": [{"id": "bat-1", "kind": "battery", "min_kw": -10, "max_kw": 10}],
            },
            {
                "id": "n2",
                "address": "127.0.0.1",
                "raft_port": 4002,
                "api_port": 5002,
                "devices": [{"id": "pv-2", "kind": "pv", "max_kw": 8, "capacity_kwh": None}],
            },
        ],
    }


def write(folder: Path, data: Any, name: str = "f.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


def mutated(change: Any) -> dict[str, Any]:
    data = copy.deepcopy(base())
    change(data)
    return data


# --- valid configs -----------------------------------------------------------------------


def test_the_shipped_local_3_config_loads() -> None:
    cfg = load_config(LOCAL_3)
    assert [n.id for n in cfg.nodes] == ["n1", "n2", "n3"]
    batteries = [d.id for n in cfg.nodes for d in n.devices if d.kind == "battery"]
    assert batteries == ["n1-bat", "n2-bat", "n3-bat"]
    # every device is wired to its node's simulated site (profiles exist, buses resolve)
    for n in cfg.nodes:
        assert n.sim_site is not None and (LOCAL_3.parent / n.sim_site).exists()
        assert {d.kind for d in n.devices} == {"meter", "battery", "pv", "relay"}
        assert all(d.bus == "site" and d.profile for d in n.devices)
    assert (cfg.cluster, cfg.zone) == ("demo", "zone-a")
    assert cfg.source == str(LOCAL_3)
    assert cfg.node("n2").raft_endpoint == "127.0.0.1:17102"
    assert cfg.node("n3").api_endpoint == "127.0.0.1:17203"
    # "../.meshems/local-3" from the file in cluster-configs/, not from the working directory
    assert cfg.secret_path.resolve() == REPO / ".meshems" / "local-3" / "raft.secret"
    assert cfg.data_dir("n1").resolve() == REPO / ".meshems" / "local-3" / "n1"
    assert all(n.initial for n in cfg.nodes)


def test_defaults_and_derived_values(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, base()))
    assert isinstance(cfg, ClusterConfig)
    r = cfg.raft
    assert (r.election_timeout_min_s, r.election_timeout_max_s, r.heartbeat_s) == (0.15, 0.3, 0.04)
    assert r.data_dir == ".meshems"
    assert r.leader_fallback_s is None and r.effective_leader_fallback_s == 0.3
    assert r.fsync is True  # durable before a node answers, unless told otherwise
    pv = cfg.node("n2").devices[0]
    assert (pv.min_kw, pv.max_kw, pv.capacity_kwh) == (0.0, 8.0, None)
    raft = {**base()["raft"], "leader_fallback_s": 1.5}
    assert parse_config({**base(), "raft": raft}).raft.effective_leader_fallback_s == 1.5


def test_config_objects_are_frozen(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, base()))
    with pytest.raises(Exception, match="frozen"):
        cfg.zone = "other"  # type: ignore[misc]
    with pytest.raises(Exception, match="frozen"):
        cfg.nodes[0].raft_port = 1  # type: ignore[misc]


def test_node_lookup_names_the_known_nodes(tmp_path: Path) -> None:
    path = write(tmp_path, base())
    cfg = load_config(path)
    assert cfg.node("n1").id == "n1"
    with pytest.raises(ConfigError) as info:
        cfg.node("n9")
    assert str(path) in info.value.message
    assert "'n9'" in info.value.message and "known: n1, n2" in info.value.message


# --- relative paths ----------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc" / "meshems"
    folder.mkdir(parents=True)
    data = mutated(lambda d: d["raft"].update(secret_file="keys/raft.secret", data_dir="../state"))
    write(folder, data)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # Loaded through a path relative to the working directory, still anchored at the file.
    cfg = load_config(Path("..") / "etc" / "meshems" / "f.yaml")
    assert cfg.secret_path == folder.resolve() / "keys" / "raft.secret"
    assert cfg.data_dir("n2") == folder.resolve() / ".." / "state" / "n2"
    assert cfg.data_dir("n2").resolve() == (tmp_path / "etc" / "state" / "n2").resolve()


def test_absolute_and_home_paths_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    secret = tmp_path / "abs" / "raft.secret"
    data = mutated(lambda d: d["raft"].update(secret_file=str(secret), data_dir="~/meshems"))
    cfg = load_config(write(tmp_path, data))
    assert cfg.secret_path == secret
    assert cfg.data_dir("n1") == tmp_path / "home" / "meshems" / "n1"


def test_in_memory_configs_leave_relative_paths_alone() -> None:
    cfg = parse_config(mutated(lambda d: d["raft"].update(data_dir="var")))
    assert cfg.source == "<memory>"
    assert cfg.secret_path == Path("raft.secret")
    assert cfg.data_dir("n1") == Path("var") / "n1"


# --- file-level errors -------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    err = load_error(path)
    assert err.message == f"{path}: config file not found"
    assert err.exit_code == 2 and err.code == "E_CONFIG"
    assert str(err) == f"E_CONFIG: {path}: config file not found"
    assert err.context["file"] == str(path)


def test_a_directory_is_not_a_config(tmp_path: Path) -> None:
    err = load_error(tmp_path)
    assert err.message.startswith(f"{tmp_path}: cannot read config")


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("cluster: test  # café\n".encode("latin-1"))
    err = load_error(path)
    assert err.message.startswith(f"{path}: not UTF-8")
    assert err.exit_code == 2


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("cluster: test\nzone: a\n\tbad: 1\n", 3),
        ("cluster: test\nraft:\n  secret_file: x\n   data_dir: y\n", 4),
        ("cluster: test\nzone: [a, b\nraft: {}\n", 3),
        ("cluster: 'unterminated\n", 2),
    ],
    ids=["tab", "bad indent", "unclosed list", "unterminated quote"],
)
def test_invalid_yaml_names_the_line(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path, text)
    err = load_error(path)
    assert err.message.startswith(f"{path}: invalid YAML at line {line}, column ")
    assert err.exit_code == 2


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a\n- b\n", "42\n", "just text\n"])
def test_the_document_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    assert load_error(path).message == f"{path}: the config must be a YAML mapping"


def test_parse_config_rejects_non_mappings() -> None:
    with pytest.raises(ConfigError, match=r"mem\.yaml: the config must be a YAML mapping"):
        parse_config(["cluster"], "mem.yaml")


# --- schema errors: file, key, message ---------------------------------------------------

CASES: list[tuple[str, Any, str, str]] = [
    # (case, change to base(), key named in the message, text in the message)
    ("unknown top-level key", lambda d: d.update(clutser="x"), "clutser", "unknown key"),
    ("unknown node key", lambda d: d["nodes"][1].update(adress="x"), "nodes[1].adress", "unknown key"),
    ("unknown raft key", lambda d: d["raft"].update(hearbeat_s=1), "raft.hearbeat_s", "unknown key"),
    (
        "unknown device key",
        lambda d: d["nodes"][0]["devices"][0].update(soc=1),
        "nodes[0].devices[0].soc",
        "unknown key",
    ),
    ("port not a number", lambda d: d["nodes"][1].update(raft_port="abc"), "nodes[1].raft_port", "integer"),
    ("port out of range", lambda d: d["nodes"][1].update(api_port=70000), "nodes[1].api_port", "65535"),
    # strict types (an attack probe had `raft_port: true` taken as port 1 and "27101" as a number)
    ("port true", lambda d: d["nodes"][0].update(raft_port=True), "nodes[0].raft_port", "integer, got True"),
    ("port as text", lambda d: d["nodes"][0].update(raft_port="27101"), "nodes[0].raft_port", "got '27101'"),
    (
        "limit NaN",
        lambda d: d["nodes"][0]["devices"][0].update(min_kw=float("nan")),
        "nodes[0].devices[0].min_kw",
        "finite number",
    ),
    (
        "limit infinite",
        lambda d: d["nodes"][0]["devices"][0].update(max_kw=float("inf")),
        "nodes[0].devices[0].max_kw",
        "finite number",
    ),
    (
        "limit as text",
        lambda d: d["nodes"][0]["devices"][0].update(max_kw="50"),
        "nodes[0].devices[0].max_kw",
        "valid number",
    ),
    (
        "shared as 1",
        lambda d: d["nodes"][0]["devices"][0].update(shared=1),
        "nodes[0].devices[0].shared",
        "boolean",
    ),
    (
        "policy cycle absurd",
        lambda d: d.update(policy={"import_limit_kw": 5, "cycle_s": 1e9}),
        "policy.cycle_s",
        "less than or equal to 60",
    ),
    (
        "policy unknown load",
        lambda d: d.update(policy={"import_limit_kw": 5, "shed_order": ["nope:1"]}),
        "policy.shed_order[0]",
        "names no relay device",
    ),
    ("port zero", lambda d: d["nodes"][0].update(raft_port=0), "nodes[0].raft_port", "greater than or equal"),
    ("heartbeat not a number", lambda d: d["raft"].update(heartbeat_s="fast"), "raft.heartbeat_s", "number"),
    ("fsync not a bool", lambda d: d["raft"].update(fsync="yes"), "raft.fsync", "boolean"),
    ("negative timeout", lambda d: d["raft"].update(commit_timeout_s=-1), "raft.commit_timeout_s", "greater"),
    ("initial not a bool", lambda d: d["nodes"][0].update(initial="maybe"), "nodes[0].initial", "boolean"),
    ("devices not a list", lambda d: d["nodes"][0].update(devices={"id": "x"}), "nodes[0].devices", "tuple"),
    ("missing raft", lambda d: d.pop("raft"), "raft", "Field required"),
    ("missing secret_file", lambda d: d["raft"].pop("secret_file"), "raft.secret_file", "Field required"),
    ("missing node port", lambda d: d["nodes"][1].pop("raft_port"), "nodes[1].raft_port", "Field required"),
    ("no nodes", lambda d: d.update(nodes=[]), "nodes", "at least 1"),
    ("bad cluster name", lambda d: d.update(cluster="My Cluster"), "cluster", "is not a valid name"),
    ("bad node id", lambda d: d["nodes"][1].update(id="N2"), "nodes[1].id", "is not a valid name"),
    ("empty address", lambda d: d["nodes"][0].update(address=""), "nodes[0].address", "at least 1"),
    (
        "bad device kind",
        lambda d: d["nodes"][0]["devices"][0].update(kind="reactor"),
        "nodes[0].devices[0].kind",
        "battery",
    ),
    (
        "zero capacity",
        lambda d: d["nodes"][0]["devices"][0].update(capacity_kwh=0),
        "nodes[0].devices[0].capacity_kwh",
        "greater than 0",
    ),
    (
        "min_kw above max_kw",
        lambda d: d["nodes"][0]["devices"][0].update(min_kw=11, max_kw=10),
        "nodes[0].devices[0]",
        "min_kw (11.0) is above max_kw (10.0)",
    ),
    (
        "duplicate node id",
        lambda d: d["nodes"][1].update(id="n1"),
        "nodes[1].id",
        "node id 'n1' is declared twice",
    ),
    (
        "duplicate device across nodes",
        lambda d: d["nodes"][1]["devices"].append({"id": "bat-1", "kind": "battery"}),
        "nodes[1].devices[1].id",
        "device 'bat-1' is already declared on node 'n1'",
    ),
    (
        "duplicate device within a node",
        lambda d: d["nodes"][0]["devices"].append({"id": "bat-1", "kind": "load"}),
        "nodes[0].devices[1].id",
        "already declared on node 'n1'",
    ),
    (
        "duplicate raft endpoint",
        lambda d: d["nodes"][1].update(raft_port=4001),
        "nodes[1].raft_port",
        "127.0.0.1:4001 is used twice",
    ),
    (
        "raft port equals another node's api port",
        lambda d: d["nodes"][1].update(raft_port=5001),
        "nodes[1].raft_port",
        "127.0.0.1:5001 is used twice",
    ),
    (
        "raft and api port equal on one node",
        lambda d: d["nodes"][0].update(api_port=4001),
        "nodes[0].api_port",
        "127.0.0.1:4001 is used twice",
    ),
    (
        "election timeout not above 3 x heartbeat",
        lambda d: d["raft"].update(election_timeout_min_s=0.12, heartbeat_s=0.04),
        "raft",
        "election_timeout_min_s must be above 3 x heartbeat_s",
    ),
    (
        "election max not above min",
        lambda d: d["raft"].update(election_timeout_min_s=0.3, election_timeout_max_s=0.3),
        "raft",
        "election_timeout_max_s must be above election_timeout_min_s",
    ),
    (
        "no initial node",
        lambda d: [n.update(initial=False) for n in d["nodes"]],
        "nodes",
        "at least one node must have initial: true",
    ),
]


@pytest.mark.parametrize(("case", "change", "key", "text"), CASES, ids=[c[0] for c in CASES])
def test_schema_errors_name_file_and_key(tmp_path: Path, case: str, change: Any, key: str, text: str) -> None:
    path = write(tmp_path, mutated(change))
    err = load_error(path)
    assert isinstance(err, MeshemsError)
    assert err.exit_code == 2
    assert err.message.startswith(f"{path}: {key}: "), err.message
    assert text in err.message
    assert err.context == {"file": str(path), "key": key}
    # parse_config reports the same through whatever source name it is given.
    with pytest.raises(ConfigError) as info:
        parse_config(mutated(change), "f.yaml")
    assert info.value.message.startswith(f"f.yaml: {key}: ")


def test_several_errors_are_reported_one_per_line(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["nodes"][1]["raft_port"] = "x"
        d["colour"] = "red"
        d["raft"]["heartbeat_s"] = -1

    path = write(tmp_path, mutated(change))
    lines = load_error(path).message.splitlines()
    assert len(lines) == 3
    assert all(line.startswith(f"{path}: ") for line in lines)
    keys = {line.removeprefix(f"{path}: ").split(": ")[0] for line in lines}
    assert keys == {"nodes[1].raft_port", "colour", "raft.heartbeat_s"}
    assert load_error(path).context["key"] in keys


def test_config_error_class() -> None:
    err = ConfigError("f.yaml: zone: bad", file="f.yaml", key="zone")
    assert (err.code, err.exit_code) == ("E_CONFIG", 2)
    assert str(err) == "E_CONFIG: f.yaml: zone: bad"


# --- properties ----------------------------------------------------------------------------

seconds = st.floats(min_value=0.001, max_value=10, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(seconds, seconds, seconds)
def test_raft_timing_rule(lo: float, hi: float, heartbeat: float) -> None:
    raft = {
        "secret_file": "s",
        "election_timeout_min_s": lo,
        "election_timeout_max_s": hi,
        "heartbeat_s": heartbeat,
    }
    valid = hi > lo and lo > 3 * heartbeat
    try:
        cfg = parse_config({**base(), "raft": raft}, "t.yaml")
    except ConfigError as err:
        assert not valid
        assert err.message.startswith("t.yaml: raft: election_timeout_")
    else:
        assert valid
        assert (cfg.raft.election_timeout_min_s, cfg.raft.election_timeout_max_s) == (lo, hi)


@settings(max_examples=100, deadline=None)
@given(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6))
def test_device_range_rule(min_kw: float, max_kw: float) -> None:
    data = mutated(lambda d: d["nodes"][0]["devices"][0].update(min_kw=min_kw, max_kw=max_kw))
    try:
        cfg = parse_config(data, "t.yaml")
    except ConfigError as err:
        assert min_kw > max_kw
        assert err.message.startswith("t.yaml: nodes[0].devices[0]: min_kw")
    else:
        assert min_kw <= max_kw
        assert (cfg.nodes[0].devices[0].min_kw, cfg.nodes[0].devices[0].max_kw) == (min_kw, max_kw)


names = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,8}", fullmatch=True)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(names, st.integers(1, 8), st.integers(1, 8)), min_size=1, max_size=5))
def test_uniqueness_rules(nodes: list[tuple[str, int, int]]) -> None:
    """Random ids and ports: accepted exactly when ids and endpoints are all distinct."""
    data = {
        **base(),
        "nodes": [{"id": i, "address": "h", "raft_port": r, "api_port": 100 + a} for i, r, a in nodes],
    }
    ids = [n[0] for n in nodes]
    endpoints = [p for _, r, a in nodes for p in (r, 100 + a)]
    valid = len(set(ids)) == len(ids) and len(set(endpoints)) == len(endpoints)
    try:
        cfg = parse_config(data, "t.yaml")
    except ConfigError as err:
        assert not valid
        assert err.message.startswith("t.yaml: nodes[")
    else:
        assert valid
        assert [n.id for n in cfg.nodes] == ids
