"""Routing table of the query frontend, kept current from the management change feed.

The follower reads the newest feed id, then a snapshot of Redis, then blocks on the
feed from that id: no change is missed between snapshot and feed, and each change
takes effect as soon as Redis delivers it. A lost Redis connection is retried with
backoff; routing keeps the last known table meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from management_frontend.state.errors import InvalidValue
from management_frontend.state.feed import Change
from management_frontend.state.keys import Keys, arm_name, parse_arm
from management_frontend.state.pipelines import stage_name
from management_frontend.state.policy import SINGLE, PolicyParams
from management_frontend.state.records import App, Snapshot, Stage, pipeline_of
from query_frontend.cancellation import stop_if_cancelled
from query_frontend.queries import ModelKey
from query_frontend.routing.feed import follow_changes, latest_change_id, read_snapshot

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Arm:
    """One of an app's links, resolved to the model version that serves it now."""

    name: str  # the link: "model" or "model:version"
    key: ModelKey | None  # None: it cannot be served (see reason)
    reason: str = ""
    # The version that answers, as responses name it: "model:version" ("" if none).
    label: str = ""


@dataclass(frozen=True, slots=True)
class Route:
    app: App
    model_key: ModelKey | None  # the single policy's one model version (None otherwise)
    no_model_reason: str = ""  # why model_key is None
    arms: tuple[Arm, ...] = ()
    params: PolicyParams = field(default_factory=PolicyParams)
    # JSON list of model_key's label, spliced into every answer of a single-model app.
    models_json: bytes = b"[]"
    # Hex sha256 of each of the app's API keys; empty: the app is open to anyone.
    key_hashes: frozenset[str] = frozenset()
    # A pipeline's stages (two or more), each routed as an app of its own would be: its
    # ``app`` is this app with the stage's input type and policy (``stage_route``), its
    # ``name`` how messages name it. Empty for an app of one stage.
    stages: tuple[Route, ...] = ()
    name: str = ""

    @property
    def policy(self) -> str:
        return self.params.policy


def resolve_arm(snap: Snapshot, arm: str) -> Arm:
    model_name, pinned = parse_arm(arm)
    model = snap.models.get(model_name)
    if model is None:
        return Arm(arm, None, f"model '{model_name}' is not registered")
    version = pinned if pinned is not None else model.current_version
    if version is None:
        return Arm(arm, None, f"model '{model_name}' has no current version")
    if (model_name, version) not in snap.versions:
        return Arm(arm, None, f"model '{model_name}' has no version '{version}'")
    return Arm(arm, (model_name, version), label=arm_name(model_name, version))


def _params(app: App) -> PolicyParams:
    try:
        return PolicyParams.parse(app.policy, app.policy_params)
    except InvalidValue as exc:  # written by a newer management frontend, say
        logger.warning("app %s: cannot read its policy (%s); serving it as 'single'", app.name, exc)
        return PolicyParams()


def build_route(snap: Snapshot, app: App) -> Route:
    if app.stages:
        return pipeline_route(snap, app)
    return _arms_route(snap, app, snap.links.get(app.name, []))


def _arms_route(snap: Snapshot, app: App, links: list[str]) -> Route:
    """The route of one set of arms under ``app``'s policy (an app, or a stage of one)."""
    arms = tuple(resolve_arm(snap, a) for a in links)
    params = _params(app)
    if not arms:
        return Route(app, None, f"no model is linked to app '{app.name}'", arms, params)
    served = [a for a in arms if a.key is not None]
    if not served:
        return Route(app, None, "; ".join(a.reason for a in arms), arms, params)
    if params.policy == SINGLE or len(arms) == 1:
        first = arms[0]
        if first.key is None:
            return Route(app, None, first.reason, arms, params)
        return Route(app, first.key, "", arms, params, orjson.dumps([first.label]))
    return Route(app, None, "", arms, params)


def _stage_input(snap: Snapshot, stage: Stage, default: App) -> App:
    """The input type a stage's models take: its first registered arm's (the management
    frontend refuses a stage whose arms disagree), else the app's."""
    for arm in stage.arms:
        model = snap.models.get(parse_arm(arm)[0])
        if model is not None:
            return dataclasses.replace(default, input_type=model.input_type)
    return default


def stage_route(snap: Snapshot, app: App, index: int, stage: Stage) -> Route:
    """Stage ``index`` (0-based) of ``app``'s pipeline, routed as an app of its own: the
    app with the stage's policy and input type, so selection, learned state (under the
    stage's epoch), batching and the cache work per stage as they do per app."""
    as_app = dataclasses.replace(
        app,
        policy=stage.policy,
        policy_params=stage.policy_params,
        policy_epoch=stage.policy_epoch,
        stages=(),
    )
    if index > 0:
        as_app = _stage_input(snap, stage, as_app)
    route = _arms_route(snap, as_app, stage.arms)
    name = stage_name(index, stage.arms)
    if not route.arms:
        why = f"no model is in {name}"
        if index > 0:  # never stored so: a ``stages`` field that cannot be read
            why += ": its record cannot be read; set the app's pipeline again"
        route = dataclasses.replace(route, no_model_reason=why)
    return dataclasses.replace(route, name=name)


def pipeline_route(snap: Snapshot, app: App) -> Route:
    """An app of several stages: ``stages`` holds each stage's route; the app's own
    fields are its first stage's, for what reads them (its SLO, keys, the status)."""
    links = snap.links.get(app.name, [])
    stages = tuple(
        stage_route(snap, app, i, stage) for i, stage in enumerate(pipeline_of(app, links))
    )
    first = stages[0]
    return Route(app, None, "", first.arms, first.params, stages=stages)


class PinError(ValueError):
    """A request's version pin that the app cannot honour (see ``pin``). ``cause``, for
    a version the model does not have, is Clipper's sentence for it, which Clipper's
    clients read from the error body's ``"cause"``."""

    def __init__(self, message: str, cause: str = "") -> None:
        super().__init__(message)
        self.cause = cause


def app_model(snap: Snapshot, app: str) -> str | None:
    """The one model an app's arms all serve (``None``: no arm, or several models): the
    model whose versions a request may pin."""
    names = {parse_arm(arm)[0] for arm in snap.links.get(app, [])}
    return names.pop() if len(names) == 1 else None


def pin(snap: Snapshot, route: Route, version: str) -> Route:
    """``route`` answered by ``version`` of the app's model, whatever its policy would
    choose: a request's ``"version"`` (Clipper's pin) or ``/v2/models/{app}/versions/
    {version}/...``. Every arm must be of one model (several versions of it are fine);
    ``PinError`` says why not, or which versions the model has."""
    app = route.app.name
    if route.stages:
        raise PinError(
            f"app '{app}' is a pipeline of {len(route.stages)} stages: a version pin names "
            'one model; send the request without "version" (set the version a stage '
            'uses with a pinned arm, "model:version", in the pipeline)'
        )
    model = app_model(snap, app)
    if model is None:
        linked = sorted({parse_arm(arm)[0] for arm in snap.links.get(app, [])})
        if not linked:
            raise PinError(f"app '{app}' has no model linked: there is no version to pin")
        raise PinError(
            f"app '{app}' links several models ({', '.join(linked)}): a version pin needs "
            'an app whose arms are all of one model; send the request without "version"'
        )
    key = (model, version)
    if key not in snap.versions:
        found = snap.models.get(model)
        versions = ", ".join(found.versions) if found is not None and found.versions else "none"
        raise PinError(
            f"app '{app}': model '{model}' has no version '{version}' (its versions: {versions})",
            f"Requested version: {version} does not exist for model: {model}",
        )
    if route.model_key == key:
        return route
    label = arm_name(model, version)
    return dataclasses.replace(
        route,
        model_key=key,
        no_model_reason="",
        arms=(Arm(label, key, label=label),),
        params=PolicyParams(),
        models_json=orjson.dumps([label]),
    )


def build_routes(snap: Snapshot) -> dict[str, Route]:
    routes = {name: build_route(snap, app) for name, app in snap.apps.items()}
    for name, digests in snap.api_keys.items():
        if name in routes:
            routes[name] = dataclasses.replace(routes[name], key_hashes=digests)
    return routes


def key_owners(snap: Snapshot) -> dict[str, str]:
    """Each API key's hex sha256 -> the app it belongs to (to tell 403 from 401)."""
    return {digest: app for app, digests in snap.api_keys.items() for digest in digests}


def tightest_slos(routes: Iterable[Route]) -> dict[ModelKey, float]:
    """The smallest objective (seconds) among the apps routed to each model version."""
    slos: dict[ModelKey, float] = {}
    for route in routes:
        slo = route.app.slo_micros / 1e6
        for part in route.stages or (route,):
            for arm in part.arms:
                if arm.key is not None:
                    slos[arm.key] = min(slo, slos.get(arm.key, slo))
    return slos


class RoutingTable:
    """The frontend's view of apps, links and versions; replaced whole on each change."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.key_owners: dict[str, str] = {}
        self.snapshot = Snapshot()
        self.ready = asyncio.Event()
        self.listeners: list[Callable[[Snapshot], None]] = []
        # Told of each change-feed entry before the snapshot it leads to is applied.
        self.change_listeners: list[Callable[[Change], None]] = []

    def apply(self, snap: Snapshot) -> None:
        self.snapshot = snap
        self.key_owners = key_owners(snap)
        self.routes = build_routes(snap)
        for listener in self.listeners:
            listener(snap)
        self.ready.set()


async def follow(table: RoutingTable, r: aioredis.Redis, keys: Keys) -> None:
    """Keep ``table`` current until cancelled."""
    backoff = 0.1
    while True:
        try:
            last = await latest_change_id(r, keys)
            snapshot = await read_snapshot(r, keys)
            stop_if_cancelled()
            table.apply(snapshot)
            backoff = 0.1
            async for change in follow_changes(r, keys, last):
                logger.debug("change %s: %s %s", change.id, change.kind, change.fields)
                for listener in table.change_listeners:
                    listener(change)
                snapshot = await read_snapshot(r, keys)
                stop_if_cancelled()
                table.apply(snapshot)
        except (RedisError, OSError) as exc:
            stop_if_cancelled(exc)
            logger.warning("change feed interrupted (%s); retrying in %.1f s", exc, backoff)
        except Exception:
            # A record this version cannot read must not freeze routing for good.
            logger.exception("cannot apply the configuration in Redis; retrying")
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 2.0)
