"""``schooner top`` and pipelines: the apps table writes an app's stages in order, and
``--app`` adds a line of its stages (numbered from 1) with the version each arm answers
with now, its policy and params. Frames drawn from answers of the contract's shape
(``GET /admin/overview`` and ``/admin/apps/{app}/activity`` with ``"pipeline"``), and
from an older cluster's answers without it."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from admin.cli._top_view import Frame, pipeline_models, render, stages_line

NOW = 1_780_000_000.0


def stage(arms: list[str], policy: str = "single", **params: Any) -> dict[str, Any]:
    return {"arms": arms, "policy": policy, "policy_params": params, "policy_epoch": "e" + policy}


PIPELINE = [stage(["feat"]), stage(["clf-a", "clf-b:2"], "exp4", eta=0.2)]


def app(name: str, pipeline: list[dict[str, Any]] | None) -> dict[str, Any]:
    first = pipeline[0] if pipeline else stage(["adder"])
    out: dict[str, Any] = {
        "name": name,
        "input_type": "strings",
        "slo_micros": 20000,
        "policy": first["policy"],
        "linked_models": first["arms"],
        "now": {"rps": 3.0, "p50_ms": 1.0, "p99_ms": 2.0, "default_rate": 0.0, "error_rate": 0.0},
        "series": {"t": [], "rps": []},
    }
    if pipeline is not None:
        out["pipeline"] = pipeline
    return out


def model(name: str, current: str) -> dict[str, Any]:
    return {
        "name": name,
        "current_version": current,
        "versions": [current],
        "replicas_desired": {current: 1},
        "replicas": [],
        "now": {"batch_size": None, "queue_depth": 0, "qps": 0.0},
        "series": {"t": []},
    }


def overview(*apps: dict[str, Any]) -> dict[str, Any]:
    return {
        "now": NOW,
        "interval_s": 2.0,
        "window_s": 300,
        "frontends": [],
        "apps": list(apps),
        "models": [model("feat", "1"), model("clf-a", "3"), model("clf-b", "4")],
        "cache": {"now": {}, "series": {}},
    }


def activity(name: str, pipeline: list[dict[str, Any]] | None) -> dict[str, Any]:
    first = pipeline[0] if pipeline else stage(["adder"])
    out: dict[str, Any] = {
        "app": name,
        "policy": first["policy"],
        "policy_params": first["policy_params"],
        "linked_models": first["arms"],
        "weights": {"t": [], "arms": {}},
        "recent_defaults": [],
    }
    if pipeline is not None:
        out["pipeline"] = pipeline
    return out


def draw(frame: Frame, width: int = 200) -> str:
    console = Console(file=io.StringIO(), width=width, markup=False, highlight=False)
    console.print(render(frame, width))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


def cells(out: str, first: str) -> list[str]:
    for line in out.splitlines():
        if line.split(maxsplit=1)[:1] == [first]:
            return line.split()
    raise AssertionError(f"no row {first!r} in:\n{out}")


def line_with(out: str, start: str) -> str:
    for line in out.splitlines():
        if line.strip().startswith(start):
            return line.strip()
    raise AssertionError(f"no line starting {start!r} in:\n{out}")


def test_the_apps_table_shows_a_pipeline_as_its_stages_in_order() -> None:
    out = draw(Frame(overview(app("chain", PIPELINE), app("plain", None))))
    chain = cells(out, "chain")
    assert chain[-4:] == ["single->exp4", "feat", "->", "clf-a|clf-b:2"], chain
    # An app of one stage (here from a cluster that sends no "pipeline") is as before.
    assert cells(out, "plain")[-2:] == ["single", "adder"]


def test_an_app_of_one_stage_lists_its_links_as_before() -> None:
    one = app("one", [stage(["m", "m:1"], "exp3")])
    assert pipeline_models(one) == "m,m:1"
    assert cells(draw(Frame(overview(one))), "one")[-2:] == ["exp3", "m,m:1"]


def test_top_app_shows_every_stage_with_the_version_each_arm_answers_now() -> None:
    frame = Frame(overview(app("chain", PIPELINE)), activity("chain", PIPELINE))
    out = draw(frame)
    assert line_with(out, "stages:") == (
        "stages: 1 feat@1 (single) -> 2 clf-a@3|clf-b:2 (exp4 eta=0.2)"
    )
    assert "weights (stage 1)" in out


def test_top_app_finds_the_stages_in_the_overview_when_the_activity_has_none() -> None:
    frame = Frame(overview(app("chain", PIPELINE)), activity("chain", None))
    assert line_with(draw(frame), "stages:").startswith("stages: 1 feat@1 (single) -> 2 ")


def test_an_older_cluster_without_pipelines_shows_one_stage() -> None:
    frame = Frame(overview(app("plain", None)), activity("plain", None))
    out = draw(frame)
    assert line_with(out, "stages:") == "stages: 1 adder (single)"  # no current version known
    assert "weights (stage 1)" not in out


def test_a_stage_without_arms_or_versions_draws_dashes_not_none() -> None:
    odd = [stage([]), {"arms": ["x"], "policy": None}]
    line = stages_line(odd, [{"name": "x", "current_version": None}])
    assert line.plain == "stages: 1 - (single) -> 2 x (-)"
    assert "None" not in draw(Frame(overview(app("odd", odd)), activity("odd", odd)))


def live_stage(number: int, p99: float | None, defaults: float, errors: float) -> dict[str, Any]:
    now = {"rps": 4.0, "p50_ms": 1.0, "p99_ms": p99}
    return {
        "stage": number,
        "now": {**now, "defaults_per_s": defaults, "errors_per_s": errors},
        "series": {"t": [1.0, 2.0], "p99_ms": [p99, p99]},
    }


def test_top_app_shows_each_stages_p99_defaults_and_errors() -> None:
    live = [live_stage(1, 48.5, 0.0, 0.0), live_stage(2, None, 0.5, 0.25)]
    frame = Frame(overview(app("chain", PIPELINE)), {**activity("chain", PIPELINE), "stages": live})
    out = draw(frame)
    assert "stages (live)" in out
    # stage, req/s, p50, p99, defaults/s, errors/s, trend, models
    first, second = cells(out, "1"), cells(out, "2")
    assert first[:6] == ["1", "4.0", "1.0", "48.5", "0.00", "0.00"]
    assert first[-1] == "feat"
    assert second[:6] == ["2", "4.0", "1.0", "-", "0.50", "0.25"]  # no p99: a dash
    assert second[-1] == "clf-a|clf-b:2"
    # An app of one stage (no "stages" in its activity, or an empty list) has no table.
    plain = Frame(overview(app("plain", None)), {**activity("plain", None), "stages": []})
    assert "stages (live)" not in draw(plain)
    assert "stages (live)" not in draw(Frame(overview(app("plain", None)), activity("plain", None)))
