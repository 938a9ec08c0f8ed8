"""The admin API's OpenAPI document (``/openapi.json``), made to say what the routes
really answer.

FastAPI's generated document promises a 422 that never comes (validation errors are
400s here, ``errors.py``) and knows nothing of the body limits, of Redis being down, or
of credentials. ``install_openapi`` replaces it with one where every operation lists
the errors it can answer, each as ``{"error": code, "message": sentence}``:

    400  a bad path or query parameter, or a bad body    operations that take them
    401  no or a wrong admin token                       every operation but /healthz
    404  an unknown app, model, version or link          paths naming one
    409  a conflict with the stored state, or too many   every write (``Store.transact``)
         concurrent changes
    413  a body over the size limit                      operations that take a body
    503  Redis cannot be reached; see ``Retry-After``    every operation

and declares the ``bearerAuth`` scheme that every operation but ``/healthz`` requires.
Schemathesis checks the document against a running frontend (tests/integration).
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field, TypeAdapter

from management_frontend.state import rules
from management_frontend.state.records import App, Model, ModelVersion, Stage

# Answered without credentials: what a load balancer or an orchestrator probes.
PUBLIC_PATHS: Final = frozenset({"/healthz"})

_DESCRIPTIONS: Final = {
    400: "A parameter or the body breaks a rule: the message says which, and what to send",
    401: "The admin token is missing or wrong: send Authorization: Bearer <admin token>",
    404: "No such app, model, version or link",
    409: "The request conflicts with the stored state (the message says how), or too many "
    "concurrent changes: retry",
    413: "The request body is over the size limit",
    503: "Redis cannot be reached: retry after Retry-After seconds",
}
_REF: Final = "#/components/schemas/{model}"
_ERROR_REF: Final = {"$ref": _REF.format(model="Error")}


class Error(BaseModel):
    """Every error answer."""

    error: str = Field(description="a stable code: invalid, not_found, conflict, ...")
    message: str = Field(description="what is wrong and what to do about it")


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _DESCRIPTIONS[status],
        "content": {"application/json": {"schema": _ERROR_REF}},
    }
    if status == 503:
        response["headers"] = {
            "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
        }
    return response


def _complete(doc: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's document, with the errors every operation really answers."""
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas["Error"] = Error.model_json_schema()
    components["securitySchemes"] = {
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "description": "the cluster's admin token (docs/admin-api.md)",
        }
    }
    answers = _answers(schemas)
    for path, operations in doc.get("paths", {}).items():
        for method, operation in operations.items():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            responses.pop("422", None)
            for success in ("200", "201"):
                if success in responses and (method, path) in answers:
                    content = {"application/json": {"schema": answers[method, path]}}
                    responses[success]["content"] = content
            wanted = {503}
            if operation.get("parameters") or "requestBody" in operation:
                wanted.add(400)
            if "requestBody" in operation:
                wanted.add(413)
            if "{" in path:
                wanted.add(404)
            if method != "get":
                wanted.add(409)
            if path not in PUBLIC_PATHS:
                operation["security"] = [{"bearerAuth": []}]
                wanted.add(401)
            for status in sorted(wanted):
                responses.setdefault(str(status), _error_response(status))
    return doc


# Record fields ``to_json`` leaves out (an app's later stages: answers show "pipeline").
_NOT_SHOWN: Final = {"App": ("stages",)}


def _record(
    cls: type, schemas: dict[str, Any], name: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The JSON a record's ``to_json`` makes, as a component named ``name`` (its class
    name by default), plus ``extra`` properties: every field is always there; fields a
    newer Schooner adds show up by themselves."""
    doc = TypeAdapter(cls).json_schema(mode="serialization", ref_template=_REF)
    schemas.update(doc.pop("$defs", {}))
    doc.pop("description", None)
    for hidden in _NOT_SHOWN.get(cls.__name__, ()):
        doc["properties"].pop(hidden, None)
    doc["properties"].update(extra)
    doc["required"] = list(doc["properties"])
    name = doc["title"] = name or cls.__name__
    schemas[name] = doc
    return {"$ref": _REF.format(model=name)}


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _answers(schemas: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """The body of each operation's success answer, by (method, path)."""
    arms = _array({"type": "string", "description": "'model' or 'model:version'"})
    stage = _record(Stage, schemas)
    pipeline = {**_array(stage), "description": "every stage, the first (the links) first"}
    app = _record(App, schemas, pipeline=pipeline)
    app_details = _record(
        App,
        schemas,
        "AppDetails",
        pipeline=pipeline,
        linked_models={**arms, "description": "stage 1's arms"},
        api_keys={"type": "integer", "description": "how many API keys the app has"},
    )
    model = _record(Model, schemas)
    version = _record(ModelVersion, schemas)
    model_details = _record(Model, schemas, "ModelDetails", version_details=_array(version))
    return {
        ("get", "/healthz"): {
            "type": "object",
            "properties": {"status": {"const": "ok"}},
            "required": ["status"],
        },
        ("get", "/admin/apps"): _array(app_details),
        ("post", "/admin/apps"): app,
        ("get", "/admin/apps/{app}"): app_details,
        ("put", "/admin/apps/{app}/cache"): app,
        ("put", "/admin/apps/{app}/policy"): app,
        ("get", "/admin/apps/{app}/pipeline"): {
            "type": "object",
            "properties": {"app": {"type": "string"}, "stages": pipeline},
            "required": ["app", "stages"],
        },
        ("put", "/admin/apps/{app}/pipeline"): app_details,
        ("get", "/admin/apps/{app}/policy/state"): {
            "type": "object",
            "properties": {
                "app": {"type": "string"},
                "stage": {"type": "integer", "minimum": 1},
                "policy": {"type": "string"},
                "params": {"type": "object"},
                "uid": {"type": ["string", "null"]},
            },
            "required": ["app", "stage", "policy", "params", "uid"],
        },
        ("get", "/admin/apps/{app}/links"): arms,
        ("post", "/admin/apps/{app}/links"): arms,
        ("get", "/admin/models"): _array(model),
        ("post", "/admin/models"): version,
        ("get", "/admin/models/{model}"): model_details,
        ("get", "/admin/models/{model}/versions/{version}"): version,
        ("put", "/admin/models/{model}/current_version"): model,
        ("put", "/admin/models/{model}/versions/{version}/replicas"): version,
        ("get", "/admin/replicas"): _array(
            {"type": "object", "description": "a replica as a query frontend records it"}
        ),
    }


def install_openapi(app: FastAPI) -> None:
    """Serve the completed document at ``/openapi.json`` (built once, on first use)."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _complete(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    summary=app.summary,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]


# The rules as JSON Schema, for the document (the validators are still ``rules``'s).
DNS_LABEL_SCHEMA: Final = {
    "type": "string",
    "pattern": rules.DNS1123_LABEL_RE.pattern,
    "minLength": 1,
    "maxLength": rules.MAX_NAME_LENGTH,
}
VERSION_SCHEMA: Final = {
    "type": "string",
    "pattern": rules.VERSION_RE.pattern,
    "minLength": 1,
    "maxLength": rules.MAX_NAME_LENGTH,
}
USER_ID_SCHEMA: Final = {
    "type": "string",
    "minLength": 1,
    "maxLength": rules.MAX_USER_ID_LENGTH,
}
