"""Fixtures of the dashboard tests: a real local cluster, a headless Chromium, artifacts.

``dashboard_cluster`` (per module) starts an embedded-default cluster (real Redis,
management and query frontends, model replicas as local processes) on free ports.
``browser`` drives Debian's ``/usr/bin/chromium`` headless through
``/usr/bin/chromedriver`` (selenium); without them the browser tests are skipped with the
reason, unless ``SCHOONER_REQUIRE_BROWSER=1`` (CI), when they fail. Screenshots go to
``$SCHOONER_ARTIFACTS_DIR/screenshots/`` (default ``<repo>/artifacts/screenshots/``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ports
import pytest
from clusters import started
from dashboards import Dashboard

from admin import LocalContainerManager

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = ("/usr/bin/chromium", "chromium", "chromium-browser")
CHROMEDRIVER = ("/usr/bin/chromedriver", "chromedriver")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def dashboard_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    data_dir = tmp_path_factory.mktemp("dashboard")
    manager = LocalContainerManager(data_dir=data_dir, **ports.cluster_ports())
    with started(manager) as conn:
        yield Dashboard(conn, data_dir)


def _found(candidates: tuple[str, ...]) -> str | None:
    for name in candidates:
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium (selenium WebDriver), closed after the module."""
    chromium, chromedriver = _found(CHROMIUM), _found(CHROMEDRIVER)
    missing = None
    if chromium is None or chromedriver is None:
        missing = "chromium and chromedriver (apt install chromium chromium-driver)"
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing = "selenium (pip install -e '.[dev]')"
    if missing is not None or chromium is None or chromedriver is None:
        reason = f"the browser tests need {missing}"
        if os.environ.get("SCHOONER_REQUIRE_BROWSER") == "1":
            pytest.fail(f"SCHOONER_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the page screenshots go (created)."""
    root = Path(os.environ.get("SCHOONER_ARTIFACTS_DIR") or REPO / "artifacts")
    path = root / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path
