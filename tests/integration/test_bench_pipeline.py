"""The pipeline benchmark's Schooner group on a real local cluster: the featuriser and the
classifier deployed, the two apps a client chains (and, where the checkout has
pipelines, the one pipeline app) answering what the two functions give, and the Python
load generator driving each through its own process."""

from __future__ import annotations

from pathlib import Path

from admin import Connection
from benchmarks.contenders import Settings, schooner_pipeline
from benchmarks.pyload import run_pyload


def test_the_pipeline_group_serves_and_is_driven(tmp_path: Path) -> None:
    settings = Settings(out_dir=tmp_path, concurrencies=(1, 4), start_timeout=60.0)
    with schooner_pipeline(settings) as targets:
        names = [t.name for t in targets]
        assert "schooner-chained" in names
        # Without pipelines in the checkout the group says why it left the pipeline out.
        skipped = [n for n in settings.notes if n.startswith("schooner-pipeline skipped")]
        assert ("schooner-pipeline" in names) != bool(skipped)
        if hasattr(Connection, "set_app_pipeline"):
            assert "schooner-pipeline" in names, skipped
        for target in targets:
            assert target.driver == "pyload"
            assert target.pids() and target.profile_pid in target.pids()
            result = run_pyload(target.urls, concurrency=4, duration=0.5, mode=target.mode)
            assert result.requests > 0, target.name
            assert (result.non2xx, result.defaults, result.socket_errors) == (0, 0, 0)
        chained = next(t for t in targets if t.name == "schooner-chained")
        assert chained.urls[0].endswith("/feat/predict")
        assert chained.urls[1].endswith("/clf/predict")
    assert (tmp_path / "logs" / "schooner-pipeline").is_dir()  # the cluster's logs kept
