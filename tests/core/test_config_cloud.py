"""Tests for the `cloud:` section of the cluster config (`CloudConfig`).

Defaults are usable as they are, paths resolve against the config file's folder, and a
wrong key or value is refused with the file and the exact key named (exit code 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from meshems.adapters.config_file import load_config
from meshems.core.config import CloudConfig, parse_config
from meshems.core.errors import ConfigError


def base(**cloud: Any) -> dict[str, Any]:
    return {
        "cluster": "test",
        "zone": "zone-a",
        "raft": {"secret_file": "raft.secret"},
        "cloud": {"broker_host": "mqtt.example.net", **cloud},
        "nodes": [{"id": "n1", "address": "127.0.0.1", "raft_port": 4001, "api_port": 5001}],
    }


def config_error(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "f.yaml")
    assert info.value.exit_code == 2
    return info.value


def test_defaults() -> None:
    cloud = parse_config(base(), "f.yaml").cloud
    assert cloud is not None
    assert (cloud.broker_host, cloud.broker_port, cloud.qos) == ("mqtt.example.net", 8883, 1)
    assert cloud.pki_dir == ".meshems/pki"
    assert cloud.topic_prefix == "meshems"
    assert cloud.message_expiry_s == 3600
    assert cloud.outbox_max_bytes == 256 * 1024 * 1024
    assert cloud.outbox_max_age_s == 7 * 86400
    assert (cloud.outbox_full_policy, cloud.payload_format) == ("drop_oldest", "msgpack")
    assert cloud.live_share == pytest.approx(0.2)
    assert cloud.reconnect_min_s <= cloud.reconnect_max_s
    assert cloud.node_cert_files("n1") == (".meshems/pki/n1.crt", ".meshems/pki/n1.key")


def test_no_cloud_section_is_none() -> None:
    data = base()
    del data["cloud"]
    assert parse_config(data).cloud is None


def test_every_field_is_described() -> None:
    missing = [name for name, f in CloudConfig.model_fields.items() if not f.description]
    assert missing == []


def test_unknown_key_is_refused_and_named() -> None:
    err = config_error(base(brokr_port=8883))
    assert str(err) == "E_CONFIG: f.yaml: cloud.brokr_port: unknown key (misspelt?)"
    assert err.context["key"] == "cloud.brokr_port"


def test_bad_policy_is_named_with_the_choices() -> None:
    err = config_error(base(outbox_full_policy="drop_newest"))
    assert "f.yaml: cloud.outbox_full_policy:" in err.message
    assert "'drop_oldest' or 'reject_new'" in err.message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("qos", 2),
        ("payload_format", "cbor"),
        ("broker_port", 0),
        ("live_share", 1.0),
        ("topic_prefix", "meshems/#"),
        ("topic_prefix", "/meshems"),
        ("outbox_max_bytes", 1000),
    ],
)
def test_bad_values_are_named(key: str, value: object) -> None:
    assert f"f.yaml: cloud.{key}:" in config_error(base(**{key: value})).message


def test_missing_broker_host_and_reconnect_order() -> None:
    data = base()
    del data["cloud"]["broker_host"]
    assert "cloud.broker_host: Field required" in config_error(data).message
    err = config_error(base(reconnect_min_s=30, reconnect_max_s=5))
    assert "f.yaml: cloud: reconnect_max_s (5.0) must not be below reconnect_min_s (30.0)" in err.message


def test_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "site"
    folder.mkdir()
    path = folder / "cluster.yaml"
    path.write_text(yaml.safe_dump(base(ca_file="certs/ca.crt")))
    cfg = load_config(path)
    assert cfg.cloud is not None
    assert cfg.path(cfg.cloud.ca_file) == folder / "certs" / "ca.crt"
    assert cfg.path(cfg.cloud.pki_dir) == folder / ".meshems" / "pki"
    assert cfg.path(cfg.cloud.node_cert_files("n1")[1]) == folder / ".meshems" / "pki" / "n1.key"
