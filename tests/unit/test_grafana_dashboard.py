"""``deploy/grafana/schooner.json`` is a dashboard Grafana imports and whose queries name
only metrics Schooner serves (documented in docs/metrics.md). That every query parses
and returns data is checked against a real Prometheus in
``tests/integration/test_prometheus.py``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "schooner.json"
DOCS = ROOT / "docs" / "metrics.md"


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_it_asks_for_a_prometheus_data_source_and_filters_by_app_and_model(
    dashboard: dict[str, Any],
) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("app", "model"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == "${datasource}"
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
    assert dashboard["uid"] and dashboard["title"] == "Schooner"


def test_every_panel_queries_the_chosen_data_source(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        assert panel["description"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert target["expr"].count("(") == target["expr"].count(")")


def test_the_panels_cover_what_an_operator_watches(dashboard: dict[str, Any]) -> None:
    exprs = " ".join(t["expr"] for p in panels(dashboard) for t in p["targets"])
    for needed in (
        "schooner_requests_total",
        "histogram_quantile(0.5,",
        "histogram_quantile(0.9,",
        "histogram_quantile(0.99,",
        'kind="default"',
        "schooner_batch_size_bucket",
        "schooner_cache_hits_total",
        "schooner_cache_bytes",
        "schooner_queue_depth",
        "schooner_replicas_connected",
        "schooner_replicas_in_rotation",
        'up{role="replica"',
    ):
        assert needed in exprs, needed
    assert '$app"' in exprs and '$model"' in exprs


def documented_metrics() -> set[str]:
    names = set(re.findall(r"^\| `([a-z_]+)` \|", DOCS.read_text(), flags=re.MULTILINE))
    assert len(names) > 30
    return names


def test_every_metric_a_query_names_is_documented(dashboard: dict[str, Any]) -> None:
    documented = documented_metrics()
    for panel in panels(dashboard):
        for target in panel["targets"]:
            for name in re.findall(r"\b((?:schooner|process)_[a-z_]+)\b", target["expr"]):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                standard = base.startswith("process_")  # prometheus_client's, named in the docs
                assert standard or base in documented, f"{panel['title']}: {name}"
