"""Pipelines on the embedded default: an app as a chain of stages, end to end.

Real redis-server, both frontends and every model replica as local processes; queries
and feedback over HTTP, as an application sends them. One cluster serves the module
(each test has its own app and model names).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from clusters import started
from polling import eventually

from admin import Connection, LocalContainerManager
from admin.deployers.python import deploy_python_closure
from admin.exceptions import InvalidRequestError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

HTTP = httpx.Client(timeout=10)
DIM = 16


@pytest.fixture(scope="module")
def conn(
    tmp_path_factory: pytest.TempPathFactory, local_manager: Callable[..., LocalContainerManager]
) -> Iterator[Connection]:
    with started(local_manager(tmp_path_factory.mktemp("cluster"))) as c:
        yield c


@pytest.fixture(scope="module", autouse=True)
def _close_http() -> Iterator[None]:
    yield
    HTTP.close()


def predict(conn: Connection, app: str, body: Any, status: int = 200) -> dict[str, Any]:
    r = HTTP.post(f"http://{conn.get_query_addr()}/{app}/predict", json=body)
    assert r.status_code == status, r.text
    answer: dict[str, Any] = r.json()
    return answer


def update(conn: Connection, app: str, body: Any) -> dict[str, Any]:
    r = HTTP.post(f"http://{conn.get_query_addr()}/{app}/update", json=body)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


# ------------------------------------------------------------ featuriser -> sklearn


def featurise(text: str) -> list[float]:
    """A bag of hashed words, a deterministic stand-in for a text embedder."""
    vec = [0.0] * DIM
    for word in text.lower().split():
        vec[zlib.crc32(word.encode()) % DIM] += 1.0
    return vec


TEXTS = [
    "great product works well",
    "terrible waste of money",
    "really great value",
    "awful broken terrible",
    "works as described great",
    "money back broken",
]


def test_a_two_stage_pipeline_answers_what_the_two_functions_give_in_sequence(
    conn: Connection,
) -> None:
    from sklearn.linear_model import LogisticRegression

    labels = [1, 0, 1, 0, 1, 0]
    clf = LogisticRegression().fit(np.array([featurise(t) for t in TEXTS]), labels)

    deploy_python_closure(
        conn,
        "feat",
        "1",
        "strings",
        lambda texts: [featurise(t) for t in texts],
        output_type="doubles",
    )
    deploy_python_closure(
        conn,
        "clf",
        "1",
        "doubles",
        lambda xs: [int(y) for y in clf.predict(np.asarray(xs))],
        pkgs_to_install=["scikit-learn"],
    )
    conn.register_application("reviews", "strings", -1, 2_000_000)
    conn.set_app_pipeline("reviews", ["feat", "clf"])

    probes = [*TEXTS, "great great great", "broken money", "nothing in particular"]
    expected = [int(y) for y in clf.predict(np.array([featurise(t) for t in probes]))]
    for text, want in zip(probes, expected, strict=True):
        body = predict(conn, "reviews", {"input": text})
        assert body["default"] is False, body
        assert body["output"] == want
        assert body["models"] == ["feat:1", "clf:1"]
    batch = predict(conn, "reviews", {"input_batch": probes})["batch_predictions"]
    assert [b["output"] for b in batch] == expected

    stages = conn.get_app_pipeline("reviews")
    assert [s["arms"] for s in stages] == [["feat"], ["clf"]]


# ------------------------------------------------------- three stages, exp4 in the middle


def test_a_three_stage_pipeline_with_an_exp4_middle_stage_combines_and_learns(
    conn: Connection,
) -> None:
    deploy_python_closure(
        conn,
        "p3-in",
        "1",
        "doubles",
        lambda xs: [[float(x[0]), 1.0] for x in xs],
        output_type="doubles",
    )
    # Two experts of the middle stage: "right" doubles the first value, "wrong" adds 7.
    deploy_python_closure(
        conn,
        "p3-right",
        "1",
        "doubles",
        lambda xs: [[2.0 * x[0] + 0.5] for x in xs],
        output_type="doubles",
    )
    deploy_python_closure(
        conn,
        "p3-wrong",
        "1",
        "doubles",
        lambda xs: [[x[0] + 7.5] for x in xs],
        output_type="doubles",
    )
    deploy_python_closure(conn, "p3-out", "1", "doubles", lambda xs: [float(x[0]) for x in xs])
    conn.register_application("three", "doubles", -1, 2_000_000)
    conn.set_app_pipeline(
        "three",
        [
            "p3-in",
            {"arms": ["p3-right", "p3-wrong"], "policy": "exp4", "policy_params": {"eta": 2.0}},
            "p3-out",
        ],
    )

    body = predict(conn, "three", {"input": [4.0]})
    assert body["default"] is False, body
    # Nothing learned yet: equal weights, the mean of 8.5 and 11.5.
    assert body["output"] == pytest.approx(10.0)
    assert body["models"] == ["p3-in:1", "p3-right:1", "p3-wrong:1", "p3-out:1"]

    for x in range(20):  # the label is what "right" leads to
        answer = update(conn, "three", {"input": [float(x)], "label": 2.0 * x + 0.5})
        stage2 = answer["stages"][1]
        assert stage2["stage"] == 2 and stage2["policy"] == "exp4"
        assert set(stage2["losses"]) == {"p3-right:1", "p3-wrong:1"}
        assert stage2["losses"]["p3-right:1"] == pytest.approx(0.0)

    state = conn.get_policy_state("three", stage=2)
    arms = state["arms"]
    assert arms["p3-right"]["probability"] > 0.9 > arms["p3-wrong"]["probability"]

    def learned() -> bool:
        return abs(predict(conn, "three", {"input": [4.0]})["output"] - 8.5) < 0.5

    eventually(learned, what="the exp4 stage to weigh the right expert")


# ------------------------------------------------------------------ one SLO, late stage


def test_a_slow_second_stage_yields_the_default_naming_it(conn: Connection) -> None:
    deploy_python_closure(
        conn, "fast", "1", "doubles", lambda xs: [[float(x[0])] for x in xs], output_type="doubles"
    )

    def slow(xs: list[Any]) -> list[float]:
        time.sleep(2.0)
        return [float(x[0]) for x in xs]

    deploy_python_closure(conn, "slow", "1", "doubles", slow)
    conn.register_application("late", "doubles", "nothing", 300_000)
    conn.set_app_pipeline("late", ["fast", "slow"])

    body = predict(conn, "late", {"input": [1.0]})
    assert body["default"] is True
    assert body["output"] == "nothing"
    assert "stage 2" in body["default_explanation"]
    assert "slow" in body["default_explanation"]


# -------------------------------------------------------------- rollback of one stage


def test_rolling_back_one_stage_changes_only_its_contribution(conn: Connection) -> None:
    deploy_python_closure(
        conn, "rb-a", "1", "doubles", lambda xs: [[x[0] + 1.0] for x in xs], output_type="doubles"
    )
    deploy_python_closure(conn, "rb-b", "1", "doubles", lambda xs: [x[0] * 10.0 for x in xs])
    conn.register_application("rollback", "doubles", -1, 2_000_000)
    conn.set_app_pipeline("rollback", ["rb-a", "rb-b"])
    first = predict(conn, "rollback", {"input": [2.0]})
    assert first["output"] == 30.0 and first["models"] == ["rb-a:1", "rb-b:1"]

    deploy_python_closure(conn, "rb-b", "2", "doubles", lambda xs: [x[0] * 100.0 for x in xs])
    second = predict(conn, "rollback", {"input": [2.0]})
    assert second["output"] == 300.0 and second["models"] == ["rb-a:1", "rb-b:2"]

    conn.set_model_version("rb-b", "1")
    eventually(
        lambda: predict(conn, "rollback", {"input": [2.0]})["models"] == ["rb-a:1", "rb-b:1"],
        what="the rollback of stage 2",
    )
    again = predict(conn, "rollback", {"input": [2.0]})
    assert again["output"] == 30.0


# ------------------------------------------------------------------- types, when set


def test_a_type_mismatch_is_refused_when_set_and_nothing_changes(conn: Connection) -> None:
    deploy_python_closure(
        conn, "words", "1", "strings", lambda xs: [x.upper() for x in xs], output_type="strings"
    )
    deploy_python_closure(conn, "nums", "1", "doubles", lambda xs: [sum(x) for x in xs])
    deploy_python_closure(conn, "echo", "1", "strings", lambda xs: [str(x) for x in xs])
    conn.register_application("mismatch", "strings", -1, 2_000_000)
    conn.set_app_pipeline("mismatch", ["words", "echo"])

    with pytest.raises(InvalidRequestError) as refused:
        conn.set_app_pipeline("mismatch", ["words", "nums"])
    message = str(refused.value)
    assert "stage 1" in message and "stage 2" in message
    assert "strings" in message and "doubles" in message
    assert [s["arms"] for s in conn.get_app_pipeline("mismatch")] == [["words"], ["echo"]]
    assert predict(conn, "mismatch", {"input": "hi"})["output"] == "HI"


def test_an_output_the_next_stage_cannot_take_is_an_error_naming_stage_and_model(
    conn: Connection,
) -> None:
    # No output type declared: the pipeline is accepted, and each output checked.
    deploy_python_closure(
        conn, "odd", "1", "doubles", lambda xs: ["not numbers" if x[0] < 0 else [x[0]] for x in xs]
    )
    deploy_python_closure(conn, "neg", "1", "doubles", lambda xs: [-x[0] for x in xs])
    conn.register_application("convert", "doubles", -1, 2_000_000)
    conn.set_app_pipeline("convert", ["odd", "neg"])
    assert predict(conn, "convert", {"input": [3.0]})["output"] == -3.0

    body = predict(conn, "convert", {"input": [-1.0]}, status=502)
    assert body["error"] == "pipeline_output_rejected"
    message = body["message"]
    assert "stage 1" in message and "odd:1" in message and "not numbers" in message
    assert "stage 2" in message and "doubles" in message
