"""The Open Inference Protocol (KServe V2) on a real local cluster, spoken by the real
clients: ``tritonclient[http]`` with its defaults (binary tensor data) and with JSON,
and KServe's ``InferenceRESTClient`` (from ``.venv-kserve``, made by ``make test``:
kserve pins older psutil and kubernetes than ours). Also the native ``"version"`` pin,
which ``/v2/models/{app}/versions/{v}/infer`` shares.

One cluster serves the module; each test uses its own apps.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from clusters import started
from polling import eventually
from tritonclient.utils import InferenceServerException

from admin import Connection, LocalContainerManager
from admin.deployers.python import deploy_python_closure

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
KSERVE_PYTHON = REPO / ".venv-kserve" / "bin" / "python"


@pytest.fixture(scope="module")
def conn(
    tmp_path_factory: pytest.TempPathFactory, local_manager: Callable[..., LocalContainerManager]
) -> Iterator[Connection]:
    with started(local_manager(tmp_path_factory.mktemp("oip"))) as c:
        # sums: doubles, version 1 sums each row, version 2 (current) sums it times ten.
        c.register_application("sums", "doubles", -1, 5_000_000)
        deploy_python_closure(c, "summer", "1", "doubles", lambda xs: [float(sum(x)) for x in xs])
        c.link_model_to_app("sums", "summer")
        deploy_python_closure(
            c, "summer", "2", "doubles", lambda xs: [float(sum(x)) * 10 for x in xs]
        )
        c.register_application("shout", "strings", "?", 5_000_000)
        deploy_python_closure(c, "upper", "1", "strings", lambda xs: [s.upper() for s in xs])
        c.link_model_to_app("shout", "upper")
        # No model linked: every query gets the default, flagged.
        c.register_application("idle", "ints", "nothing yet", 50_000)
        yield c


@pytest.fixture(scope="module")
def url(conn: Connection) -> str:
    return conn.get_query_addr()


@pytest.fixture(scope="module")
def client(conn: Connection, url: str) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url, network_timeout=30.0)
    eventually(lambda: c.is_model_ready("sums") and c.is_model_ready("shout"), "models ready")
    eventually(lambda: c.is_model_ready("sums", "2"), "version 2 ready", timeout=30)
    try:
        yield c
    finally:
        c.close()


def doubles(x: np.ndarray, binary: bool = True) -> list[triton.InferInput]:
    tensor = triton.InferInput("input", list(x.shape), "FP64")
    tensor.set_data_from_numpy(x, binary_data=binary)
    return [tensor]


def test_health_and_server_metadata(client: triton.InferenceServerClient, url: str) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "schooner"
    assert "binary_tensor_data" in meta["extensions"]
    assert httpx.get(f"http://{url}/v2/health/ready", timeout=5).json() == {"ready": True}


def test_model_metadata_and_readiness(client: triton.InferenceServerClient) -> None:
    meta = client.get_model_metadata("sums")
    assert meta["name"] == "sums"
    assert meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, -1]}]
    assert client.get_model_metadata("shout")["inputs"][0]["datatype"] == "BYTES"
    assert client.is_model_ready("sums", "1")
    assert not client.is_model_ready("idle")  # nothing linked
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("nope")
    assert err.value.status() == "404" and "'nope'" in err.value.message()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_a_batch_of_n_rows_is_n_queries(client: triton.InferenceServerClient, binary: bool) -> None:
    x = np.arange(12, dtype=np.float64).reshape(3, 4)
    wanted = [triton.InferRequestedOutput("output", binary_data=binary)]
    result = client.infer("sums", doubles(x, binary), outputs=wanted, request_id="r-7")
    assert result.as_numpy("output").tolist() == (x.sum(axis=1) * 10).tolist()
    response = result.get_response()
    assert response["model_name"] == "sums"
    assert response["model_version"] == "2"
    assert response["id"] == "r-7"
    params = response["parameters"]
    assert params["default"] == [False, False, False]
    assert params["models"] == [["summer:2"]] * 3
    assert len(set(params["query_ids"])) == 3


def test_a_large_request_is_parsed_off_the_loop_the_same(
    client: triton.InferenceServerClient,
) -> None:
    x = np.arange(100_000, dtype=np.float64).reshape(1000, 100)  # 800 kB: past 256 KiB
    for binary in (True, False):
        result = client.infer("sums", doubles(x, binary))
        assert result.as_numpy("output").tolist() == (x.sum(axis=1) * 10).tolist()


def test_strings_go_as_bytes_both_ways(client: triton.InferenceServerClient) -> None:
    words = np.array([["héllo".encode()], [b"world"]], dtype=np.object_)
    for binary in (True, False):
        tensor = triton.InferInput("input", [2, 1], "BYTES")
        tensor.set_data_from_numpy(words, binary_data=binary)
        out = triton.InferRequestedOutput("output", binary_data=binary)
        result = client.infer("shout", [tensor], outputs=[out])
        assert [w.decode() if isinstance(w, bytes) else w for w in result.as_numpy("output")] == [
            "HÉLLO",
            "WORLD",
        ]


def test_defaults_are_flagged_in_the_parameters(client: triton.InferenceServerClient) -> None:
    tensor = triton.InferInput("input", [2, 3], "INT64")
    tensor.set_data_from_numpy(np.ones((2, 3), dtype=np.int64))
    result = client.infer("idle", [tensor])
    assert [v.decode() for v in result.as_numpy("output")] == ["nothing yet"] * 2
    params = result.get_response()["parameters"]
    assert params["default"] == [True, True]
    assert all("no model is linked" in why for why in params["default_explanation"])
    assert params["models"] == [[], []]


def test_a_pinned_version_answers(client: triton.InferenceServerClient, url: str) -> None:
    x = np.array([[1.0, 2.0]])
    result = client.infer("sums", doubles(x), model_version="1")
    assert result.as_numpy("output").tolist() == [3.0]
    assert result.get_response()["model_version"] == "1"
    assert client.get_model_metadata("sums", "1")["parameters"]["version"] == "1"

    with pytest.raises(InferenceServerException) as err:
        client.infer("sums", doubles(x), model_version="9")
    assert err.value.status() == "400"
    assert "model 'summer' has no version '9' (its versions: 1, 2)" in err.value.message()
    assert "'sums'" in err.value.message()


def test_the_native_version_pin(url: str) -> None:
    def predict(body: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"http://{url}/sums/predict", json=body, timeout=10)

    assert predict({"input": [1.0, 2.0]}).json()["output"] == 30.0  # the current version
    for pin in ("1", 1):  # Clipper sends an int
        r = predict({"input": [1.0, 2.0], "version": pin})
        assert r.status_code == 200, r.text
        assert r.json()["output"] == 3.0 and r.json()["models"] == ["summer:1"]
    batch = predict({"input_batch": [[1.0], [2.0]], "version": "1"}).json()["batch_predictions"]
    assert [p["output"] for p in batch] == [1.0, 2.0]
    r = predict({"input": [1.0], "version": "3"})
    assert r.status_code == 400
    assert r.json()["message"] == (
        "app 'sums': model 'summer' has no version '3' (its versions: 1, 2)"
    )
    # And Clipper's sentence, which Clipper's clients read.
    assert r.json()["cause"] == "Requested version: 3 does not exist for model: summer"
    assert predict({"input": [1.0], "version": [1]}).status_code == 400
    r = httpx.post(f"http://{url}/idle/predict", json={"input": [1], "version": "1"}, timeout=10)
    assert r.status_code == 400 and "no model linked" in r.json()["message"]
    # Feedback takes no pin: it teaches the policy about the arms it chooses.
    r = httpx.post(
        f"http://{url}/sums/update",
        json={"input": [1.0], "label": 10.0, "version": "1"},
        timeout=10,
    )
    assert r.status_code == 200, r.text


def test_a_pin_needs_an_app_of_one_model(conn: Connection, url: str) -> None:
    conn.register_application("duo", "doubles", -1, 2_000_000, policy="split")
    conn.link_model_to_app("duo", "summer")
    deploy_python_closure(conn, "twice", "1", "doubles", lambda xs: [2.0 * sum(x) for x in xs])
    conn.link_model_to_app("duo", "twice")

    def refused() -> bool:
        r = httpx.post(f"http://{url}/duo/predict", json={"input": [1.0], "version": "1"})
        return r.status_code == 400 and "several models (summer, twice)" in r.json()["message"]

    eventually(refused, "a pin refused on an app of two models")

    # A split over two versions of one model: the pin wins over the policy.
    conn.register_application("halves", "doubles", -1, 5_000_000, policy="split")
    conn.link_model_to_app("halves", "summer", version="1")
    conn.link_model_to_app("halves", "summer", version="2")

    def pinned(version: str) -> bool:
        body = {"input_batch": [[1.0]] * 8, "version": version}
        r = httpx.post(f"http://{url}/halves/predict", json=body, timeout=10)
        answers = r.json().get("batch_predictions", [])
        return [(a["output"], a["models"]) for a in answers] == [
            (1.0 if version == "1" else 10.0, [f"summer:{version}"])
        ] * 8

    eventually(lambda: pinned("1") and pinned("2"), "each pinned version answering alone")


def errors_of(r: httpx.Response) -> str:
    body = r.json()
    assert list(body) == ["error"], body  # the protocol's shape, and nothing else
    assert isinstance(body["error"], str)
    return str(body["error"])


def test_errors_take_the_protocols_shape(client: triton.InferenceServerClient, url: str) -> None:
    infer = f"http://{url}/v2/models/sums/infer"

    def post(body: Any, **kw: Any) -> httpx.Response:
        if isinstance(body, bytes):
            return httpx.post(infer, content=body, timeout=10, **kw)
        return httpx.post(infer, json=body, timeout=10, **kw)

    def tensor(**over: Any) -> dict[str, Any]:
        t = {"name": "input", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}
        return {"inputs": [{**t, **over}]}

    assert post(tensor()).status_code == 200
    # With a query string the protocol hands the request to the ASGI app, not straight
    # to the handler: the same answer either way.
    via_asgi = httpx.post(f"{infer}?from=asgi", json=tensor(), timeout=10)
    assert via_asgi.status_code == 200 and via_asgi.json()["outputs"][0]["data"] == [30.0]

    r = post(b'{"inputs": [')
    assert r.status_code == 400 and "not valid JSON" in errors_of(r)
    r = post(tensor(datatype="INT32", data=[1, 2]))
    assert r.status_code == 400
    assert "'doubles' takes FP64, FP32, FP16, BF16" in errors_of(r)
    r = post(tensor(shape=[1, 3]))
    assert r.status_code == 400 and "has 3 elements" in errors_of(r)
    r = post(tensor(shape=[]))
    assert r.status_code == 400 and "shape" in errors_of(r)
    r = httpx.post(f"http://{url}/v2/models/nope/infer", json=tensor(), timeout=10)
    assert r.status_code == 404 and "'nope'" in errors_of(r)
    r = httpx.post(f"http://{url}/v2/models/sums/versions/7/infer", json=tensor(), timeout=10)
    assert r.status_code == 400 and "no version '7'" in errors_of(r)
    r = post(tensor(shape=[10_001], data=[1.0] * 10_001))  # the inputs-per-request limit
    assert r.status_code == 413 and "over the limit of 10000" in errors_of(r)
    r = post(b"{" + b" " * (11 << 20) + b"}")  # the body limit, 10 MiB
    assert r.status_code == 413 and "over the limit" in errors_of(r)
    r = post(tensor(), headers={"Content-Encoding": "gzip"})
    assert r.status_code == 415 and "gzip" in errors_of(r)
    r = httpx.get(infer, timeout=10)
    assert r.status_code == 405 and errors_of(r)
    r = httpx.get(f"http://{url}/v2/elsewhere", timeout=10)
    assert r.status_code == 404 and errors_of(r)

    with pytest.raises(InferenceServerException) as err:  # through tritonclient too
        bad = triton.InferInput("input", [1, 2], "INT32")
        bad.set_data_from_numpy(np.array([[1, 2]], dtype=np.int32))
        client.infer("sums", [bad])
    assert err.value.status() == "400" and "'doubles'" in err.value.message()

    with pytest.raises(InferenceServerException) as err:  # BYTES: one element per query
        words = triton.InferInput("input", [1, 2], "BYTES")
        words.set_data_from_numpy(np.array([[b"a", b"b"]], dtype=np.object_))
        client.infer("shout", [words])
    assert err.value.status() == "400" and "[N] or [N, 1]" in err.value.message()


def test_a_keyed_app_needs_its_key(conn: Connection, url: str) -> None:
    conn.register_application("locked", "doubles", -1, 5_000_000)
    conn.link_model_to_app("locked", "summer", version="1")
    key = conn.create_api_key("locked")
    c = triton.InferenceServerClient(url, network_timeout=30.0)
    try:
        x = np.array([[1.0, 2.0]])

        def refused() -> bool:
            try:
                c.infer("locked", doubles(x))
            except InferenceServerException as exc:
                return exc.status() == "401" and "needs an API key" in exc.message()
            return False

        eventually(refused, "the key required")
        r = httpx.get(f"http://{url}/v2/models/locked", timeout=10)
        assert r.status_code == 401 and "needs an API key" in errors_of(r)
        assert c.is_server_ready()  # health stays open
        auth = {"Authorization": f"Bearer {key}"}
        result = c.infer("locked", doubles(x), headers=auth)
        assert result.as_numpy("output").tolist() == [3.0]
        assert c.get_model_metadata("locked", headers=auth)["name"] == "locked"
    finally:
        c.close()


KSERVE_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    import numpy as np
    from kserve.inference_client import InferenceRESTClient, RESTConfig
    from kserve.protocol.infer_type import InferInput, InferRequest

    async def main(base):
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        try:
            live = await client.is_server_live(base)
            ready = await client.is_server_ready(base)
            model_ready = await client.is_model_ready(base, "sums")
            x = np.array([[1.0, 2.0], [3.0, 4.0]])
            tensor = InferInput(name="input", shape=list(x.shape), datatype="FP64")
            tensor.set_data_from_numpy(x, binary_data=False)
            request = InferRequest(model_name="sums", infer_inputs=[tensor], request_id="k-1")
            response = await client.infer(base, request, model_name="sums")
            binary = InferInput(name="input", shape=list(x.shape), datatype="FP64")
            binary.set_data_from_numpy(x, binary_data=True)
            request = InferRequest(
                model_name="sums", infer_inputs=[binary], parameters={"binary_data_output": True}
            )
            second = await client.infer(base, request, model_name="sums")
            try:
                await client.infer(base, request, model_name="nope")
                error = None
            except Exception as exc:  # httpx.HTTPStatusError
                error = str(exc)
        finally:
            await client.close()
        print(json.dumps({
            "live": live, "ready": ready, "model_ready": model_ready,
            "id": response.id,
            "json": response.outputs[0].as_numpy().tolist(),
            "binary": second.outputs[0].as_numpy().tolist(),
            "defaults": response.parameters["default"],
            "error": error,
        }))

    asyncio.run(main(sys.argv[1]))
    """
)


def test_kserves_rest_client(client: triton.InferenceServerClient, url: str) -> None:
    if not KSERVE_PYTHON.exists():
        pytest.fail(
            f"{KSERVE_PYTHON} is missing: run `make test`, which creates .venv-kserve "
            "(KServe's client pins older psutil and kubernetes than Schooner, so it has a "
            "venv of its own)"
        )
    done = subprocess.run(
        [str(KSERVE_PYTHON), "-c", KSERVE_SCRIPT, f"http://{url}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["live"] is True and got["ready"] is True and got["model_ready"] is True
    assert got["id"] == "k-1"
    assert got["json"] == [30.0, 70.0]
    assert got["binary"] == [30.0, 70.0]
    assert got["defaults"] == [False, False]
    assert "404" in got["error"] and "'nope'" in got["error"]
