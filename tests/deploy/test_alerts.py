"""The alert rules file the chart's PrometheusRule ships: promtool checks and unit tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.support.prometheus import binary, contract_metric_names, metric_names

ALERTS = Path(__file__).resolve().parents[2] / "charts" / "streamscale" / "alerts"
RULES = ALERTS / "streamscale.rules.yaml"
UNIT_TESTS = ALERTS / "streamscale.test.yaml"
EXPECTED_ALERTS = {
    "StreamscaleBacklogGrowing",
    "StreamscaleDeadLetterGrowing",
    "StreamscaleConsumerStuck",
    "StreamscaleOperatorDown",
    "StreamscaleRedisUnreachable",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ALERTS,
        check=False,
    )


def alert_rules() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_every_alert() -> None:
    result = promtool("test", "rules", UNIT_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    tested = {
        case["alertname"]
        for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert tested == EXPECTED_ALERTS


def test_alerts_are_the_ones_the_issue_asks_for_with_severity_and_text() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} == EXPECTED_ALERTS
    for rule in rules:
        labels = rule["labels"]
        annotations = rule["annotations"]
        assert isinstance(labels, dict) and labels["severity"] in ("warning", "critical")
        assert isinstance(annotations, dict) and {"summary", "description"} <= set(annotations)
        assert rule.get("for"), f"{rule['alert']} fires on one evaluation"


def test_rules_use_only_the_metrics_of_the_contract() -> None:
    allowed = contract_metric_names() | {"up"}
    for rule in alert_rules():
        expr = rule["expr"]
        assert isinstance(expr, str)
        used = metric_names(expr)
        assert used, f"{rule['alert']}: no metric found in {expr!r}"
        unknown = used - allowed
        assert not unknown, f"{rule['alert']} uses metrics no component exports: {unknown}"
