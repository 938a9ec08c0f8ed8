"""The ``schooner`` command on the embedded default: a real local cluster (redis-server,
frontends and replicas as processes), driven through ``admin.cli.main`` as the shell
would, from start to destroy. What the Docker e2e test (tests/e2e/test_cli_docker.py)
does not: deploy --pickle and --onnx, whose answers are scikit-learn's, and predict on an
app closed by an API key read from stdin.

One cluster serves the module; each test uses its own app and model names.
"""

from __future__ import annotations

import io
import json
import pickle
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from admin.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

X, Y = load_iris(return_X_y=True)
ROWS = X[::15]


class Shell:
    """``schooner ... --data-dir DIR``, in this process; what it printed."""

    def __init__(self, data_dir: Path, capsys: pytest.CaptureFixture[str] | None = None) -> None:
        self.data_dir = data_dir
        self.capsys = capsys

    def __call__(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        assert self.capsys is not None
        self.capsys.readouterr()
        saved = sys.stdin
        sys.stdin = io.StringIO(stdin)
        try:
            status = main([*argv, "--data-dir", str(self.data_dir)])
        finally:
            sys.stdin = saved
        out, err = self.capsys.readouterr()
        return status, out, err

    def ok(self, *argv: str, stdin: str = "") -> str:
        status, out, err = self(*argv, stdin=stdin)
        assert status == 0, f"schooner {' '.join(argv)} exited {status}: {err}"
        return out


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, cluster_ports: Callable[[], dict[str, int]]
) -> Iterator[Path]:
    data_dir = tmp_path_factory.mktemp("cli-cluster")
    argv = ["start", "--data-dir", str(data_dir)]
    for option, port in cluster_ports().items():
        argv += [f"--{option.replace('_', '-')}", str(port)]
    assert main(argv) == 0
    try:
        yield data_dir
    finally:
        main(["destroy", "--yes", "--data-dir", str(data_dir)])


@pytest.fixture
def shell(cluster: Path, capsys: pytest.CaptureFixture[str]) -> Shell:
    return Shell(cluster, capsys)


@pytest.fixture(scope="module")
def classifier() -> Any:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, Y)


def batch_outputs(shell: Shell, app: str, rows: np.ndarray) -> list[Any]:
    answers = json.loads(shell.ok("predict", app, json.dumps(rows.tolist()), "--batch"))
    assert not any(a["default"] for a in answers), answers
    return [a["output"] for a in answers]


def test_deploy_a_pickled_model_and_predict_as_scikit_learn_does(
    shell: Shell, classifier: Any, tmp_path: Path
) -> None:
    (tmp_path / "iris.pkl").write_bytes(pickle.dumps(classifier))
    shell.ok("register", "iris-pickle", "--input-type", "doubles", "--slo-micros", "5000000")
    out = shell.ok(
        "deploy", "iris-pkl", "1", "--input-type", "doubles", "--pickle", str(tmp_path / "iris.pkl")
    )
    assert "deployed iris-pkl:1" in out
    shell.ok("link", "iris-pickle", "iris-pkl")
    assert batch_outputs(shell, "iris-pickle", ROWS) == classifier.predict(ROWS).tolist()
    one = json.loads(shell.ok("predict", "iris-pickle", json.dumps(ROWS[0].tolist())))
    assert one["output"] == classifier.predict(ROWS[:1])[0]
    assert one["models"] == ["iris-pkl:1"]


def test_deploy_an_onnx_file_and_predict_as_scikit_learn_does(
    shell: Shell, classifier: Any, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    skl2onnx = pytest.importorskip("skl2onnx", reason="skl2onnx is not installed")
    pytest.importorskip("admin.deployers.onnx", reason="no ONNX deployer in this tree")
    model = skl2onnx.to_onnx(classifier, X[:1].astype(np.float32))
    (tmp_path / "iris.onnx").write_bytes(model.SerializeToString())
    shell.ok("register", "iris-onnx", "--input-type", "doubles", "--slo-micros", "5000000")
    onnx = ["--onnx", str(tmp_path / "iris.onnx")]
    shell.ok("deploy", "iris-onnx", "1", "--input-type", "doubles", *onnx)
    shell.ok("link", "iris-onnx", "iris-onnx")
    assert batch_outputs(shell, "iris-onnx", ROWS) == classifier.predict(ROWS).tolist()
    # Another output of the graph, by name.
    shell.ok("register", "iris-proba", "--input-type", "doubles", "--slo-micros", "5000000")
    argv = ["deploy", "iris-proba", "1", "--input-type", "doubles", *onnx]
    shell.ok(*argv, "--output-name", "output_probability")
    shell.ok("link", "iris-proba", "iris-proba")
    got = batch_outputs(shell, "iris-proba", ROWS)
    for answer, expected in zip(got, classifier.predict_proba(ROWS), strict=True):
        np.testing.assert_allclose([answer[k] for k in "012"], expected, rtol=1e-4, atol=1e-6)


def test_predict_on_a_closed_app_takes_its_key_from_stdin_only(
    shell: Shell, tmp_path: Path
) -> None:
    (tmp_path / "echo.py").write_text("def predict(xs):\n    return [x.upper() for x in xs]\n")
    shell.ok("register", "closed", "--input-type", "strings", "--default-output", "none")
    argv = ["deploy", "echo", "1", "--input-type", "strings", "--func", "echo:predict"]
    shell.ok(*argv, "--path", str(tmp_path))
    shell.ok("link", "closed", "echo")
    key = shell.ok("create-api-key", "closed").strip()
    status, _, err = shell("predict", "closed", '"hi"')
    assert status == 1 and err.startswith("error: ") and key not in err
    answer = json.loads(shell.ok("predict", "closed", '"hi"', "--api-key-stdin", stdin=key + "\n"))
    assert answer["output"] == "HI" and not answer["default"]
    assert key not in shell.ok("status")


def test_predict_version_pins_the_answer_to_that_version(shell: Shell, tmp_path: Path) -> None:
    for version, word in (("1", "one"), ("2", "two")):
        code = tmp_path / f"v{version}"
        code.mkdir()
        (code / f"says_{word}.py").write_text(
            f"def predict(xs):\n    return ['{word}' for _ in xs]\n"
        )
        argv = ["deploy", "says", version, "--input-type", "strings"]
        shell.ok(*argv, "--func", f"says_{word}:predict", "--path", str(code))
    shell.ok("register", "pinned", "--input-type", "strings")
    shell.ok("link", "pinned", "says")
    assert json.loads(shell.ok("predict", "pinned", '"x"'))["output"] == "two"
    pinned = json.loads(shell.ok("predict", "pinned", '"y"', "--version", "1"))
    assert pinned["output"] == "one" and pinned["models"] == ["says:1"]
    batch = json.loads(shell.ok("predict", "pinned", '["a", "b"]', "--batch", "--version", "1"))
    assert [a["output"] for a in batch] == ["one", "one"]
    status, _, err = shell("predict", "pinned", '"z"', "--version", "9")
    assert status == 1 and "9" in err
