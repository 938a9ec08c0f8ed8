"""An ONNX model file served from a Docker replica: the model image gets onnxruntime from
the package index (a build with host networking) and the file, with no pickle and no
scikit-learn; its answers over HTTP are scikit-learn's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from ports import cluster_ports

from admin import Connection, DockerContainerManager
from admin.deployers.onnx import deploy_onnx_model

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def conn(docker_client: Any, session_id: str) -> Iterator[Connection]:
    cm = DockerContainerManager(
        f"e2e-{session_id}-onnx",
        network_mode="host",
        base_image=os.environ.get("SCHOONER_TEST_BASE_IMAGE", "schooner/base-python:3.11"),
        **cluster_ports(),
    )
    c = Connection(cm, deploy_timeout=300)
    try:
        c.start()
        yield c
    finally:
        c.close()
        cm.destroy()


def test_a_scikit_learn_pipeline_exported_to_onnx_serves_from_a_docker_replica(
    conn: Connection, docker_client: Any, tmp_path: Path
) -> None:
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_iris(return_X_y=True)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    path = tmp_path / "iris.onnx"
    path.write_bytes(to_onnx(clf, x[:1].astype(np.float32)).SerializeToString())

    conn.register_application("iris", "doubles", None, 5_000_000)
    deploy_onnx_model(conn, "iris-onnx", 1, "doubles", path)
    conn.link_model_to_app("iris", "iris-onnx")

    rows = x[::10]
    url = f"http://{conn.get_query_addr()}/iris/predict"
    r = httpx.post(url, json={"input_batch": rows.tolist()}, timeout=30)
    assert r.status_code == 200, r.text
    answers = r.json()["batch_predictions"]
    assert [a["output"] for a in answers] == clf.predict(rows).tolist()
    assert not any(a["default"] for a in answers)

    # The replica runs the model file with onnxruntime: no pickle, no scikit-learn.
    cluster = conn.cm.cluster_name  # type: ignore[attr-defined]
    [replica] = docker_client.containers.list(
        filters={"label": [f"schooner.cluster={cluster}", "schooner.model=iris-onnx"]}
    )
    listing = replica.exec_run(["ls", "/opt/schooner/model"]).output.decode().split()
    assert sorted(listing) == ["model.json", "model.onnx"]
    probe = "import importlib.util as u; print(*(bool(u.find_spec(m)) for m in %s))"
    probe %= repr(("sklearn", "onnxruntime"))
    assert replica.exec_run(["python", "-c", probe]).output.decode().split() == ["False", "True"]
