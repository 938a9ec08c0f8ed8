"""``deploy/prometheus/prometheus.yml`` is a valid Prometheus configuration once copied
where it is meant to live, beside a cluster's targets file (``promtool check config``
resolves its relative paths, the token file's included). Scraping a real cluster with it
is ``tests/integration/test_prometheus.py``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml
from prometheus_server import CONFIG, require_tool


def test_the_shipped_config_checks_beside_a_targets_file(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    (tmp_path / "prometheus").mkdir()
    (tmp_path / "prometheus" / "targets.json").write_text("[]\n")
    (tmp_path / "admin-token").write_text("not-a-real-token\n")
    config = tmp_path / "prometheus" / "prometheus.yml"
    shutil.copyfile(CONFIG, config)
    checked = subprocess.run(
        [promtool, "check", "config", str(config)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_it_names_nothing_of_a_cluster() -> None:
    """Relative paths only: one copy per cluster directory, no editing."""
    doc = yaml.safe_load(CONFIG.read_text())
    (job,) = doc["scrape_configs"]
    assert job["authorization"]["credentials_file"] == "../admin-token"
    assert job["file_sd_configs"] == [{"files": ["targets.json"], "refresh_interval": "30s"}]
