"""The routes of the REST admin API (``docs/admin-api.md``).

Handlers are thin: parse (``bodies.py``; path and query parameters by the contract's
rules), call the ``Store`` or the ``PolicyStore``, shape the answer. Errors become
answers in ``errors.py``; the app that serves these routes is ``management_frontend.app``.
"""

from __future__ import annotations

import logging
import secrets
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BeforeValidator, WithJsonSchema

from management_frontend.api.bodies import (
    AddApp,
    AddLink,
    AddModelVersion,
    SetAppCache,
    SetCurrentVersion,
    SetPipeline,
    SetPolicy,
    SetReplicas,
    StageText,
)
from management_frontend.api.openapi import DNS_LABEL_SCHEMA, USER_ID_SCHEMA, VERSION_SCHEMA
from management_frontend.state import rules
from management_frontend.state.errors import InvalidValue
from management_frontend.state.keys import arm_name
from management_frontend.state.records import App, Model, pipeline_json
from management_frontend.storage.pipelines import PipelineStore
from management_frontend.storage.policies import PolicyStore
from management_frontend.storage.store import Store
from model_container.credentials import sha256_hex

logger = logging.getLogger(__name__)

API_VERSION = "1"

# Path parameters are validated like body fields: a name that cannot exist is a 400
# that says why, and a ':' can never reach a Redis key.
# The document shows each rule as a JSON Schema (``openapi.py``).
AppPath = Annotated[str, Path(), BeforeValidator(rules.app_name), WithJsonSchema(DNS_LABEL_SCHEMA)]
ModelPath = Annotated[
    str, Path(), BeforeValidator(rules.model_name), WithJsonSchema(DNS_LABEL_SCHEMA)
]
VersionPath = Annotated[str, Path(), BeforeValidator(rules.version), WithJsonSchema(VERSION_SCHEMA)]
# Optional query parameters, validated the same way when given.
ModelQuery = Annotated[
    str | None,
    Query(),
    BeforeValidator(rules.optional(rules.model_name)),
    WithJsonSchema(DNS_LABEL_SCHEMA),
]
VersionQuery = Annotated[
    str | None,
    Query(),
    BeforeValidator(rules.optional(rules.version)),
    WithJsonSchema(VERSION_SCHEMA),
]
StageQuery = Annotated[StageText, Query()]
UserQuery = Annotated[
    str | None,
    Query(),
    BeforeValidator(rules.optional(rules.check_user_id)),
    WithJsonSchema(USER_ID_SCHEMA),
]


def key_digest(value: object) -> str:
    """An API key named by its hex sha256 (what revoking takes: the key itself never
    travels again, and never sits in a URL or an access log)."""
    digest = str(value).lower()
    if not rules.SHA256_RE.fullmatch(digest):
        raise InvalidValue(
            "an API key is revoked by its hex sha256 (64 characters 0-9a-f), as "
            "POST /admin/apps/{app}/keys answered it in key_sha256; the admin client's "
            "revoke_api_key(app, key) computes it from the key"
        )
    return digest


KeyDigestPath = Annotated[str, Path(), BeforeValidator(key_digest)]


def new_api_key(app: str) -> str:
    """A fresh API key of ``app``: its name (to tell keys apart) and 256 random bits."""
    return f"sk-{app}-{secrets.token_urlsafe(32)}"


def get_store(request: Request) -> Store:
    store = getattr(request.app.state, "store", None)
    if store is None:
        raise RuntimeError("the app's lifespan has not run: serve it with uvicorn or run it")
    return cast(Store, store)


StoreDep = Annotated[Store, Depends(get_store)]


def get_policies(request: Request) -> PolicyStore:
    return PolicyStore(get_store(request))


PoliciesDep = Annotated[PolicyStore, Depends(get_policies)]


def get_pipelines(request: Request) -> PipelineStore:
    return PipelineStore(get_store(request))


PipelinesDep = Annotated[PipelineStore, Depends(get_pipelines)]


def get_max_replicas(request: Request) -> int:
    """The bound on num_replicas this frontend was started with (``--max-replicas``)."""
    return int(request.app.state.config.max_replicas)


MaxReplicasDep = Annotated[int, Depends(get_max_replicas)]

router = APIRouter()


def _app_json(app: App, links: list[str]) -> dict[str, Any]:
    """An app as answers show it, with its whole pipeline (stage 1's arms: ``links``)."""
    return {**app.to_json(), "pipeline": pipeline_json(app, links)}


def _app_details(app: App, links: list[str], api_keys: int) -> dict[str, Any]:
    return {**_app_json(app, links), "linked_models": links, "api_keys": api_keys}


async def _details_of(store: Store, app: App, links: list[str]) -> dict[str, Any]:
    return _app_details(app, links, (await store.api_key_counts([app.name]))[app.name])


def _stages_shown(app: App, links: list[str]) -> str:
    """A pipeline for the log: ``feat -> clf+clf:2``."""
    return " -> ".join("+".join(s["arms"]) or "-" for s in pipeline_json(app, links))


def _no_content() -> Response:
    return Response(status_code=204)


@router.get("/healthz")
async def healthz(store: StoreDep) -> dict[str, str]:
    await store.ping()
    return {"status": "ok"}


# ---------------------------------------------------------------------- apps


@router.get("/admin/apps")
async def list_apps(store: StoreDep) -> list[dict[str, Any]]:
    apps = await store.list_apps()
    counts = await store.api_key_counts([app.name for app, _ in apps])
    return [_app_details(app, links, counts[app.name]) for app, links in apps]


@router.post("/admin/apps", status_code=201)
async def add_app(body: AddApp, store: StoreDep) -> dict[str, Any]:
    app = await store.add_app(body.to_record())
    logger.info(
        "app %s added (input %s, slo %d us, policy %s, cache %s)",
        app.name,
        app.input_type,
        app.slo_micros,
        app.policy,
        "on" if app.cache_enabled else "off",
    )
    return _app_json(app, [])


@router.get("/admin/apps/{app}")
async def get_app(app: AppPath, store: StoreDep) -> dict[str, Any]:
    record, links = await store.get_app(app)
    return await _details_of(store, record, links)


@router.delete("/admin/apps/{app}", status_code=204)
async def delete_app(app: AppPath, store: StoreDep) -> Response:
    await store.delete_app(app)
    logger.info("app %s deleted", app)
    return _no_content()


@router.post("/admin/apps/{app}/keys", status_code=201)
async def create_api_key(app: AppPath, store: StoreDep, response: Response) -> dict[str, Any]:
    key = new_api_key(app)
    digest = sha256_hex(key)
    count = await store.add_api_key(app, digest)
    logger.info("app %s: API key %s... created (%d keys)", app, digest[:8], count)
    response.headers["Cache-Control"] = "no-store"  # shown once, kept by no cache
    return {"app": app, "key": key, "key_sha256": digest, "api_keys": count}


@router.delete("/admin/apps/{app}/keys/{key_sha256}")
async def revoke_api_key(
    app: AppPath, key_sha256: KeyDigestPath, store: StoreDep
) -> dict[str, Any]:
    count = await store.revoke_api_key(app, key_sha256)
    logger.info("app %s: API key %s... revoked (%d keys left)", app, key_sha256[:8], count)
    return {"app": app, "api_keys": count}


@router.put("/admin/apps/{app}/cache")
async def set_app_cache(app: AppPath, body: SetAppCache, store: StoreDep) -> dict[str, Any]:
    await store.set_app_cache(app, body.cache_enabled)
    record, links = await store.get_app(app)
    logger.info("app %s prediction cache %s", app, "on" if record.cache_enabled else "off")
    return _app_json(record, links)


@router.put("/admin/apps/{app}/policy")
async def set_policy(app: AppPath, body: SetPolicy, policies: PoliciesDep) -> dict[str, Any]:
    record, links = await policies.set_policy(
        app, body.policy, body.params, stage=body.stage, reset_state=body.reset_state
    )
    logger.info(
        "app %s stage %d selection policy %s %s%s",
        app,
        body.stage,
        body.policy,
        pipeline_json(record, links)[body.stage - 1]["policy_params"],
        " (learned state reset)" if body.reset_state else "",
    )
    return _app_json(record, links)


@router.get("/admin/apps/{app}/policy/state")
async def get_policy_state(
    app: AppPath, policies: PoliciesDep, uid: UserQuery = None, stage: StageQuery = 1
) -> dict[str, Any]:
    return await policies.get_policy_state(app, uid, stage=stage)


@router.delete("/admin/apps/{app}/policy/state", status_code=204)
async def reset_policy_state(
    app: AppPath, policies: PoliciesDep, uid: UserQuery = None, stage: StageQuery = 1
) -> Response:
    await policies.reset_policy_state(app, uid, stage=stage)
    if uid is None:
        logger.info("app %s stage %d learned policy state reset", app, stage)
    else:
        logger.info("app %s stage %d learned policy state of user %r reset", app, stage, uid)
    return _no_content()


@router.get("/admin/apps/{app}/pipeline")
async def get_pipeline(app: AppPath, store: StoreDep) -> dict[str, Any]:
    record, links = await store.get_app(app)
    return {"app": app, "stages": pipeline_json(record, links)}


@router.put("/admin/apps/{app}/pipeline")
async def set_pipeline(
    app: AppPath, body: SetPipeline, pipelines: PipelinesDep, store: StoreDep
) -> dict[str, Any]:
    record, links = await pipelines.set_pipeline(app, body.stages, reset_state=body.reset_state)
    logger.info(
        "app %s pipeline %s%s",
        app,
        _stages_shown(record, links),
        " (learned state reset)" if body.reset_state else "",
    )
    return await _details_of(store, record, links)


@router.get("/admin/apps/{app}/links")
async def get_links(app: AppPath, store: StoreDep) -> list[str]:
    return (await store.get_app(app))[1]


@router.post("/admin/apps/{app}/links")
async def add_link(app: AppPath, body: AddLink, store: StoreDep) -> list[str]:
    links = await store.add_link(app, body.model_name, body.version)
    logger.info("%s linked to app %s", arm_name(body.model_name, body.version), app)
    return links


@router.delete("/admin/apps/{app}/links/{model}", status_code=204)
async def delete_link(
    app: AppPath, model: ModelPath, store: StoreDep, version: VersionQuery = None
) -> Response:
    await store.delete_link(app, model, version)
    logger.info("%s unlinked from app %s", arm_name(model, version), app)
    return _no_content()


# ---------------------------------------------------------------------- models


@router.get("/admin/models")
async def list_models(store: StoreDep) -> list[dict[str, Any]]:
    return [m.to_json() for m in await store.list_models()]


@router.post("/admin/models", status_code=201)
async def add_model_version(
    body: AddModelVersion, store: StoreDep, max_replicas: MaxReplicasDep
) -> dict[str, Any]:
    rules.num_replicas(body.num_replicas, max_replicas)
    mv = await store.add_model_version(body.to_record(), set_current=body.set_current)
    logger.info(
        "model %s version %s added (input %s, output %s, current: %s)",
        mv.name,
        mv.version,
        mv.input_type,
        mv.output_type or "undeclared",
        body.set_current,
    )
    return mv.to_json()


@router.get("/admin/models/{model}")
async def get_model(model: ModelPath, store: StoreDep) -> dict[str, Any]:
    record: Model = await store.get_model(model)
    details = [mv.to_json() for mv in await store.list_versions(record)]
    return {**record.to_json(), "version_details": details}


@router.delete("/admin/models/{model}", status_code=204)
async def delete_model(model: ModelPath, store: StoreDep) -> Response:
    await store.delete_model(model)
    logger.info("model %s deleted", model)
    return _no_content()


@router.get("/admin/models/{model}/versions/{version}")
async def get_version(model: ModelPath, version: VersionPath, store: StoreDep) -> dict[str, Any]:
    return (await store.get_version(model, version)).to_json()


@router.delete("/admin/models/{model}/versions/{version}", status_code=204)
async def delete_version(model: ModelPath, version: VersionPath, store: StoreDep) -> Response:
    await store.delete_model_version(model, version)
    logger.info("model %s version %s deleted", model, version)
    return _no_content()


@router.put("/admin/models/{model}/current_version")
async def set_current_version(
    model: ModelPath, body: SetCurrentVersion, store: StoreDep
) -> dict[str, Any]:
    record = await store.set_current_version(model, body.version)
    logger.info("model %s current version is %s", model, body.version)
    return record.to_json()


@router.put("/admin/models/{model}/versions/{version}/replicas")
async def set_num_replicas(
    model: ModelPath,
    version: VersionPath,
    body: SetReplicas,
    store: StoreDep,
    max_replicas: MaxReplicasDep,
) -> dict[str, Any]:
    rules.num_replicas(body.num_replicas, max_replicas)
    mv = await store.set_num_replicas(model, version, body.num_replicas)
    logger.info("model %s version %s wants %d replicas", model, version, body.num_replicas)
    return mv.to_json()


# ---------------------------------------------------------------------- replicas


@router.get("/admin/replicas")
async def list_replicas(
    store: StoreDep, model_name: ModelQuery = None, model_version: VersionQuery = None
) -> list[dict[str, Any]]:
    return await store.list_replicas(model_name, model_version)
