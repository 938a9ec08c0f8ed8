"""The dashboard shows pipelines, in a real browser against a real local cluster.

One cluster for the module: model ``feat`` (a ``strings`` featuriser: each text's length
and its count of vowels) and model ``clf`` (``doubles``: version 1 sums, version 2 twice
the sum; 2 current), both python closures. App ``chain`` (input ``strings``) is set,
through the REST API (``PUT /admin/apps/chain/pipeline``), to a two-stage pipeline:
stage 1 ``feat`` (single), stage 2 ``clf`` and ``clf:1`` under exp4. The tests read the
overview's row of ``chain``, its page (both stages, the version each arm answers with,
the policy and params, and stage 2's learned weights chart) and ``clf``'s page (the app
and stage using it), and leave ``app-pipeline.png``; then, after predictions through the
pipeline, each stage's time chart and its row's time, defaults and errors
(``app-pipeline-stages.png``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dashboards import Dashboard
from test_dashboard_browser import chart_points, css, log_in, screenshot, text_of, wait_for

pytestmark = [pytest.mark.timeout(300)]

STAGES: list[dict[str, Any]] = [
    {"arms": ["feat"]},
    {"arms": ["clf", "clf:1"], "policy": "exp4", "policy_params": {"eta": 0.3}},
]


def admin(cluster: Dashboard, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A call to the admin REST API with the cluster's token."""
    headers = {"Authorization": f"Bearer {cluster.token()}"}
    return httpx.request(method, f"{cluster.base}{path}", headers=headers, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def cluster(dashboard_cluster: Dashboard) -> Iterator[Dashboard]:
    from admin.deployers.python import deploy_python_closure

    # Defined here, not at module level: a closure is pickled by value, with its code.
    def featurise(texts):  # type: ignore[no-untyped-def]
        """Each text's length and its count of vowels."""
        return [[float(len(t)), float(sum(c in "aeiou" for c in t))] for t in texts]

    def summed(xs):  # type: ignore[no-untyped-def]
        return [float(sum(x)) for x in xs]

    def doubled(xs):  # type: ignore[no-untyped-def]
        return [float(2 * sum(x)) for x in xs]

    conn = dashboard_cluster.conn
    conn.register_application(
        name="chain", input_type="strings", default_output="-1.0", slo_micros=200_000
    )
    deploy_python_closure(conn, name="feat", version="1", input_type="strings", func=featurise)
    deploy_python_closure(conn, name="clf", version="1", input_type="doubles", func=summed)
    deploy_python_closure(conn, name="clf", version="2", input_type="doubles", func=doubled)
    answer = admin(dashboard_cluster, "PUT", "/admin/apps/chain/pipeline", json={"stages": STAGES})
    assert answer.status_code == 200, answer.text
    assert [s["arms"] for s in answer.json()["pipeline"]] == [["feat"], ["clf", "clf:1"]]
    yield dashboard_cluster


@pytest.fixture(scope="module")
def logged_in(browser: Any, cluster: Dashboard) -> Any:
    browser.delete_all_cookies()
    browser.get(f"{cluster.base}/ui")
    wait_for(browser, lambda: css(browser, "#token"), "the login form")
    log_in(browser, cluster, cluster.token())
    wait_for(browser, lambda: css(browser, "#apps-table"), "the overview after logging in")
    return browser


def test_the_overview_shows_a_pipeline_as_its_stages_in_order(
    logged_in: Any, cluster: Dashboard
) -> None:
    browser = logged_in
    browser.get(f"{cluster.base}/ui")
    row = '#apps-table tr[data-app="chain"]'
    wait_for(browser, lambda: css(browser, row), "the pipeline app in the apps table")
    assert text_of(browser, f"{row} td.linked-models") == "feat → clf | clf:1 (exp4)"
    assert text_of(browser, f"{row} td.policy") == "single → exp4"


def test_a_pipeline_apps_page_shows_both_stages_and_stage_2s_weights(
    logged_in: Any, cluster: Dashboard, screenshots: Path
) -> None:
    browser = logged_in
    browser.get(f"{cluster.base}/ui/apps/chain")
    wait_for(browser, lambda: len(css(browser, "#pipeline-table tbody tr")) == 2, "two stage rows")
    first = '#pipeline-table tr[data-stage="1"]'
    second = '#pipeline-table tr[data-stage="2"]'
    assert text_of(browser, f"{first} td.stage-number") == "1"
    assert text_of(browser, f"{first} td.stage-arms") == "feat → v1"
    assert text_of(browser, f"{first} td.stage-policy") == "single"
    assert text_of(browser, f"{second} td.stage-number") == "2"
    # Each arm with the version it answers with now: clf follows its current version.
    arms = text_of(browser, f"{second} td.stage-arms").splitlines()
    assert arms == ["clf → v2", "clf:1 (pinned)"], arms
    assert text_of(browser, f"{second} td.stage-policy") == "exp4"
    assert "eta = 0.3" in text_of(browser, f"{second} td.stage-params")
    # An arm is a link to its model's page.
    link = css(browser, f'{second} [data-arm="clf:1"] a')[0]
    assert link.get_attribute("href") == f"{cluster.base}/ui/models/clf"
    # Stage 1 (single, one arm) has nothing to weigh; stage 2 (exp4) has its chart,
    # sampled at each refresh: both arms start level.
    assert "nothing to weigh" in text_of(browser, "#page")
    chart = '[data-chart="weights-stage-2"]'
    wait_for(browser, lambda: chart_points(browser, chart) >= 4, "stage 2's weights over time")
    legend = text_of(browser, f"{chart} .legend")
    assert "clf 0.50" in legend and "clf:1 0.50" in legend, legend
    screenshot(browser, screenshots, "app-pipeline")


def test_a_pipeline_apps_page_shows_each_stages_time_after_traffic(
    logged_in: Any, cluster: Dashboard, screenshots: Path
) -> None:
    browser = logged_in
    url = f"http://{cluster.conn.get_query_addr()}/chain/predict"
    browser.get(f"{cluster.base}/ui/apps/chain")
    wait_for(browser, lambda: len(css(browser, "#pipeline-table tbody tr")) == 2, "two stage rows")
    # Before any traffic each stage has its chart and its row's cells, with no numbers.
    assert css(browser, '[data-chart="stage-latency-1"]')
    assert css(browser, '[data-chart="stage-latency-2"]')
    with httpx.Client(timeout=10) as http:

        def timed() -> bool:
            for text in ("hello there", "a pipeline of two stages"):
                r = http.post(url, json={"input": text})
                assert r.status_code == 200, r.text  # a cold start may answer the default
            return all(
                chart_points(browser, f'[data-chart="stage-latency-{n}"]') >= 1
                and text_of(browser, f'#pipeline-table tr[data-stage="{n}"] td.stage-time')
                .split("/")[1]
                .strip()
                .endswith("ms")
                for n in (1, 2)
            )

        wait_for(browser, timed, "each stage's time on the page after traffic")
    for n in (1, 2):
        row = f'#pipeline-table tr[data-stage="{n}"]'
        assert re.fullmatch(r"\d+\.\d\d", text_of(browser, f"{row} td.stage-defaults"))
        assert text_of(browser, f"{row} td.stage-errors") == "0.00"
    legend = text_of(browser, '[data-chart="stage-latency-1"] .legend')
    assert "p50" in legend and "p99" in legend, legend
    screenshot(browser, screenshots, "app-pipeline-stages")


def test_a_models_page_shows_the_apps_and_stages_using_it(
    logged_in: Any, cluster: Dashboard
) -> None:
    browser = logged_in
    browser.get(f"{cluster.base}/ui/models/clf")
    wait_for(browser, lambda: css(browser, "#used-by-table tbody tr"), "the apps using clf")
    assert used_by(browser) == [
        ["chain", "2 of 2", "clf", "exp4"],
        ["chain", "2 of 2", "clf:1", "exp4"],
    ]
    browser.get(f"{cluster.base}/ui/models/feat")
    wait_for(
        browser,
        lambda: used_by(browser) == [["chain", "1 of 2", "feat", "single"]],
        "feat used by stage 1 of chain",
    )


def used_by(browser: Any) -> list[list[str]]:
    rows = css(browser, "#used-by-table tbody tr")
    return [[td.text for td in row.find_elements("css selector", "td")] for row in rows]


def test_a_pipeline_change_shows_on_the_open_page(logged_in: Any, cluster: Dashboard) -> None:
    browser = logged_in
    browser.get(f"{cluster.base}/ui/apps/chain")
    wait_for(browser, lambda: len(css(browser, "#pipeline-table tbody tr")) == 2, "two stages")
    stages = [{"arms": ["feat"]}, {"arms": ["clf:1"]}, {"arms": ["clf"]}]
    answer = admin(cluster, "PUT", "/admin/apps/chain/pipeline", json={"stages": stages})
    assert answer.status_code == 200, answer.text
    try:
        wait_for(
            browser,
            lambda: len(css(browser, "#pipeline-table tbody tr")) == 3,
            "the third stage after the change, without a reload",
        )
        assert not css(browser, '[data-chart="weights-stage-2"]'), "no learning stage left"
        browser.get(f"{cluster.base}/ui")
        row = '#apps-table tr[data-app="chain"] td.linked-models'
        wait_for(browser, lambda: text_of(browser, row) == "feat → clf:1 → clf", "the new pipeline")
    finally:
        answer = admin(cluster, "PUT", "/admin/apps/chain/pipeline", json={"stages": STAGES})
        assert answer.status_code == 200, answer.text


def test_the_pipeline_pages_load_nothing_from_elsewhere_and_break_no_policy(
    logged_in: Any, cluster: Dashboard
) -> None:
    browser = logged_in
    browser.get_log("browser")  # forget what earlier tests logged
    for path in ("/ui", "/ui/apps/chain", "/ui/models/clf"):
        browser.get(f"{cluster.base}{path}")
        wait_for(
            browser,
            lambda: browser.execute_script("return document.body.dataset.loaded"),
            f"{path} drawn",
        )
    problems = [
        e["message"]
        for e in browser.get_log("browser")
        if e["level"] == "SEVERE" or "Content Security Policy" in e["message"]
    ]
    assert problems == []
