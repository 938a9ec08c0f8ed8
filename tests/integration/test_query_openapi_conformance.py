"""The query frontend's ``/openapi.json`` against a real local cluster: fetched from the
running frontend without a token, and the real answers of predict, update and V2
inference (successes, defaults, 400s, 401s, 404s) each fit the schema the document
gives for their path and status."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from clusters import started
from jsonschema import Draft202012Validator
from polling import eventually
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from admin import Connection, LocalContainerManager
from admin.deployers.python import deploy_python_closure

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DOC = "urn:schooner:query-openapi"


@pytest.fixture(scope="module")
def conn(
    tmp_path_factory: pytest.TempPathFactory, local_manager: Callable[..., LocalContainerManager]
) -> Iterator[Connection]:
    with started(local_manager(tmp_path_factory.mktemp("openapi"))) as c:
        c.register_application("sums", "doubles", -1, 5_000_000)
        deploy_python_closure(c, "summer", "1", "doubles", lambda xs: [float(sum(x)) for x in xs])
        c.link_model_to_app("sums", "summer")
        c.register_application("idle", "ints", "nothing yet", 50_000)  # no model: defaults
        c.register_application("locked", "ints", 0, 50_000)  # keyed: a request needs a key
        c.create_api_key("locked")
        yield c


@pytest.fixture(scope="module")
def base(conn: Connection) -> str:
    url = f"http://{conn.get_query_addr()}"

    def answers() -> bool:
        reply = httpx.post(f"{url}/sums/predict", json={"input": [1.0]}, timeout=10)
        return reply.status_code == 200 and reply.json()["default"] is False

    eventually(answers, "sums to answer from its model", timeout=60)
    return url


@pytest.fixture(scope="module")
def document(base: str) -> dict[str, Any]:
    reply = httpx.get(f"{base}/openapi.json", timeout=10)  # no token: it names no app
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    doc: dict[str, Any] = reply.json()
    assert doc["openapi"].startswith("3.1")
    assert "sums" not in reply.text and "locked" not in reply.text
    return doc


def check(doc: dict[str, Any], path: str, method: str, reply: httpx.Response) -> None:
    """``reply`` has a status ``path`` documents, and its JSON body fits that schema."""
    responses = doc["paths"][path][method]["responses"]
    status = str(reply.status_code)
    assert status in responses, f"{method.upper()} {path}: {status} is not documented"
    pointer = "/".join(
        p.replace("~", "~0").replace("/", "~1")
        for p in ("paths", path, method, "responses", status, "content", "application/json")
    )
    schema = {"$ref": f"{DOC}#/{quote(pointer)}/schema"}
    registry: Registry[Any] = Registry().with_resource(
        DOC, Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    errors = list(Draft202012Validator(schema, registry=registry).iter_errors(reply.json()))
    assert not errors, f"{method.upper()} {path} {status}: {[e.message for e in errors]}"


PREDICT = "/{app}/predict"
UPDATE = "/{app}/update"
INFER = "/v2/models/{app}/infer"


def test_predict_answers_fit_the_document(base: str, document: dict[str, Any]) -> None:
    one = httpx.post(f"{base}/sums/predict", json={"input": [1.0, 2.0]}, timeout=10)
    assert one.status_code == 200 and one.json()["output"] == 3.0
    check(document, PREDICT, "post", one)

    batch = httpx.post(f"{base}/sums/predict", json={"input_batch": [[1.0], [2.0]]}, timeout=10)
    assert [p["output"] for p in batch.json()["batch_predictions"]] == [1.0, 2.0]
    check(document, PREDICT, "post", batch)

    default = httpx.post(f"{base}/idle/predict", json={"input": [1]}, timeout=10)
    assert default.json()["default"] is True and default.json()["default_explanation"]
    check(document, PREDICT, "post", default)

    bad = httpx.post(f"{base}/sums/predict", json={"input": "not numbers"}, timeout=10)
    assert bad.status_code == 400
    check(document, PREDICT, "post", bad)

    pin = httpx.post(f"{base}/sums/predict", json={"input": [1.0], "version": "9"}, timeout=10)
    assert pin.status_code == 400 and pin.json()["error"] == "unknown_version"
    check(document, PREDICT, "post", pin)

    unknown = httpx.post(f"{base}/nope/predict", json={"input": [1.0]}, timeout=10)
    assert unknown.status_code == 404
    check(document, PREDICT, "post", unknown)

    locked = httpx.post(f"{base}/locked/predict", json={"input": [1]}, timeout=10)
    assert locked.status_code == 401
    check(document, PREDICT, "post", locked)

    wrong = httpx.get(f"{base}/sums/predict", timeout=10)
    assert wrong.status_code == 405
    check(document, PREDICT, "post", wrong)


def test_update_answers_fit_the_document(base: str, document: dict[str, Any]) -> None:
    learned = httpx.post(f"{base}/sums/update", json={"input": [1.0], "label": 1.0}, timeout=10)
    assert learned.status_code == 200 and learned.json()["models"] == ["summer:1"]
    check(document, UPDATE, "post", learned)

    no_label = httpx.post(f"{base}/sums/update", json={"input": [1.0]}, timeout=10)
    assert no_label.status_code == 400
    check(document, UPDATE, "post", no_label)

    nothing = httpx.post(f"{base}/idle/update", json={"input": [1], "label": 1}, timeout=10)
    assert nothing.status_code == 409
    check(document, UPDATE, "post", nothing)

    unknown = httpx.post(f"{base}/nope/update", json={"input": [1], "label": 1}, timeout=10)
    assert unknown.status_code == 404
    check(document, UPDATE, "post", unknown)


def _infer(rows: list[list[Any]], datatype: str = "FP64") -> dict[str, Any]:
    shape = [len(rows), len(rows[0])]
    return {
        "id": "r-1",
        "inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": rows}],
    }


def test_v2_answers_fit_the_document(base: str, document: dict[str, Any]) -> None:
    for path in ("/v2", "/v2/health/live", "/v2/health/ready"):
        check(document, path, "get", httpx.get(f"{base}{path}", timeout=10))
    meta = httpx.get(f"{base}/v2/models/sums", timeout=10)
    assert meta.status_code == 200
    check(document, "/v2/models/{app}", "get", meta)

    ok = httpx.post(f"{base}/v2/models/sums/infer", json=_infer([[1.0, 2.0], [3.0, 4.0]]))
    assert ok.status_code == 200 and ok.json()["outputs"][0]["data"] == [3.0, 7.0]
    check(document, INFER, "post", ok)

    default = httpx.post(f"{base}/v2/models/idle/infer", json=_infer([[1]], "INT64"))
    assert default.status_code == 200 and default.json()["parameters"]["default"] == [True]
    check(document, INFER, "post", default)

    bad = httpx.post(f"{base}/v2/models/sums/infer", json=_infer([[True]], "BOOL"))
    assert bad.status_code == 400
    check(document, INFER, "post", bad)

    unknown = httpx.post(f"{base}/v2/models/nope/infer", json=_infer([[1.0]]))
    assert unknown.status_code == 404
    check(document, INFER, "post", unknown)

    pinned = httpx.post(f"{base}/v2/models/sums/versions/1/infer", json=_infer([[5.0]]))
    assert pinned.status_code == 200 and pinned.json()["model_version"] == "1"
    check(document, "/v2/models/{app}/versions/{version}/infer", "post", pinned)
