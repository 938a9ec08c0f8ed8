"""The Open Inference Protocol response to an inference request: one output tensor.

The N queries' outputs make one tensor, named ``"output"`` (or as the request's one
requested output is named), its datatype chosen from all N outputs, defaults included:

- every output an integer: ``INT64``, shape ``[N]``; numbers: ``FP64``, ``[N]``;
- every output a flat list of k numbers (the same k): ``INT64`` or ``FP64``, ``[N, k]``;
- every output a string: ``BYTES``, ``[N]``, each string's UTF-8;
- anything else (objects, nested lists, booleans, a mix): ``BYTES``, ``[N]``, each
  output's JSON text.

As JSON (``"data"``) or, when the request asked for binary data, after the JSON header
(``binary_data_size``, ``Inference-Header-Content-Length``): numbers little-endian,
BYTES elements each after its 4-byte little-endian length.

The response's ``parameters`` say, per query in order, what Schooner's own responses
say: ``query_ids``, ``default`` (true: the app's default output, not a model's answer),
``models`` (the ``model:version`` whose answer each is), and, when some query got the
default, ``default_explanation`` (``""`` for the others); an ensemble that lacked an
arm adds ``partial`` and ``partial_explanation``. ``model_version`` is the version that
answered: the app's one model version (or the pinned one), else the one version every
answered query came from, else left out.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson

from management_frontend.state.keys import parse_arm
from query_frontend.http.asgi import Reply, model_failed
from query_frontend.http.v2.tensors import InferShape
from query_frontend.queries import Expired, Failure, Outcome
from query_frontend.routing.table import Route
from query_frontend.selection.ask import Answer

__all__ = ["BINARY_TYPE", "answers_reply", "one_model_reply", "output_tensor"]

BINARY_TYPE = b"application/octet-stream"
_LENGTH = struct.Struct("<I")
_NUMBER = (int, float)


class _Queries:
    """The per-query columns of a response, filled in order."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.default: list[bool] = []
        self.explanations: list[str] = []
        self.models: list[list[str]] = []
        self.partial: list[bool] = []
        self.partial_why: list[str] = []

    def add(self, value: Any, models: list[str], why: str = "", partial: str = "") -> None:
        self.values.append(value)
        self.default.append(bool(why))
        self.explanations.append(why)
        self.models.append(models)
        self.partial.append(bool(partial))
        self.partial_why.append(partial)

    def parameters(self, ids: list[int]) -> dict[str, Any]:
        params: dict[str, Any] = {"query_ids": ids, "default": self.default, "models": self.models}
        if any(self.default):
            params["default_explanation"] = self.explanations
        if any(self.partial):
            params["partial"] = self.partial
            params["partial_explanation"] = self.partial_why
        return params


def one_model_reply(
    ids: list[int], outcomes: list[Outcome], route: Route, shape: InferShape
) -> Reply:
    """The response to the queries of a one-model route (or a pinned one)."""
    app = route.app
    models: list[str] = orjson.loads(route.models_json)
    queries = _Queries()
    for qid, outcome in zip(ids, outcomes, strict=True):
        if isinstance(outcome, bytes):
            queries.add(orjson.loads(outcome), models)
        elif isinstance(outcome, Failure):
            return model_failed(qid, outcome, app)
        else:
            queries.add(app.default_output, [], outcome.reason or "no answer in time")
    version = route.model_key[1] if route.model_key is not None else None
    return _reply(ids, queries, route, shape, version)


def answers_reply(ids: list[int], answers: list[Answer], route: Route, shape: InferShape) -> Reply:
    """The response to the queries of a route with several arms."""
    app = route.app
    queries = _Queries()
    labels: set[str] = set()
    for qid, ans in zip(ids, answers, strict=True):
        outcome = ans.outcome
        if isinstance(outcome, Failure):
            return model_failed(qid, outcome, app)
        if isinstance(outcome, Expired):
            queries.add(app.default_output, [], outcome.reason or "no answer in time")
            continue
        partial = "; ".join(f"{m}: {why}" for m, why in ans.missing)
        queries.add(orjson.loads(outcome), ans.models, partial=partial)
        labels.update(ans.models)
    version = parse_arm(labels.pop())[1] if len(labels) == 1 else None
    return _reply(ids, queries, route, shape, version)


def _reply(
    ids: list[int], queries: _Queries, route: Route, shape: InferShape, version: str | None
) -> Reply:
    datatype, dims, data = output_tensor(queries.values)
    output: dict[str, Any] = {"name": shape.output_name, "datatype": datatype, "shape": dims}
    payload = b""
    if shape.binary:
        payload = _binary(data)
        output["parameters"] = {"binary_data_size": len(payload)}
    else:
        output["data"] = _json_data(data)
    doc: dict[str, Any] = {"model_name": route.app.name}
    if version is not None:
        doc["model_version"] = version
    if shape.request_id is not None:
        doc["id"] = shape.request_id
    doc["parameters"] = queries.parameters(ids)
    doc["outputs"] = [output]
    head = orjson.dumps(doc)
    if not shape.binary:
        return Reply(200, head)
    headers = (
        (b"content-type", BINARY_TYPE),
        (b"inference-header-content-length", b"%d" % len(head)),
    )
    return Reply(200, head + payload, headers)


def output_tensor(values: list[Any]) -> tuple[str, list[int], np.ndarray[Any, Any] | list[bytes]]:
    """The datatype, shape and data (an array, or BYTES elements) of N outputs."""
    n = len(values)
    if all(type(v) is int for v in values):
        try:
            return "INT64", [n], np.array(values, dtype=np.int64)
        except OverflowError:
            pass  # past 64 bits: as JSON text below
    elif all(type(v) in _NUMBER for v in values):
        return "FP64", [n], np.array(values, dtype=np.float64)
    elif all(type(v) is list for v in values):
        k = len(values[0])
        rows_fit = k > 0 and all(len(v) == k for v in values)
        if rows_fit and all(type(x) is int for v in values for x in v):
            try:
                return "INT64", [n, k], np.array(values, dtype=np.int64).reshape(-1)
            except OverflowError:
                pass
        elif rows_fit and all(type(x) in _NUMBER for v in values for x in v):
            return "FP64", [n, k], np.array(values, dtype=np.float64).reshape(-1)
    if all(type(v) is str for v in values):
        return "BYTES", [n], [v.encode("utf-8") for v in values]
    return "BYTES", [n], [orjson.dumps(v) for v in values]


def _binary(data: np.ndarray[Any, Any] | list[bytes]) -> bytes:
    if isinstance(data, np.ndarray):
        return data.astype(data.dtype.newbyteorder("<"), copy=False).tobytes()
    return b"".join(_LENGTH.pack(len(e)) + e for e in data)


def _json_data(data: np.ndarray[Any, Any] | list[bytes]) -> list[Any]:
    if isinstance(data, np.ndarray):
        return data.tolist()  # type: ignore[no-any-return]
    return [e.decode("utf-8") for e in data]
