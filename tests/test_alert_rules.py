"""Prometheus alerting rules of deploy/prometheus, checked and unit-tested with the real promtool.

promtool comes from Debian's `prometheus` package (`apt-get install -y --no-install-recommends
prometheus`); without it these tests fail, they never skip. Besides `promtool check` and
`promtool test rules`, two mutations prove the unit tests bite: with every alert made silent,
each alert must have a failing "fires" case; with every alert made to fire always, each must have a
failing "stays quiet" case.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from consumer.health import Health, serve
from consumer.metrics import Metrics
from test_deploy import exposed_metric_names, promql_metric_names  # tests/ is on sys.path (rootdir-relative import)

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RULES = PROMETHEUS / "rules" / "labelwatch.rules.yml"
RULE_TESTS = PROMETHEUS / "tests" / "labelwatch.rules.test.yml"
INSTALL = "apt-get install -y --no-install-recommends prometheus"

REQUIRED_ALERTS = {"LabelwatchFlagRateHigh", "LabelwatchDeadLetterRateHigh", "LabelwatchConsumerLagGrowing",
                   "LabelwatchNoSamplesProcessed", "LabelwatchCommitFailures"}
SYNTHETIC_SERIES = {"up"}  # written by Prometheus itself for every target


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(f"promtool not found on PATH; install it with `{INSTALL}` (Debian) to test the alert rules")
    return path


def run(promtool: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def alerts() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_version(promtool):
    out = run(promtool, "--version")
    assert out.returncode == 0 and "promtool, version 2." in out.stdout + out.stderr


def test_check_rules(promtool):
    out = run(promtool, "check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in out.stdout + out.stderr


def test_check_config_loads_the_rules(promtool):
    out = run(promtool, "check", "config", str(CONFIG))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 1 rule files found" in out.stdout + out.stderr
    assert f"{len(alerts())} rules found" in out.stdout + out.stderr


def test_rule_unit_tests_pass(promtool):
    out = run(promtool, "test", "rules", str(RULE_TESTS))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr


def test_every_alert_is_documented():
    found = {a["alert"]: a for a in alerts()}
    assert REQUIRED_ALERTS <= set(found), set(found)
    for name, alert in found.items():
        assert alert.get("for"), f"{name} has no for: duration"
        assert alert["labels"]["severity"] in {"warning", "critical"}, name
        assert alert["annotations"].get("summary"), f"{name} has no summary"
        runbook = alert["annotations"].get("runbook", "")
        assert runbook and "\n" not in runbook.strip(), f"{name} needs a one-line runbook"
    docs = (ROOT / "docs" / "operations.md").read_text()
    for name in found:
        assert name in docs, f"docs/operations.md does not describe {name}"


def test_every_alert_has_cases_that_fire_and_cases_that_do_not():
    cases = [c for t in yaml.safe_load(RULE_TESTS.read_text())["tests"] for c in t.get("alert_rule_test", [])]
    for alert in alerts():
        mine = [c for c in cases if c["alertname"] == alert["alert"]]
        assert any(c.get("exp_alerts") for c in mine), f"no case where {alert['alert']} fires"
        assert any(not c.get("exp_alerts") for c in mine), f"no case where {alert['alert']} stays quiet"


def mutated_run(promtool: str, tmp_path: Path, expr: str) -> str:
    """Run the unit tests against a copy of the rules where every alert's expr is ``expr``."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["expr"] = expr
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules" / RULES.name).write_text(yaml.safe_dump(rules, sort_keys=False))
    shutil.copy(RULE_TESTS, tmp_path / "tests" / RULE_TESTS.name)
    out = run(promtool, "test", "rules", str(tmp_path / "tests" / RULE_TESTS.name))
    assert out.returncode != 0, "the unit tests pass against mutated rules: they test nothing"
    return out.stdout + out.stderr


def test_silenced_alerts_fail_the_unit_tests(promtool, tmp_path):
    output = mutated_run(promtool, tmp_path, "vector(1) > 2")
    failed = set(re.findall(r"alertname: (\w+), time: [^,]+,\s*exp:\[\s*\S", output))
    assert failed == {a["alert"] for a in alerts()}, output[:3000]


def test_always_firing_alerts_fail_the_unit_tests(promtool, tmp_path):
    output = mutated_run(promtool, tmp_path, "vector(1)")
    failed = set(re.findall(r"alertname: (\w+), time: [^,]+,\s*exp:\[\],", output))
    assert failed == {a["alert"] for a in alerts()}, output[:3000]


def test_rules_only_use_exported_metrics():
    exported = exposed_metric_names(fetch_metrics()) | SYNTHETIC_SERIES
    assert "labelwatch_review_events_total" in exported
    used = set()
    for alert in alerts():
        names = promql_metric_names(alert["expr"])
        assert names, alert["alert"]
        used |= names
    missing = used - exported
    assert not missing, f"alert rules use metrics the service does not export: {missing}"


def fetch_metrics() -> str:
    """The text of the service's real /metrics endpoint, served by its HTTP server on a free port."""
    server = serve(Metrics(), Health(stall_after_s=60), 0, "127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10) as response:
            return response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
