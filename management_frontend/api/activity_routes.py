"""``GET /admin/overview`` and ``GET /admin/apps/{app}/activity``: the live numbers.

What the dashboard and ``schooner top`` draw (``docs/admin-api.md``): every app and
model from the store, with throughput, latency, defaults, batch sizes, queue depths,
replicas and the cache over a window of ``window`` seconds (10 to 3600, default 300),
merged from the query frontends' ticks (``management_frontend.telemetry``); and for one
app its policy, its arms' weights over time and its recent default answers with their
reasons, and for a pipeline app each stage's time, defaults and errors. Behind the admin
token like every ``/admin`` route.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import orjson
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BeforeValidator, WithJsonSchema

from management_frontend.api.routes import AppPath, StoreDep
from management_frontend.state.errors import InvalidValue
from management_frontend.state.rules import show
from management_frontend.telemetry import (
    DEFAULT_WINDOW_S,
    MAX_WINDOW_S,
    MIN_WINDOW_S,
    Telemetry,
)


def window_seconds(value: object) -> int:
    """A window as a query parameter gives it: a whole number of seconds in range."""
    text = value.strip() if isinstance(value, str) else value
    number: int | None = None
    if isinstance(text, str) and text.isascii() and text.isdigit() and len(text) <= 6:
        number = int(text)
    elif isinstance(text, int) and not isinstance(text, bool):
        number = text
    if number is None or not MIN_WINDOW_S <= number <= MAX_WINDOW_S:
        raise InvalidValue(
            f"window must be a whole number of seconds from {MIN_WINDOW_S} to "
            f"{MAX_WINDOW_S}, got {show(value)}"
        )
    return number


WindowQuery = Annotated[
    int,
    Query(description="seconds of history to show"),
    BeforeValidator(window_seconds),
    WithJsonSchema(
        {
            "type": "integer",
            "minimum": MIN_WINDOW_S,
            "maximum": MAX_WINDOW_S,
            "default": DEFAULT_WINDOW_S,
        }
    ),
]


def get_telemetry(store: StoreDep) -> Telemetry:
    return Telemetry(store)


TelemetryDep = Annotated[Telemetry, Depends(get_telemetry)]

router = APIRouter()

# ---------------------------------------------------------------------- the documents

_NUMBER: Final = {"type": "number"}
_MAYBE: Final = {"type": ["number", "null"]}
_STRING: Final = {"type": "string"}
# An app's whole pipeline (``records.pipeline_json``): stage 1 (its links) first.
_PIPELINE: Final = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "arms": {"type": "array", "items": {"type": "string"}},
            "policy": {"type": "string"},
            "policy_params": {"type": "object"},
            "policy_epoch": {"type": "string"},
        },
        "required": ["arms", "policy", "policy_params", "policy_epoch"],
    },
}


def _obj(properties: dict[str, Any], extra: bool = True) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": extra,
    }


def _series(*names: str) -> dict[str, Any]:
    return _obj(
        {
            "t": {"type": "array", "items": _NUMBER},
            **{n: {"type": "array", "items": _MAYBE} for n in names},
        }
    )


_REPLICA: Final = _obj(
    {
        "id": _STRING,
        "version": _STRING,
        "connected": {"type": "boolean"},
        "in_rotation": {"type": "boolean"},
        "state": {"type": "string", "description": "ok, silent, stuck, restarting, ..."},
        "restarts": {"type": "integer"},
    }
)
OVERVIEW_SCHEMA: Final = _obj(
    {
        "now": _NUMBER,
        "interval_s": _NUMBER,
        "window_s": {"type": "integer"},
        "frontends": {
            "type": "array",
            "items": _obj({"id": _STRING, "last_seen_s": _NUMBER, "uptime_s": _NUMBER}),
        },
        "apps": {
            "type": "array",
            "items": _obj(
                {
                    "name": _STRING,
                    "input_type": _STRING,
                    "slo_micros": {"type": "integer"},
                    "policy": _STRING,
                    "linked_models": {"type": "array", "items": _STRING},
                    "pipeline": _PIPELINE,
                    "now": _obj(
                        {
                            "rps": _NUMBER,
                            "p50_ms": _MAYBE,
                            "p99_ms": _MAYBE,
                            "default_rate": _MAYBE,
                            "error_rate": _MAYBE,
                        }
                    ),
                    "series": _series("rps", "p50_ms", "p99_ms", "default_rate"),
                }
            ),
        },
        "models": {
            "type": "array",
            "items": _obj(
                {
                    "name": _STRING,
                    "current_version": {"type": ["string", "null"]},
                    "versions": {"type": "array", "items": _STRING},
                    "replicas_desired": {
                        "type": "object",
                        "additionalProperties": {"type": "integer"},
                    },
                    "replicas": {"type": "array", "items": _REPLICA},
                    "now": _obj(
                        {"batch_size": _MAYBE, "queue_depth": {"type": "integer"}, "qps": _NUMBER}
                    ),
                    "series": _series("batch_size", "queue_depth", "qps"),
                }
            ),
        },
        "cache": _obj(
            {
                "now": _obj({"hit_rate": _MAYBE, "bytes": {"type": "integer"}}),
                "series": _series("hit_rate"),
            }
        ),
    }
)
# A pipeline app's stage, live (``aggregate.stage_figures``): requests that reached it,
# its time per request, the defaults and errors it caused, per second.
_STAGE: Final = _obj(
    {
        "stage": {"type": "integer", "minimum": 1},
        "now": _obj(
            {
                "rps": _NUMBER,
                "p50_ms": _MAYBE,
                "p99_ms": _MAYBE,
                "defaults_per_s": _NUMBER,
                "errors_per_s": _NUMBER,
            }
        ),
        "series": _series("rps", "p50_ms", "p99_ms", "defaults_per_s", "errors_per_s"),
    }
)
ACTIVITY_SCHEMA: Final = _obj(
    {
        "app": _STRING,
        "policy": _STRING,
        "policy_params": {"type": "object"},
        "linked_models": {"type": "array", "items": _STRING},
        "pipeline": _PIPELINE,
        "weights": _obj(
            {
                "t": {"type": "array", "items": _NUMBER},
                "arms": {
                    "type": "object",
                    "additionalProperties": {"type": "array", "items": _MAYBE},
                },
            }
        ),
        "recent_defaults": {
            "type": "array",
            "items": _obj(
                {
                    "t": _NUMBER,
                    "query_id": {"type": ["integer", "null"]},
                    "request_id": {"type": ["string", "null"]},
                    "reason": _STRING,
                    "frontend": _STRING,
                }
            ),
        },
        "stages": {
            "type": "array",
            "items": _STAGE,
            "description": "a pipeline app's stages in order, live; empty for one stage",
        },
    }
)


def _ok(schema: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {"application/json": {"schema": schema}}}}


# ---------------------------------------------------------------------- the routes


def _json(document: dict[str, Any]) -> Response:
    """Encoded by orjson in one call: FastAPI's encoder walks every value in Python, and
    an overview of many apps holds hundreds of thousands (seconds of event loop)."""
    return Response(orjson.dumps(document), media_type="application/json")


@router.get("/admin/overview", responses=_ok(OVERVIEW_SCHEMA))
async def overview(telemetry: TelemetryDep, window: WindowQuery = DEFAULT_WINDOW_S) -> Response:
    """Every app and model with their live numbers over the last ``window`` seconds."""
    return _json(await telemetry.overview(window))


@router.get("/admin/apps/{app}/activity", responses=_ok(ACTIVITY_SCHEMA))
async def activity(
    app: AppPath, telemetry: TelemetryDep, window: WindowQuery = DEFAULT_WINDOW_S
) -> Response:
    """One app's policy, its arms' weights over time, its recent default answers, and a
    pipeline's live numbers per stage."""
    return _json(await telemetry.activity(app, window))
