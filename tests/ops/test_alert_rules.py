"""The Prometheus alert rules of cluster-configs/prometheus: valid for `promtool check rules`,
each one unit-tested by `promtool test rules` (meshems-alerts.test.yml), and every metric they
name is one a node serves (or, for the clock offset, one the issue names)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.node.metrics_fixtures import synthetic_node

FOLDER = Path(__file__).resolve().parents[2] / "cluster-configs" / "prometheus"
RULES, TESTS = FOLDER / "meshems-alerts.yml", FOLDER / "meshems-alerts.test.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing (Debian prometheus; scripts/setup)"
)


def alerts() -> list[dict[str, str]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    res = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in res.stdout


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    res = subprocess.run(
        [str(PROMTOOL), "test", "rules", TESTS.name], cwd=FOLDER, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_alert_has_a_unit_test_that_sees_it_fire() -> None:
    cases = yaml.safe_load(TESTS.read_text())["tests"]
    fired = {t["alertname"] for c in cases for t in c.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert {a["alert"] for a in alerts()} == fired


def test_the_rules_name_only_metrics_a_node_serves() -> None:
    node = synthetic_node(4, 1, cloud={"backlog": 1, "oldest_unsent_age_s": 1.0})
    served = set(re.findall(r"^# TYPE (\S+)", node.metrics.render().decode(), re.M))
    served |= {"meshems_zone_import_kw", "meshems_zone_import_limit_kw"}  # once a dispatch committed
    named = {m for a in alerts() for m in re.findall(r"\bmeshems_[a-z_]+", a["expr"])}
    assert named <= served, named - served
