"""Model files, not code: scikit-learn models converted by skl2onnx, deployed with
``deploy_onnx_model`` on the embedded default (real redis-server, frontends and
replicas as local processes) and queried over HTTP; their answers are scikit-learn's.

One cluster serves the module; each test uses its own app and model names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from clusters import started
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from admin import Connection, DeployError, LocalContainerManager
from admin.deployers.onnx import deploy_onnx_model

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

X, Y = load_iris(return_X_y=True)
ROWS = X[::10]  # 15 rows across the three classes


@pytest.fixture(scope="module")
def conn(
    tmp_path_factory: pytest.TempPathFactory, local_manager: Callable[..., LocalContainerManager]
) -> Iterator[Connection]:
    with started(local_manager(tmp_path_factory.mktemp("cluster"))) as c:
        yield c


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A classifier pipeline and a regressor, fitted and converted to ONNX files."""
    root = tmp_path_factory.mktemp("models")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, Y)
    reg = make_pipeline(StandardScaler(), Ridge()).fit(X[:, :3], X[:, 3])
    (root / "iris.onnx").write_bytes(to_onnx(clf, X[:1].astype(np.float32)).SerializeToString())
    (root / "petal.onnx").write_bytes(
        to_onnx(reg, X[:1, :3].astype(np.float32)).SerializeToString()
    )
    return {"clf": clf, "reg": reg, "iris": root / "iris.onnx", "petal": root / "petal.onnx"}


def predict(conn: Connection, app: str, body: Any) -> httpx.Response:
    return httpx.post(f"http://{conn.get_query_addr()}/{app}/predict", json=body, timeout=10)


def outputs(conn: Connection, app: str, rows: np.ndarray) -> list[Any]:
    """The outputs of ``rows`` sent as one ``input_batch`` request."""
    r = predict(conn, app, {"input_batch": rows.tolist()})
    assert r.status_code == 200, r.text
    answers = r.json()["batch_predictions"]
    assert not any(a["default"] for a in answers), answers
    return [a["output"] for a in answers]


def serve(conn: Connection, app: str, model: str, path: Path, **kw: Any) -> None:
    conn.register_application(app, "doubles", None, 5_000_000)
    deploy_onnx_model(conn, model, 1, "doubles", path, **kw)
    conn.link_model_to_app(app, model)


def test_a_classifier_pipeline_answers_as_scikit_learn_does(
    conn: Connection, models: dict[str, Any]
) -> None:
    lines: list[str] = []
    conn.report.callback = lines.append
    try:
        serve(conn, "iris", "iris-onnx", models["iris"])
    finally:
        conn.report.callback = None
    assert any("input 'X' float32 [N, 4]" in line for line in lines), lines
    expected = models["clf"].predict(ROWS).tolist()
    for row, label in zip(ROWS, expected, strict=True):
        r = predict(conn, "iris", {"input": row.tolist()})
        assert r.status_code == 200, r.text
        assert r.json()["output"] == label
    assert outputs(conn, "iris", ROWS) == expected
    record = conn.get_model_info("iris-onnx", 1)
    assert record is not None
    assert record["runtime"]["onnxruntime"] and record["pkgs"][0].startswith("onnxruntime==")


def test_a_regressor_answers_within_float32_of_scikit_learn(
    conn: Connection, models: dict[str, Any]
) -> None:
    serve(conn, "petal", "petal-onnx", models["petal"], pkgs_to_install=["onnxruntime>=1.16"])
    record = conn.get_model_info("petal-onnx", 1)
    assert record is not None and record["pkgs"] == ["onnxruntime>=1.16"]  # theirs, not ours
    got = outputs(conn, "petal", ROWS[:, :3])
    assert all(isinstance(v, float) for v in got), got  # a value per query, not [value]
    np.testing.assert_allclose(got, models["reg"].predict(ROWS[:, :3]), rtol=1e-5, atol=1e-5)


def test_another_output_is_chosen_by_name(conn: Connection, models: dict[str, Any]) -> None:
    serve(conn, "iris-proba", "iris-proba", models["iris"], output_name="output_probability")
    got = outputs(conn, "iris-proba", ROWS)
    expected = models["clf"].predict_proba(ROWS)
    for answer, probabilities in zip(got, expected, strict=True):
        assert sorted(answer) == ["0", "1", "2"]
        np.testing.assert_allclose([answer[k] for k in "012"], probabilities, rtol=1e-4, atol=1e-6)


def test_a_query_with_the_wrong_number_of_features_is_a_model_error_not_a_crash(
    conn: Connection, models: dict[str, Any]
) -> None:
    serve(conn, "iris-strict", "iris-strict", models["iris"])
    conn.register_application("iris-told", "doubles", None, 5_000_000, expose_model_errors=True)
    conn.link_model_to_app("iris-told", "iris-strict")
    r = predict(conn, "iris-strict", {"input": [1.0, 2.0, 3.0]})
    assert r.status_code == 500, r.text
    assert "iris-strict" in r.json()["message"] and "ModelInputError" in r.json()["message"]
    told = predict(conn, "iris-told", {"input": [1.0, 2.0, 3.0]}).json()["message"]
    assert "3 values but the model's input 'X' takes 4" in told
    # The replica is still serving.
    assert outputs(conn, "iris-strict", ROWS[:2]) == models["clf"].predict(ROWS[:2]).tolist()


def test_bad_files_and_input_types_are_refused_before_anything_is_deployed(
    conn: Connection, models: dict[str, Any], tmp_path: Path
) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07definitely not a model")
    with pytest.raises(DeployError, match=r"not an ONNX model.*skl2onnx"):
        deploy_onnx_model(conn, "junk", "1", "doubles", junk)
    with pytest.raises(DeployError, match="no file at"):
        deploy_onnx_model(conn, "junk", "1", "doubles", tmp_path / "missing.onnx")
    with pytest.raises(DeployError, match=r"tensor\(float\) but input_type='strings'"):
        deploy_onnx_model(conn, "junk", "1", "strings", models["iris"])
    with pytest.raises(DeployError, match=r"no output 'proba'.*'output_label'"):
        deploy_onnx_model(conn, "junk", "1", "doubles", models["iris"], output_name="proba")
    assert not [m for m in conn.get_all_models() if m.startswith("junk:")]
