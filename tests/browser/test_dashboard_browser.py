"""The dashboard in a real browser (headless Chromium) against a real local cluster.

One cluster for the module: app ``dash`` (policy single) on model ``adder``, whose
versions 1 and 2 answer (2 current), and app ``ab`` (exp3) on the pinned versions
``adder:1`` and ``adder:2``. A thread sends both apps traffic for the whole module,
some of it slow enough to miss ``ab``'s SLO, so that every chart has data and ``ab``
has default answers. The tests log in with the token (and fail with a wrong one), read
the overview, an app's page and the model's page, roll the model back from its page and
check with a real prediction which version answers, and leave a screenshot of each page.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dashboards import Dashboard
from polling import eventually

pytestmark = [pytest.mark.timeout(300)]

WAIT_S = 30.0


@pytest.fixture(scope="module")
def cluster(dashboard_cluster: Dashboard) -> Iterator[Dashboard]:
    from admin.deployers.python import deploy_python_closure

    # Defined here, not at module level: a closure is pickled by value, with its code.
    def summed(xs):  # type: ignore[no-untyped-def]
        """Version 1: the sum of each input; inputs starting below 0 take 400 ms."""
        import time

        if any(x[0] < 0 for x in xs):
            time.sleep(0.4)
        return [float(sum(x)) for x in xs]

    def doubled(xs):  # type: ignore[no-untyped-def]
        """Version 2: twice the sum; as slow for inputs starting below 0."""
        import time

        if any(x[0] < 0 for x in xs):
            time.sleep(0.4)
        return [float(2 * sum(x)) for x in xs]

    conn = dashboard_cluster.conn
    conn.register_application(
        name="dash", input_type="doubles", default_output="-1.0", slo_micros=100_000
    )
    conn.register_application(
        name="ab",
        input_type="doubles",
        default_output="<b>not bold</b>",
        slo_micros=100_000,
        policy="exp3",
    )
    deploy_python_closure(conn, name="adder", version="1", input_type="doubles", func=summed)
    deploy_python_closure(conn, name="adder", version="2", input_type="doubles", func=doubled)
    conn.link_model_to_app(app_name="dash", model_name="adder")
    conn.link_model_to_app(app_name="ab", model_name="adder", version="1")
    conn.link_model_to_app(app_name="ab", model_name="adder", version="2")

    stop = threading.Event()

    def traffic() -> None:
        rng = random.Random(0)
        with httpx.Client(base_url=dashboard_cluster.query, timeout=10) as http:
            for i in itertools.count():
                if stop.wait(0.05):
                    return
                x = [rng.random(), rng.random()]
                app = "ab" if i % 2 else "dash"
                if app == "ab" and i % 10 == 1:
                    x[0] = -1.0 - rng.random()  # misses the SLO: a default answer
                # The tests check what they need; this traffic only feeds the charts.
                with contextlib.suppress(httpx.HTTPError):
                    http.post(f"/{app}/predict", json={"input": x})

    thread = threading.Thread(target=traffic, name="dashboard-traffic", daemon=True)
    thread.start()
    try:
        yield dashboard_cluster
    finally:
        stop.set()
        thread.join(timeout=15)


def wait_for(browser: Any, check: Callable[[], Any], what: str) -> Any:
    """Poll ``check`` in the page until it is truthy (its value), failing with ``what``."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def attempt(_: Any) -> Any:
        try:
            return check()
        except (StaleElementReferenceException, WebDriverException):
            return False  # the page redrew the element under us: ask again

    try:
        return WebDriverWait(browser, WAIT_S, poll_frequency=0.2).until(attempt)
    except Exception:
        pytest.fail(f"not true after {WAIT_S} s: {what}; page text:\n{page_text(browser)}")


def page_text(browser: Any) -> str:
    try:
        return str(browser.execute_script("return document.body.innerText"))[:3000]
    except Exception as exc:  # pragma: no cover (diagnostics only)
        return f"<no page text: {exc}>"


def css(browser: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(browser.find_elements(By.CSS_SELECTOR, selector))


def text_of(browser: Any, selector: str) -> str:
    found = css(browser, selector)
    return str(found[0].text) if found else ""


def screenshot(browser: Any, directory: Path, name: str) -> None:
    """The whole page, however long, as ``<name>.png``."""
    size = browser.get_window_size()
    height = int(browser.execute_script("return document.documentElement.scrollHeight"))
    browser.set_window_size(size["width"], max(size["height"], height + 40))
    try:
        path = directory / f"{name}.png"
        assert browser.save_screenshot(str(path)), path
        assert path.stat().st_size > 1000
    finally:
        browser.set_window_size(size["width"], size["height"])


def log_in(browser: Any, cluster: Dashboard, token: str) -> None:
    browser.find_element("id", "token").clear()
    browser.find_element("id", "token").send_keys(token)
    browser.find_element("id", "login-button").click()


def chart_points(browser: Any, selector: str) -> int:
    """How many data points the chart under ``selector`` draws (0 if none yet)."""
    found = css(browser, f"{selector} svg")
    if not found:
        return 0
    drawn = len(css(browser, f"{selector} svg polyline")) + len(
        css(browser, f"{selector} svg circle")
    )
    return int(found[0].get_attribute("data-points") or 0) if drawn else 0


def answered_by(cluster: Dashboard, arm: str) -> bool:
    """Whether ``dash`` answers (not with its default) from ``arm``: version 1 sums,
    version 2 doubles the sum, and the answer's ``models`` names the version."""
    answer = cluster.predict("dash", [3.0, 4.0])
    expected = {"adder:1": 7.0, "adder:2": 14.0}[arm]
    return answer["models"] == [arm] and answer["output"] == expected and not answer["default"]


def test_login_works_with_the_token_and_not_with_a_wrong_one(
    browser: Any, cluster: Dashboard, screenshots: Path
) -> None:
    browser.delete_all_cookies()
    browser.get(f"{cluster.base}/ui")
    wait_for(browser, lambda: css(browser, "#token"), "the login form")
    screenshot(browser, screenshots, "login")

    log_in(browser, cluster, "certainly-not-the-token")
    wait_for(
        browser,
        lambda: "not this cluster" in text_of(browser, "#login-message"),
        "the wrong token's message",
    )
    assert css(browser, "#token"), "the form is shown again"
    assert browser.get_cookie("schooner_ui") is None
    assert "certainly-not-the-token" not in browser.page_source

    log_in(browser, cluster, cluster.token())
    wait_for(browser, lambda: css(browser, "#apps-table"), "the overview after logging in")
    assert browser.current_url == f"{cluster.base}/ui"
    assert cluster.token() not in browser.current_url
    cookie = browser.get_cookie("schooner_ui")
    assert cookie is not None and cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert cookie["value"] != cluster.token()
    assert browser.execute_script("return document.cookie") == ""  # HttpOnly: scripts see nothing


def test_the_overview_lists_apps_and_models_and_charts_the_traffic(
    browser: Any, cluster: Dashboard, screenshots: Path
) -> None:
    browser.get(f"{cluster.base}/ui")
    wait_for(
        browser,
        lambda: (
            css(browser, '#apps-table tr[data-app="dash"]')
            and css(browser, '#apps-table tr[data-app="ab"]')
        ),
        "both apps in the apps table",
    )
    row = text_of(browser, '#models-table tr[data-model="adder"]')
    assert "1, 2" in row, row
    assert text_of(browser, '#models-table tr[data-model="adder"] td.current') == "2"
    wait_for(
        browser,
        lambda: "adder-1-r0" in text_of(browser, '#models-table tr[data-model="adder"]'),
        "the replicas of adder with their health",
    )

    for selector in (
        '[data-app="dash"] [data-chart="throughput"]',
        '[data-app="dash"] [data-chart="latency"]',
        '[data-app="ab"] [data-chart="default-rate"]',
        '[data-model="adder"] [data-chart="batch-size"]',
        '[data-chart="cache-hit-rate"]',
    ):
        wait_for(browser, lambda s=selector: chart_points(browser, s) > 0, f"data in {selector}")
    # A second later the page has redrawn itself, without a reload.
    loaded = int(browser.execute_script("return Number(document.body.dataset.loaded)"))
    wait_for(
        browser,
        lambda: int(browser.execute_script("return Number(document.body.dataset.loaded)")) > loaded,
        "the overview to refresh",
    )
    screenshot(browser, screenshots, "overview")


def test_an_apps_page_shows_its_policy_weights_and_default_answers(
    browser: Any, cluster: Dashboard, screenshots: Path
) -> None:
    browser.get(f"{cluster.base}/ui/apps/ab")
    wait_for(browser, lambda: text_of(browser, "#policy") == "exp3", "the app's policy")
    assert "adder:1" in text_of(browser, "#linked-models")
    assert "adder:2" in text_of(browser, "#linked-models")
    assert "eta" in text_of(browser, "#app-settings")
    # Data is text, never markup: the default output shows its tags.
    assert "<b>not bold</b>" in text_of(browser, "#app-settings")
    assert not css(browser, "#app-settings td b")
    wait_for(
        browser,
        lambda: chart_points(browser, '[data-chart="weights"]') > 0,
        "the learned weights over time",
    )
    legend = text_of(browser, '[data-chart="weights"] .legend')
    assert "adder:1" in legend and "adder:2" in legend, legend
    wait_for(
        browser, lambda: len(css(browser, "#defaults-table tbody tr")) > 0, "recent default answers"
    )
    assert text_of(browser, "#defaults-table tbody tr td:nth-child(4)"), "a default has a reason"
    screenshot(browser, screenshots, "app")


def test_roll_back_on_the_model_page_changes_the_version_that_answers(
    browser: Any, cluster: Dashboard, screenshots: Path
) -> None:
    eventually(lambda: answered_by(cluster, "adder:2"), "predictions by adder:2", timeout=WAIT_S)
    browser.get(f"{cluster.base}/ui/models/adder")
    wait_for(browser, lambda: text_of(browser, "#current-version") == "2", "version 2 current")
    assert "(current)" in text_of(browser, '#versions-table tr[data-version="2"]')
    wait_for(browser, lambda: len(css(browser, "#replicas-table tbody tr")) >= 2, "replicas")

    browser.find_element("id", "roll-back").click()
    wait_for(
        browser, lambda: "done" in text_of(browser, "#action-result"), "the roll back's result"
    )
    wait_for(browser, lambda: text_of(browser, "#current-version") == "1", "version 1 current")
    eventually(
        lambda: answered_by(cluster, "adder:1"),
        "predictions answered by adder:1 after the roll back",
        timeout=WAIT_S,
    )
    screenshot(browser, screenshots, "model")

    browser.find_element("id", "roll-forward").click()
    wait_for(browser, lambda: text_of(browser, "#current-version") == "2", "version 2 again")
    eventually(
        lambda: answered_by(cluster, "adder:2"),
        "predictions answered by adder:2 after rolling forward",
        timeout=WAIT_S,
    )


def test_scaling_shows_the_apis_answer_and_its_errors(browser: Any, cluster: Dashboard) -> None:
    browser.get(f"{cluster.base}/ui/models/adder")
    wait_for(browser, lambda: css(browser, '.replicas-input[data-version="1"]'), "the scale form")

    def scale(count: str) -> None:
        box = css(browser, '.replicas-input[data-version="1"]')[0]
        box.clear()
        box.send_keys(count)
        css(browser, 'button.scale[data-version="1"]')[0].click()

    scale("1000")
    wait_for(browser, lambda: "failed" in text_of(browser, "#action-result"), "the refusal")
    assert "at most 64" in text_of(browser, "#action-result")  # the API's own message
    assert wait_for(
        browser,
        lambda: "error" in css(browser, "#action-result")[0].get_attribute("class"),
        "the result shown as an error",
    )

    browser.refresh()  # a fresh form, without the refused action's message
    wait_for(browser, lambda: css(browser, '.replicas-input[data-version="1"]'), "the scale form")
    scale("2")
    wait_for(browser, lambda: "done" in text_of(browser, "#action-result"), "the scaling")
    assert "to 2 replica(s)" in text_of(browser, "#action-result")
    info = cluster.conn.get_model_info("adder", "1")
    assert info is not None and info["num_replicas"] == 2

    # The local cluster's reconciler enacts the count: the page shows two replicas of
    # version 1 in rotation, with no notebook involved.
    def in_rotation_v1() -> int:
        rows = css(browser, "#replicas-table tbody tr")
        cells = [[td.text for td in row.find_elements("css selector", "td")] for row in rows]
        return sum(1 for c in cells if len(c) >= 5 and c[1] == "1" and c[4] == "yes")

    wait_for(browser, lambda: in_rotation_v1() == 2, "two replicas of version 1 in rotation")


def test_the_pages_load_nothing_from_elsewhere_and_break_no_policy(
    browser: Any, cluster: Dashboard
) -> None:
    browser.get_log("browser")  # forget what earlier tests logged
    for path in ("/ui", "/ui/apps/ab", "/ui/models/adder"):
        browser.get(f"{cluster.base}{path}")
        wait_for(
            browser,
            lambda: browser.execute_script("return document.body.dataset.loaded"),
            f"{path} drawn",
        )
        urls = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        assert urls and all(u.startswith(cluster.base) for u in urls), urls
    problems = [
        e["message"]
        for e in browser.get_log("browser")
        if e["level"] == "SEVERE" or "Content Security Policy" in e["message"]
    ]
    assert problems == []


def test_logging_out_returns_to_the_login_form(browser: Any, cluster: Dashboard) -> None:
    browser.get(f"{cluster.base}/ui/models/adder")
    wait_for(browser, lambda: css(browser, "#versions-table"), "the model page")
    browser.find_element("id", "logout").click()
    wait_for(browser, lambda: css(browser, "#token"), "the login form after logging out")
    assert browser.get_cookie("schooner_ui") is None
    browser.get(f"{cluster.base}/ui/models/adder")
    assert css(browser, "#token"), "a page without a session is the login form"
    log_in(browser, cluster, cluster.token())
    wait_for(browser, lambda: css(browser, "#versions-table"), "back on the model page")


def test_a_token_rotation_sends_an_open_page_back_to_the_login_form(
    browser: Any, cluster: Dashboard
) -> None:
    # Last: it ends the browser's session.
    browser.get(f"{cluster.base}/ui")
    wait_for(browser, lambda: css(browser, "#apps-table"), "the overview")
    cluster.conn.rotate_admin_token()
    wait_for(browser, lambda: css(browser, "#token"), "the login form once the session ended")
    log_in(browser, cluster, cluster.token())
    wait_for(browser, lambda: css(browser, "#apps-table"), "the overview with the new token")
