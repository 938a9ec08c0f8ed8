"""The query frontend application: its lifespan owns Redis, ZeroMQ and background tasks.

``create_app`` returns a ``FrontDoor``: the ASGI app uvicorn serves. It hands
``POST /{app}/predict`` straight to ``http.predict.handle_predict``, ``POST /{app}/update``
to ``http.update.handle_update``, the Open Inference Protocol's ``/v2/...`` to
``http.v2.serve_v2``, and everything else (health, status, metrics: see
``http.endpoints``; the lifespan) to a Starlette app.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import redis.asyncio as aioredis
import zmq.asyncio
from prometheus_client import generate_latest
from redis.exceptions import RedisError
from starlette.applications import Starlette

from management_frontend.state.keys import SCHEMA_VERSION, Keys
from management_frontend.state.policy import LEARNING
from management_frontend.state.records import Snapshot, schema_version_of
from model_container import credentials
from model_container.bearer import AdminTokenCheck
from model_container.credentials import CredentialError
from model_container.rpc_keys import ServerKeys, warn_insecure
from query_frontend.batching.dispatch import Dispatcher
from query_frontend.batching.quarantine import Quarantine
from query_frontend.caching.cache import PredictionCache
from query_frontend.config import Config
from query_frontend.http.asgi import Message, Receive, Scope, Send, error, send_reply
from query_frontend.http.endpoints import routes
from query_frontend.http.metrics_port import serve_metrics
from query_frontend.http.predict import handle_predict
from query_frontend.http.state import FrontendState
from query_frontend.http.update import handle_update
from query_frontend.http.v2 import serve_v2, v2_post
from query_frontend.metrics import Metrics, RefusedPeersCollector
from query_frontend.observability import tracing
from query_frontend.observability.access_log import AccessLog
from query_frontend.routing.table import RoutingTable, follow, tightest_slos
from query_frontend.rpc.registry import ReplicaRegistry
from query_frontend.rpc.server import RpcServer
from query_frontend.selection.learned import PolicyStates
from query_frontend.supervision import ProcessCollector, ProcessStates
from query_frontend.telemetry import TelemetryPublisher, TickBuilder, frontend_id

#: The hot path: ``POST /{app}/{verb}`` served without Starlette (also by
#: ``http.protocol``, which calls them without going through ``FrontDoor``), and with a
#: trailing slash, ``/{app}/{verb}/``, as Clipper's frontend takes it.
_VERBS = {"predict": handle_predict, "update": handle_update}
HANDLERS = {**_VERBS, **{f"{verb}/": handler for verb, handler in _VERBS.items()}}
#: The same, keyed as the HTTP protocol reads a URL.
HANDLERS_BY_VERB = {verb.encode(): handler for verb, handler in HANDLERS.items()}
#: ``POST /{prefix}/{rest}`` the HTTP protocol hands over when no verb matched: the Open
#: Inference Protocol's inference (``FrontDoor`` serves every /v2 path, through ASGI).
HANDLERS_BY_PREFIX = {b"v2": v2_post}

logger = logging.getLogger(__name__)


class FrontDoor:
    """The ASGI app uvicorn serves: predictions go to the hot path, the rest to Starlette."""

    def __init__(self) -> None:
        self.inner: Starlette | None = None
        self.state: FrontendState | None = None  # set by the lifespan, once started

    def drain(self) -> None:
        """From now on /healthz says "draining" (the server stops accepting and answers
        what it accepted: ``query_frontend.__main__``)."""
        if self.state is not None:
            self.state.draining = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.state is not None:
            if self.state.draining:  # every connection closes after its next response
                send = _closing(send)
            path: str = scope["path"]
            name, _, verb = path[1:].partition("/")
            handler = HANDLERS.get(verb)
            if handler is not None and name:
                if scope["method"] == "POST":
                    reply = await handler(self.state, name, scope["headers"], receive)
                    if reply is not None:
                        await send_reply(send, reply)
                else:
                    msg = f"{path} takes POST with a JSON body"
                    bad = error(405, "method_not_allowed", msg, {"Allow": "POST"})
                    await send_reply(send, bad)
                return
            if name == "v2":  # the Open Inference Protocol (an app named v2 predicts above)
                await serve_v2(self.state, scope, receive, send)
                return
        assert self.inner is not None
        await self.inner(scope, receive, send)


def _closing(send: Send) -> Send:
    """``send``, its response saying ``Connection: close`` (uvicorn then closes the
    connection after it: see ``http.server.GracefulClose``)."""

    async def closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", ()), (b"connection", b"close")]
            message = {**message, "headers": headers}
        await send(message)

    return closing


def create_app(config: Config) -> FrontDoor:
    """The app; ``model_container.credentials.CredentialError`` if the RPC keys are not
    in ``config.secrets_dir`` (unless ``config.insecure_rpc``)."""
    door = FrontDoor()
    redis_password = credentials.read_optional(config.secrets_dir, credentials.REDIS_PASSWORD)
    rpc_keys: ServerKeys | None = None
    if config.insecure_rpc:
        warn_insecure()
    else:
        rpc_keys = ServerKeys.load(config.secrets_dir)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        admin_token = _admin_token(config)
        keys = Keys(config.key_prefix)
        r = aioredis.Redis.from_url(
            config.redis_url,
            password=redis_password,
            decode_responses=True,
            socket_connect_timeout=5,
            health_check_interval=10,
        )
        ctx = zmq.asyncio.Context()
        dispatcher = Dispatcher(
            config.max_batch_size,
            config.max_queue_per_model,
            config.max_inflight_batches,
            timeout_floor_s=config.batch_timeout_floor_s,
            quarantine=Quarantine(config.quarantine_s, config.quarantine_max_inputs),
        )
        routing = RoutingTable()
        rpc = RpcServer(
            ctx,
            config.rpc_bind_address,
            dispatcher,
            config.heartbeat_ms,
            rpc_keys,
            extra_binds=config.rpc_extra_binds,
            unix_path=config.rpc_unix,
        )
        registry = ReplicaRegistry(r, keys, config.frontend_id)
        dispatcher.on_replica_added = registry.added
        dispatcher.on_replica_removed = registry.removed

        def on_snapshot(snap: Snapshot) -> None:
            # A version deleted and registered again may compute something else.
            for name, version in rpc.expected_input_types.keys() - snap.versions.keys():
                cache.invalidate_model(name, version)
                dispatcher.quarantine.forget_model((name, version))
            rpc.expected_input_types = {k: v.input_type for k, v in snap.versions.items()}
            slos = tightest_slos(routing.routes.values())
            for key, mv in snap.versions.items():
                dispatcher.configure(
                    key,
                    mv.input_type,
                    mv.batch_size,
                    slos.get(key),
                    mode=mv.batch_mode,
                    wait_s=mv.batch_wait_micros / 1e6,
                    timeout_s=mv.batch_timeout_micros / 1e6,
                )

        routing.listeners.append(on_snapshot)
        policies = PolicyStates(r, keys)
        policies.tracked = lambda: [
            (name, part.app.policy_epoch)
            for name, route in routing.routes.items()
            for part in route.stages or (route,)
            if part.policy in LEARNING
        ]
        routing.listeners.append(
            lambda _: policies.retain(
                (name, part.app.policy_epoch)
                for name, route in routing.routes.items()
                for part in route.stages or (route,)
            )
        )
        routing.change_listeners.append(policies.on_change)
        cache = PredictionCache(config.cache_max_bytes)
        metrics = Metrics(dispatcher, cache)
        dispatcher.observer = metrics
        processes = ProcessStates(r, keys.supervision)
        metrics.registry.register(ProcessCollector(processes))
        metrics.registry.register(RefusedPeersCollector({"unix": rpc.unix_refusals}))
        access_log = AccessLog(config.access_log_sample, max_per_s=config.access_log_max_per_s)
        state = door.state = app.state.frontend = FrontendState(
            config,
            routing,
            dispatcher,
            cache,
            metrics,
            policies,
            admin_token=admin_token,
            processes=processes,
            access_log=access_log,
        )
        access_log.start()
        tracing.configure(config.frontend_id)
        telemetry = TelemetryPublisher(
            r,
            keys,
            TickBuilder(
                frontend_id(config.frontend_id), metrics, dispatcher, cache, routing, policies
            ),
        )
        metrics_server: asyncio.Server | None = None
        rpc.open()
        tasks: set[asyncio.Task[None]] = set()

        def spawn(coro: Coroutine[Any, Any, None], name: str) -> None:
            task = asyncio.create_task(coro, name=name)
            tasks.add(task)
            task.add_done_callback(_on_task_done)
            task.add_done_callback(tasks.discard)

        try:
            await _check_schema(r, keys)
            with contextlib.suppress(Exception):
                await registry.clear_own()
            spawn(follow(routing, r, keys), "change-feed")
            spawn(rpc.serve(), "rpc")
            spawn(rpc.heartbeat(), "heartbeat")
            spawn(registry.run(), "replica-registry")
            spawn(policies.run(), "policy-state")
            spawn(processes.run(), "supervision")
            spawn(telemetry.run(), "telemetry")
            if config.metrics_port:
                metrics_server = await serve_metrics(
                    config.host, config.metrics_port, lambda: generate_latest(metrics.registry)
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(routing.ready.wait(), timeout=10)
            # Everything allocated so far lives as long as the process: keep the garbage
            # collector's full collections from walking it again and again.
            gc.freeze()
            logger.info("query frontend %s ready", config.frontend_id)
            yield
        finally:
            for task in tasks:
                task.cancel("query frontend shutting down")
            await asyncio.gather(*tasks, return_exceptions=True)
            if metrics_server is not None:
                metrics_server.close()
                await metrics_server.wait_closed()
            await policies.close()
            with contextlib.suppress(Exception):
                await registry.clear_own()
            state.parser.close()
            access_log.close()
            tracing.shutdown()
            rpc.close()
            ctx.term()
            await r.aclose()
            door.state = None

    door.inner = Starlette(routes=routes, lifespan=lifespan)
    return door


def _admin_token(config: Config) -> AdminTokenCheck:
    """The check of /status and /metrics; a frontend without secrets refuses them all."""
    check = AdminTokenCheck(config.secrets_dir)
    if config.secrets_dir is None:
        logger.warning(
            "started without --secrets-dir: /status and /metrics refuse every request "
            "(they need the cluster's admin token)"
        )
        return check
    try:
        check.load()
    except CredentialError as exc:
        raise RuntimeError(f"cannot read the admin token's hash: {exc}") from None
    return check


async def _check_schema(r: aioredis.Redis, keys: Keys) -> None:
    try:
        found = schema_version_of(await r.hget(keys.meta, "schema_version"))
    except (RedisError, OSError):
        return  # Redis not up yet: the change-feed follower retries until it is
    if found is not None and found > SCHEMA_VERSION:
        raise RuntimeError(
            f"Redis holds Schooner schema version {found}, newer than this query frontend "
            f"understands ({SCHEMA_VERSION}): upgrade the query frontend"
        )


def _on_task_done(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("background task %s failed", task.get_name(), exc_info=task.exception())
