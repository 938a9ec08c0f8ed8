"""``GET /openapi.json``: an OpenAPI 3.1 document of the query API.

It describes ``POST /{app}/predict`` and ``POST /{app}/update`` (bodies, the single,
batch, default and partial answers), ``/healthz``, the Open Inference Protocol's
``/v2`` routes, every error each answers with its status, and the bearer API key a
keyed app needs. It is built once, when the module is imported (``OPENAPI_JSON``), from
the data below: the same bytes for every request, naming no app.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import orjson

from management_frontend.state import rules

__all__ = ["OPENAPI_JSON", "document"]

Schema = dict[str, Any]

_JSON = "application/json"
_BINARY = "application/octet-stream"
_KEY = "apiKey"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def _object(required: list[str], **properties: Schema) -> Schema:
    return {
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": False,
    }


_STRING: Schema = {"type": "string"}
_INTEGER: Schema = {"type": "integer"}
_BOOLEAN: Schema = {"type": "boolean"}
_ANY: Schema = {}  # any JSON value: a model's output, a label, an input

#: What a native error's "error" code means, by code (``http/asgi.error`` and the handlers).
NATIVE_CODES: dict[str, str] = {
    "invalid_input": "the body does not fit the app's input type or the request's shape",
    "unknown_version": "the version pin names no version of the app's model (with `cause`)",
    "invalid_label": "the update's label does not fit the app's loss",
    "unauthorized": "the app needs an API key: none sent, or one revoked or never created",
    "forbidden": "the API key belongs to another app",
    "not_found": "no application of that name is registered",
    "method_not_allowed": "the path takes POST",
    "too_large": "the body, or its number of inputs, is over the frontend's limit",
    "input_quarantined": "this input made replicas crash; refused until the time named",
    "no_model": "the app has no model linked: nothing can learn",
    "policy_changed": "the policy was changed or reset meanwhile: nothing was learned",
    "model_error": "the model failed on a query",
    "pipeline_output_rejected": "a pipeline's stage answered with an output the next stage "
    "cannot take as input (the message names both stages, the model and the output)",
    "overloaded": "a queue, or the frontend's budget of body bytes, is full: retry shortly",
    "unavailable": "a dependency (the body parser, Redis) did not answer: retry shortly",
    "no_answer": "no model answered the update's input in time: nothing was learned",
    "starting": "the routing table is not loaded from Redis yet",
    "draining": "the frontend is shutting down",
}

_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": _STRING}},
    405: {"Allow": {"description": "the methods the path takes", "schema": _STRING}},
    503: {"Retry-After": {"description": "seconds to wait before retrying", "schema": _STRING}},
}

_STATUS_TEXT = {
    400: "Bad request: the message says what to send instead",
    401: "An API key is needed (or the one sent is not valid)",
    403: "The API key belongs to another app",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Too large",
    415: "Unsupported Content-Encoding",
    422: "Input quarantined",
    500: "The model failed",
    502: "A pipeline's stage answered what the next stage cannot take",
    503: "Unavailable: retry after Retry-After seconds",
}


def _native_error(status: int, codes: list[str]) -> dict[str, Any]:
    """The response of ``status``: a native error whose code is one of ``codes``."""
    said = "; ".join(f"`{c}`: {NATIVE_CODES[c]}" for c in codes)
    schema: Schema = {"allOf": [_ref("Error"), {"properties": {"error": {"enum": codes}}}]}
    response: dict[str, Any] = {
        "description": f"{_STATUS_TEXT.get(status, 'Error')}. {said}",
        "content": {_JSON: {"schema": schema}},
    }
    if status in _HEADERS:
        response["headers"] = _HEADERS[status]
    return response


def _v2_error(status: int, why: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": f"{_STATUS_TEXT.get(status, 'Error')}: {why}",
        "content": {_JSON: {"schema": _ref("V2Error")}},
    }
    if status in _HEADERS:
        response["headers"] = _HEADERS[status]
    return response


def _ok(description: str, schema: Schema) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


#: The errors predict and update share, by status.
_KEYED = {401: ["unauthorized"], 403: ["forbidden"], 404: ["not_found"]}
_COMMON = {
    **_KEYED,
    405: ["method_not_allowed"],
    413: ["too_large"],
    500: ["model_error"],
    502: ["pipeline_output_rejected"],
}
_PREDICT_ERRORS = {
    **_COMMON,
    400: ["invalid_input", "unknown_version"],
    422: ["input_quarantined"],
    503: ["overloaded", "unavailable"],
}
_UPDATE_ERRORS = {
    **_COMMON,
    400: ["invalid_input", "invalid_label"],
    409: ["no_model", "policy_changed"],
    503: ["overloaded", "unavailable", "no_answer"],
}

_APP = {
    "name": "app",
    "in": "path",
    "required": True,
    "description": "the application's name",
    "schema": {
        "type": "string",
        "maxLength": rules.MAX_NAME_LENGTH,
        "pattern": rules.DNS1123_LABEL_RE.pattern,
    },
}
_VERSION = {
    "name": "version",
    "in": "path",
    "required": True,
    "description": "a version of the app's model: it answers, whatever the policy chooses",
    "schema": {
        "type": "string",
        "maxLength": rules.MAX_NAME_LENGTH,
        "pattern": rules.VERSION_RE.pattern,
    },
}
#: Open apps take any request; an app with API keys needs one of its own.
_MAYBE_KEYED: list[dict[str, list[str]]] = [{}, {_KEY: []}]


def _schemas() -> dict[str, Schema]:
    version = {
        "description": "pin: this version of the app's model answers",
        "oneOf": [{"type": "string", "minLength": 1}, _INTEGER],
    }
    uid = {"description": "the user whose learned policy state applies", "type": "string"}
    prediction = _object(
        ["query_id", "output", "default", "models"],
        query_id=_INTEGER,
        output={"description": "the model's answer, or the app's default output"},
        default={"description": "true: the app's default output, not a model's", **_BOOLEAN},
        models=_array(_STRING) | {"description": "the `model:version`s that answered"},
        default_explanation={"description": "why the default (only when default)", **_STRING},
        partial={"description": "an ensemble (exp4) answered without some arm", **_BOOLEAN},
        missing=_array(_STRING) | {"description": "the arms missing from a partial answer"},
        partial_explanation=_STRING | {"description": "each missing arm, with why"},
    )
    tensor_base = {
        "name": _STRING,
        "datatype": _STRING,
        "shape": _array(_INTEGER),
        "parameters": {"type": "object"},
    }
    input_tensor = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {**tensor_base, "data": {"description": "flat or nested in the shape"}},
    }
    output_tensor = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {**tensor_base, "data": _array(_ANY)},
    }
    per_query = {
        "query_ids": _array(_INTEGER),
        "default": _array(_BOOLEAN),
        "models": _array(_array(_STRING)),
        "default_explanation": _array(_STRING),
        "partial": _array(_BOOLEAN),
        "partial_explanation": _array(_STRING),
    }
    tensor_meta = _object(
        ["name", "datatype", "shape"], name=_STRING, datatype=_STRING, shape=_array(_INTEGER)
    )
    return {
        "PredictRequest": {
            "type": "object",
            "description": "one input, or a batch of inputs (one query each)",
            "properties": {
                "input": _ANY | {"description": "one input, of the app's input type"},
                "input_batch": _array(_ANY) | {"description": "several inputs"},
                "uid": uid,
                "version": version,
            },
            "oneOf": [{"required": ["input"]}, {"required": ["input_batch"]}],
        },
        "Prediction": prediction,
        "BatchPredictions": _object(["batch_predictions"], batch_predictions=_array(prediction)),
        "PredictResponse": {"oneOf": [_ref("Prediction"), _ref("BatchPredictions")]},
        "UpdateRequest": {
            "type": "object",
            "required": ["input", "label"],
            "properties": {
                "input": _ANY,
                "label": _ANY | {"description": "what the answer should have been"},
                "uid": uid,
                "feedback_id": {
                    "description": "a retried feedback with the same id counts at most once",
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 128,
                },
            },
        },
        "UpdateResponse": _object(
            ["query_id", "models", "losses"],
            query_id=_INTEGER,
            models=_array(_STRING),
            losses={"type": "object", "additionalProperties": {"type": "number"}},
            missing=_array(_STRING),
            duplicate={"description": "it had been counted already", **_BOOLEAN},
            stages=_array(
                _object(
                    ["stage", "policy", "models", "losses"],
                    stage=_INTEGER | {"description": "a pipeline's stage, from 1"},
                    policy=_STRING,
                    models=_array(_STRING),
                    losses={"type": "object", "additionalProperties": {"type": "number"}},
                )
            )
            | {"description": "a pipeline app: who answered at each stage, and their losses"},
        ),
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "error": {"type": "string", "enum": list(NATIVE_CODES)},
                "message": {"type": "string", "description": "what to fix"},
                "cause": {"type": "string", "description": "Clipper's sentence (a version pin)"},
            },
            "additionalProperties": False,
        },
        "Health": _object(["status"], status={"const": "ok"}),
        "V2Error": _object(["error"], error=_STRING | {"description": "what to fix"}),
        "V2Server": _object(
            ["name", "version", "extensions"],
            name=_STRING,
            version=_STRING,
            extensions=_array(_STRING),
        ),
        "V2Live": _object(["live"], live={"const": True}),
        "V2Ready": _object(["ready"], ready={"const": True}),
        "V2ModelReady": _object(["name", "ready"], name=_STRING, ready={"const": True}),
        "V2ModelMetadata": _object(
            ["name", "versions", "platform", "inputs", "outputs", "parameters"],
            name=_STRING,
            versions=_array(_STRING),
            platform={"const": "schooner"},
            inputs=_array(tensor_meta),
            outputs=_array(tensor_meta),
            parameters={"type": "object"},
        ),
        "V2InferRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": _STRING | {"description": "echoed in the response"},
                "parameters": {
                    "type": "object",
                    "properties": {"version": _STRING, "binary_data_output": _BOOLEAN},
                },
                "inputs": _array(input_tensor) | {"minItems": 1, "maxItems": 1},
                "outputs": _array({"type": "object", "required": ["name"]}) | {"maxItems": 1},
            },
        },
        "V2InferResponse": _object(
            ["model_name", "outputs", "parameters"],
            model_name=_STRING,
            model_version=_STRING,
            id=_STRING,
            outputs=_array(output_tensor) | {"minItems": 1, "maxItems": 1},
            parameters=_object(["query_ids", "default", "models"], **per_query),
        ),
    }


def _native(summary: str, request: str, answer: Schema, errors: dict[int, list[str]]) -> Any:
    responses: dict[str, Any] = {"200": _ok("the answer", answer)}
    for status in sorted(errors):
        responses[str(status)] = _native_error(status, errors[status])
    return {
        "summary": summary,
        "security": _MAYBE_KEYED,
        "parameters": [_APP],
        "requestBody": {"required": True, "content": {_JSON: {"schema": _ref(request)}}},
        "responses": responses,
    }


def _v2_model_paths() -> dict[str, Any]:
    keyed = {
        "401": _v2_error(401, "the app needs an API key"),
        "403": _v2_error(403, "the API key belongs to another app"),
        "404": _v2_error(404, "no such app"),
    }
    infer_errors = {
        400: "malformed JSON, a datatype or shape that does not fit, an unknown version",
        405: "the path takes POST",
        413: "the body, or its number of queries, is too large",
        415: "a compressed body",
        422: "the input is quarantined",
        500: "the model failed",
        502: "a pipeline's stage answered what the next stage cannot take",
        503: "overloaded: retry shortly",
    }
    binary_length = {
        "name": "Inference-Header-Content-Length",
        "in": "header",
        "required": False,
        "description": "binary tensor data: the JSON header's length (0: a raw body)",
        "schema": {"type": "integer", "minimum": 0},
    }
    paths: dict[str, Any] = {}
    for prefix, params in (
        ("/v2/models/{app}", [_APP]),
        ("/v2/models/{app}/versions/{version}", [_APP, _VERSION]),
    ):
        paths[prefix] = {
            "get": {
                "summary": "the model (app) metadata",
                "security": _MAYBE_KEYED,
                "parameters": params,
                "responses": {
                    "200": _ok("metadata", _ref("V2ModelMetadata")),
                    "400": _v2_error(400, "an unknown version"),
                    **keyed,
                },
            }
        }
        paths[f"{prefix}/ready"] = {
            "get": {
                "summary": "whether a replica of the model (version) is connected",
                "security": _MAYBE_KEYED,
                "parameters": params,
                "responses": {
                    "200": _ok("ready", _ref("V2ModelReady")),
                    "400": _v2_error(400, "an unknown version"),
                    **keyed,
                    "503": _v2_error(503, "not ready, with the reason"),
                },
            }
        }
        errors = {str(s): _v2_error(s, why) for s, why in infer_errors.items()}
        paths[f"{prefix}/infer"] = {
            "post": {
                "summary": "inference: a tensor of N rows is N queries of the app",
                "security": _MAYBE_KEYED,
                "parameters": [*params, binary_length],
                "requestBody": {
                    "required": True,
                    "content": {
                        _JSON: {"schema": _ref("V2InferRequest")},
                        _BINARY: {
                            "schema": {"description": "JSON header, then the tensor's bytes"}
                        },
                    },
                },
                "responses": {
                    "200": {
                        "description": "one output tensor; per-query parameters",
                        "content": {
                            _JSON: {"schema": _ref("V2InferResponse")},
                            _BINARY: {
                                "schema": {"description": "JSON header, then the output's bytes"}
                            },
                        },
                    },
                    **keyed,
                    **errors,
                },
            }
        }
    return paths


#: Sent with every predict, update and infer request, and answered on every response
#: (docs/observability.md).
_TRACE_PARAMETERS = [
    {
        "name": "X-Request-Id",
        "in": "header",
        "required": False,
        "description": (
            "the request's id, returned in the answer's X-Request-Id, logged in the access "
            "log and passed to the model's replica: 1 to 128 characters of "
            "[A-Za-z0-9._:/+=-]; anything else is replaced by an id the frontend makes"
        ),
        "schema": _STRING,
    },
    {
        "name": "traceparent",
        "in": "header",
        "required": False,
        "description": "W3C trace context: the request's spans join the caller's trace "
        "(when the frontend traces: docs/observability.md)",
        "schema": _STRING,
    },
]
_TRACE_HEADERS = {
    "X-Request-Id": {
        "description": "the request's id: the client's X-Request-Id if it was sane, else "
        "one the frontend made (also in the access log and the replica's log lines)",
        "schema": _STRING,
    },
    "Server-Timing": {
        "description": (
            "where the request's time went, in ms: `queue;dur=0.120, batch;dur=0.000, "
            'model;dur=0.512, total;dur=1.203`; `cache;desc="hit", total;dur=...` for '
            "an answer from the cache; `total` alone for a request refused before any "
            "query was made"
        ),
        "schema": _STRING,
    },
}


def _traced(operation: dict[str, Any], untraced: tuple[str, ...] = ()) -> dict[str, Any]:
    """``operation`` taking X-Request-Id and traceparent, and every response of it but
    ``untraced`` saying X-Request-Id and Server-Timing."""
    operation["parameters"] = [*operation.get("parameters", []), *_TRACE_PARAMETERS]
    responses = operation["responses"]
    for status, response in responses.items():
        if status not in untraced:  # a copy: other operations may share the response
            responses[status] = {
                **response,
                "headers": {**response.get("headers", {}), **_TRACE_HEADERS},
            }
    return operation


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the query API."""
    health_503 = _native_error(503, ["starting", "draining"])
    v2_ready_503 = _v2_error(503, "not ready: loading the routing table, or draining")
    paths: dict[str, Any] = {
        "/{app}/predict": {
            "post": _native(
                "predict: one input, or a batch",
                "PredictRequest",
                _ref("PredictResponse"),
                _PREDICT_ERRORS,
            )
        },
        "/{app}/update": {
            "post": _native(
                "feedback that teaches the app's selection policy",
                "UpdateRequest",
                _ref("UpdateResponse"),
                _UPDATE_ERRORS,
            )
        },
        "/healthz": {
            "get": {
                "summary": "readiness: the routing table is loaded and not draining",
                "security": [],
                "responses": {"200": _ok("ready", _ref("Health")), "503": health_503},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "this document",
                "security": [],
                "responses": {"200": _ok("the OpenAPI document", {"type": "object"})},
            }
        },
        "/v2": {
            "get": {
                "summary": "server metadata (Open Inference Protocol)",
                "security": [],
                "responses": {"200": _ok("metadata", _ref("V2Server"))},
            }
        },
        "/v2/health/live": {
            "get": {
                "summary": "liveness",
                "security": [],
                "responses": {"200": _ok("live", _ref("V2Live"))},
            }
        },
        "/v2/health/ready": {
            "get": {
                "summary": "readiness, as /healthz",
                "security": [],
                "responses": {"200": _ok("ready", _ref("V2Ready")), "503": v2_ready_503},
            }
        },
        **_v2_model_paths(),
    }
    for path in ("/{app}/predict", "/{app}/update"):
        _traced(paths[path]["post"])
    for path, item in paths.items():
        if path.endswith("/infer"):
            _traced(item["post"], untraced=("405",))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Schooner query API",
            "version": _version(),
            "description": (
                "Predictions and feedback for the applications of a Schooner cluster, "
                "natively and in the Open Inference Protocol (docs/wire-protocol.md, "
                "section 12). `/{app}/predict/` and `/{app}/update/` (trailing slash) "
                'are the same routes. Native errors are `{"error": code, "message": '
                '...}`; the `/v2` routes\' are `{"error": "..."}`.'
            ),
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                _KEY: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "An app with API keys needs `Authorization: Bearer <key>`, a key "
                        "made for it (`schooner create-api-key <app>`); an app without "
                        "keys is open."
                    ),
                }
            },
        },
    }


def _version() -> str:
    try:
        return importlib.metadata.version("schooner")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "0+unknown"


#: The document's bytes, as ``GET /openapi.json`` sends them.
OPENAPI_JSON = orjson.dumps(document())
