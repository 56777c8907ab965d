"""The Grafana dashboards: valid Grafana JSON, the issue's panels, only the contract's metrics.

tests/deploy/test_dashboards_live.py checks that every panel shows data from real processes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.prometheus import contract_metric_names, metric_names

DASHBOARDS = Path(__file__).resolve().parents[2] / "charts" / "streamscale" / "dashboards"
FILES = sorted(DASHBOARDS.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries() -> Iterator[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) of every panel target."""
    for path in FILES:
        for panel in panels(load(path)):
            for target in panel.get("targets", []):
                yield path.name, panel["title"], target["expr"]


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


# --- static checks ----------------------------------------------------------------------------


def test_dashboards_are_grafana_json_with_unique_uids() -> None:
    assert {p.name for p in FILES} == {"overview.json", "streamconsumer.json"}
    uids = [load(p)["uid"] for p in FILES]
    assert len(set(uids)) == len(uids)
    for path in FILES:
        dashboard = load(path)
        assert dashboard["title"].startswith("streamscale / ")
        assert variables(dashboard)["datasource"]["type"] == "datasource"
        ids = [p["id"] for p in panels(dashboard)]
        assert len(set(ids)) == len(ids), f"{path.name}: duplicate panel ids"
        for panel in panels(dashboard):
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], f"{path.name}: panel {panel['title']!r} has no query"
            assert panel.get("description"), f"{path.name}: panel {panel['title']!r}"
            for target in panel["targets"]:
                assert target["expr"].strip() and target["refId"]


def test_panels_do_not_overlap_and_fit_the_grid() -> None:
    for path in FILES:
        cells: dict[tuple[int, int], str] = {}
        for panel in panels(load(path)):
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, f"{path.name}: {panel['title']}"
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    other = cells.setdefault((x, y), panel["title"])
                    assert other == panel["title"], f"{path.name}: {panel['title']!r} on {other!r}"


def test_dashboards_use_only_the_metrics_of_the_contract() -> None:
    allowed = contract_metric_names() | {"up"}
    used: set[str] = set()
    for file, title, expr in queries():
        names = metric_names(expr)
        assert names, f"{file}: {title!r} selects no metric: {expr}"
        unknown = names - allowed
        assert not unknown, f"{file}: {title!r} uses metrics no component exports: {unknown}"
        used |= names
    for path in FILES:
        for variable in variables(load(path)).values():
            if variable["type"] == "query":
                match = re.fullmatch(r"label_values\((.+), *(\w+)\)", variable["definition"])
                assert match, variable["definition"]
                assert metric_names(match.group(1)) <= allowed
    # Every metric of the contract is on some panel (histograms through their buckets or count).
    bases = {re.sub(r"_(bucket|count|sum)$", "", n) for n in used}
    contract = {n for n in contract_metric_names() if not n.endswith(("_bucket", "_count", "_sum"))}
    assert contract <= bases, f"metrics on no panel: {contract - bases}"


def test_overview_and_drill_down_have_the_panels_the_issue_asks_for() -> None:
    overview = load(DASHBOARDS / "overview.json")
    text = " ".join(t["expr"] for p in panels(overview) for t in p.get("targets", []))
    for needle in (
        "streamscale_group_lag",
        "streamscale_group_pending",
        "streamscale_replicas",
        "streamscale_desired_replicas",
        'streamscale_messages_total{outcome="stored"}',
        "streamscale_dead_lettered_total",
        "histogram_quantile(0.5, sum by (namespace, name, le) (rate(streamscale_end_to_end",
        "histogram_quantile(0.99, sum by (namespace, name, le) (rate(streamscale_end_to_end",
    ):
        assert needle in text, needle
    drill = load(DASHBOARDS / "streamconsumer.json")
    found = variables(drill)
    assert found["namespace"]["definition"] == "label_values(streamscale_group_lag, namespace)"
    assert "$namespace" in found["name"]["definition"]
    titles = {p["title"] for p in panels(drill)}
    assert "Operator health" in titles and "Operator up" in titles
    for panel in panels(drill):
        for target in panel.get("targets", []):
            if "up{" not in target["expr"]:
                assert 'namespace="$namespace", name="$name"' in target["expr"], panel["title"]
