"""The chaos benchmark's verdicts: how answers are classed and when a load counts as normal
again (``benchmarks.chaos_load``). The figures an operator reads in its table."""

from __future__ import annotations

import httpx

from benchmarks.chaos_load import Answer, classify, recovery, summarize


def _answers(kinds: list[tuple[float, str]]) -> list[Answer]:
    """One answer per (sent at, kind), each answered 10 ms later."""
    return [Answer("predict", t, t + 0.01, kind, 0) for t, kind in kinds]


def test_a_default_answer_is_not_a_real_prediction() -> None:
    default = httpx.Response(200, json={"output": -1.0, "default": True})
    real = httpx.Response(200, json={"output": 1, "default": False})
    assert classify(default, prediction=True) == "default"
    assert classify(real, prediction=True) == "ok"
    assert classify(httpx.Response(422, json={}), prediction=True) == "4xx"
    assert classify(httpx.Response(503, json={}), prediction=False) == "5xx"
    assert classify(httpx.Response(200, content=b"not json"), prediction=True) == "5xx"


def test_nothing_went_wrong_means_normal_at_once() -> None:
    answers = _answers([(t / 10, "ok") for t in range(100)])
    assert recovery(answers, fault_time=3.0, end=10.0, hold=2.0) == 0.0


def test_normal_again_from_the_first_real_answer_after_the_last_bad_one() -> None:
    kinds = [(t / 10, "ok") for t in range(30)]  # 0.0 .. 2.9 s: fine
    kinds += [(3.0 + t / 10, "conn") for t in range(15)]  # 3.0 .. 4.4 s: refused
    kinds += [(4.5 + t / 10, "ok") for t in range(50)]  # 4.5 .. 9.4 s: fine again
    got = recovery(_answers(kinds), fault_time=3.0, end=10.0, hold=2.0)
    assert got is not None and abs(got - 1.5) < 1e-9


def test_a_run_that_ends_with_errors_never_came_back() -> None:
    kinds = [(t / 10, "ok") for t in range(30)] + [(3.0 + t / 10, "5xx") for t in range(70)]
    assert recovery(_answers(kinds), fault_time=3.0, end=10.0, hold=2.0) is None


def test_a_good_stretch_shorter_than_the_hold_is_not_normal() -> None:
    kinds = [(3.0, "default"), (9.0, "ok"), (9.5, "ok")]
    assert recovery(_answers(kinds), fault_time=3.0, end=10.0, hold=2.0) is None


def test_summary_counts_errors_by_kind_and_status() -> None:
    answers = [
        Answer("predict", 0.0, 0.01, "ok", 200),
        Answer("predict", 4.0, 4.2, "4xx", 422),
        Answer("predict", 4.0, 4.01, "4xx", 422),
        Answer("predict", 5.0, 5.01, "5xx", 503),
        Answer("predict", 6.0, 6.05, "default", 200),
    ]
    got = summarize(answers, fault_time=3.0, end=10.0, slo=0.1, hold=2.0)
    assert (got["requests"], got["ok"], got["4xx"], got["5xx"], got["default"]) == (5, 1, 2, 1, 1)
    assert got["statuses"] == {"422": 2, "503": 1}
    assert got["over_slo_after_pct"] == 25.0  # 1 of the 4 answers after the fault took > 100 ms
    assert got["recovered_after_s"] is None
    no_slo = summarize(answers, fault_time=3.0, end=10.0, slo=None, hold=None)
    assert no_slo["over_slo_after_pct"] is None and not no_slo["recovery_judged"]
