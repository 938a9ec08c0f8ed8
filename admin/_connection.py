"""``Connection``: what a data scientist drives Schooner with, from a notebook or a script.

The method names and keyword arguments are Clipper's (``register_application``,
``link_model_to_app``, ``set_model_version``, ...), because they are its users' habit.
A ``Connection`` holds a container manager (which runs things) and a management client
(which records what should run, in Redis). Every change is recorded first and enacted
second, so that the state in Redis is what a restart brings back.

Deploying a model version, in order: the manager builds the artifact and refuses a
pickle the replicas could not load, before anything is registered; the version is
registered (not current); its replicas start; the client waits until they are
connected, failing fast if one exits; only then does the version become current, so
no query is routed to a version without replicas.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import httpx

from admin import _status
from admin._http import DEFAULT_TIMEOUT, BatchSettings, JSONClient, JSONObject, ManagementClient
from admin._names import check_flag, check_input_type, check_name, check_user_id, check_version
from admin._progress import ProgressCallback, wait_for
from admin.container_managers.base import ContainerManager
from admin.exceptions import (
    ConflictError,
    InvalidRequestError,
    ModelStartError,
    NotConnectedError,
    NotFoundError,
    SchoonerError,
)
from management_frontend.state.keys import arm_name

logger = logging.getLogger(__name__)

DEFAULT_DEPLOY_TIMEOUT = 60.0


class Connection:
    """A connection to one Schooner cluster, run by ``container_manager``.

    Call ``start()`` to start the cluster or ``connect()`` to attach to a running one;
    everything else except ``stop_all()`` and ``get_logs()`` needs one of them first.
    ``timeout`` bounds every HTTP request, ``deploy_timeout`` the wait for replicas to
    connect. ``progress``, if given, receives a line per step of a long operation (pass
    ``print`` in a notebook); the lines also go to the ``admin`` logger at INFO.
    ``transport`` replaces httpx's network transport for the frontends' APIs (as
    ``httpx.Client(transport=...)``: for tests, or a custom proxy setup).
    """

    def __init__(
        self,
        container_manager: ContainerManager,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        deploy_timeout: float = DEFAULT_DEPLOY_TIMEOUT,
        progress: ProgressCallback | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.cm = container_manager
        self._transport = transport
        self.timeout = timeout
        self.deploy_timeout = deploy_timeout
        self.report = container_manager.report
        if progress is not None:
            self.report.callback = progress
        self._client: ManagementClient | None = None

    def __repr__(self) -> str:
        state = "connected" if self.connected else "not connected"
        return f"<Connection {state} via {self.cm!r}>"

    # ------------------------------------------------------------------ lifecycle

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def _api(self) -> ManagementClient:
        if self._client is None:
            raise NotConnectedError(
                "this Connection is not connected to a Schooner cluster: call conn.start() "
                "to start one, or conn.connect() to attach to one that is running"
            )
        return self._client

    def _require_connected(self) -> None:
        """Raise ``NotConnectedError`` unless start() or connect() succeeded."""
        self._api  # noqa: B018 (the property raises)

    def start(self) -> None:
        """Start the cluster, then bring back the replicas of every model version."""
        self.cm.start_cluster()
        self._open()
        self._restore_replicas()

    def connect(self) -> None:
        """Attach to a cluster that is already running (started by another process)."""
        self.cm.connect()
        self._open()
        try:
            self._api.healthz()
        except SchoonerError:
            self.close()
            raise

    def close(self) -> None:
        """Release this client's connections; the cluster keeps running."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def stop_all(self, graceful: bool = True) -> None:
        """Stop every replica, both frontends and Redis. State is kept for the next start().

        Works without start()/connect(): it stops whatever runs on the manager's cluster.
        ``graceful`` is accepted for Clipper compatibility; stopping is always graceful
        first (SIGTERM), forceful only after a deadline.
        """
        del graceful
        self.close()
        self.cm.stop_all()

    def _open(self) -> None:
        self.close()
        self._client = ManagementClient(
            self.cm.management_url, timeout=self.timeout, transport=self._transport
        )

    def _restore_replicas(self) -> None:
        """Relaunch the desired replicas recorded in Redis (after a stop or a crash)."""
        started = []
        for model in self._api.list_models():
            for version in model.get("versions", []):
                mv = self._api.get_model_version(model["name"], version)
                num = int(mv.get("num_replicas", 0))
                if num > 0:
                    self.report(f"restarting {num} replica(s) of {mv['name']}:{version}")
                    self.cm.set_num_replicas(
                        mv["name"], version, mv["input_type"], mv["artifact"], num
                    )
                    started.append((str(mv["name"]), str(version), num))
        failed = []
        for name, version, num in started:
            try:
                self._wait_for_replicas(name, version, num)
            except ModelStartError as exc:
                failed.append(str(exc))
        if failed:
            raise ModelStartError(
                "Schooner is running and this Connection is connected, but some model "
                "replicas did not come back; fix them, or stop them with stop_models():\n"
                + "\n".join(failed)
            )

    # ------------------------------------------------------------------ applications

    def register_application(
        self,
        name: str,
        input_type: str,
        default_output: Any,
        slo_micros: int,
        policy: str | None = None,
        cache_enabled: bool = True,
        policy_params: Mapping[str, Any] | None = None,
    ) -> JSONObject:
        """Register an app; ``default_output`` (any JSON value) answers late queries.

        ``policy`` chooses among the app's linked models: "single" (the default), "split",
        "exp3" or "exp4", with ``policy_params`` its settings (``docs/admin-api.md``);
        ``set_selection_policy`` changes both later. ``cache_enabled=False`` makes every
        query reach a model (for models whose answer to the same input changes); it can
        be changed later with ``set_app_cache``.
        """
        app = self._api.add_app(
            check_name(name, "application name"),
            check_input_type(input_type),
            default_output,
            slo_micros,
            policy,
            check_flag(cache_enabled, "cache_enabled"),
            policy_params,
        )
        self._await_routes(lambda apps: name in apps, f"application {name!r}")
        policy_note = f", policy {app['policy']}" if app.get("policy", "single") != "single" else ""
        cache = "" if cache_enabled else ", prediction cache off"
        self.report(f"application {name!r} registered (SLO {slo_micros} us{policy_note}{cache})")
        return app

    def set_app_cache(self, app_name: str, enabled: bool) -> JSONObject:
        """Turn an app's prediction cache on or off, live; the app record is returned.

        Query frontends apply the change from the change feed, without a restart.
        """
        app = self._api.set_app_cache(app_name, check_flag(enabled, "enabled"))
        self._await_routes(
            lambda apps: _status.cache_state(apps, app_name) in (None, enabled),
            f"the prediction cache of {app_name!r} turned {'on' if enabled else 'off'}",
        )
        self.report(f"prediction cache of {app_name!r} is {'on' if enabled else 'off'}")
        return app

    def set_selection_policy(
        self, app_name: str, policy: str, *, reset_state: bool = False, **params: Any
    ) -> JSONObject:
        """Choose how the app picks among its linked models, live; the app is returned.

        ``policy``: "single", "split" (``weights={"m:1": 90, "m:2": 10}``), "exp3"
        (``eta``, ``gamma``) or "exp4" (``eta``); every policy takes ``loss``. Settings
        left out take their defaults. A new policy starts learning afresh; changing only
        the settings keeps what it learned, unless ``reset_state=True``. Returns once the
        query frontend runs the new policy.
        """
        app = self._api.set_policy(
            app_name, policy, params, reset_state=check_flag(reset_state, "reset_state")
        )
        self._await_routes(
            lambda apps: _status.app_policy(apps, app_name) in (None, policy),
            f"the {policy!r} policy of {app_name!r}",
        )
        settings = ", ".join(f"{k}={v!r}" for k, v in app.get("policy_params", {}).items())
        self.report(f"application {app_name!r} uses the {policy!r} policy ({settings})")
        return app

    def get_policy_state(self, app_name: str, uid: str | int | None = None) -> JSONObject:
        """What the app's policy learned from feedback: per linked model, its chance to
        answer (or weight), update count and mean loss. With ``uid``, what that user sees:
        the app's state plus what their own feedback added."""
        return self._api.get_policy_state(app_name, check_user_id(uid))

    def reset_policy_state(self, app_name: str, uid: str | int | None = None) -> None:
        """Forget what the app's policy learned (with ``uid``: only that user's part)."""
        user = check_user_id(uid)
        self._api.reset_policy_state(app_name, user)
        whose = f"user {user!r} of " if user is not None else ""
        self.report(f"the learned policy state of {whose}{app_name!r} is reset")

    def unregister_application(self, name: str) -> None:
        """Delete an app, its links and its learned policy state; the models stay deployed."""
        self._api.delete_app(name)
        self._await_routes(lambda apps: name not in apps, f"the removal of {name!r}")

    def link_model_to_app(
        self, app_name: str, model_name: str, version: str | int | None = None
    ) -> None:
        """Route the app's queries to the model's current version, or with ``version``
        to that version whatever becomes current (pinned: to compare versions side by
        side, link ``m`` twice with two versions under a policy that uses several)."""
        pinned = None if version is None else check_version(version)
        self._api.add_link(app_name, model_name, pinned)
        arm = arm_name(model_name, pinned)
        if pinned is not None:
            route = arm
        else:
            current = self._api.get_model(model_name).get("current_version")
            route = f"{model_name}:{current}" if current else ""
        if route:
            self._await_routes(
                lambda apps: _status.arm_route(apps, app_name, arm) == route,
                f"the link {app_name} -> {route}",
            )

    def unlink_model_from_app(
        self, app_name: str, model_name: str, version: str | int | None = None
    ) -> None:
        """Remove the link to the model, or with ``version`` the link pinned to it."""
        pinned = None if version is None else check_version(version)
        self._api.delete_link(app_name, model_name, pinned)
        arm = arm_name(model_name, pinned)
        self._await_routes(
            lambda apps: _status.arm_gone(apps, app_name, arm),
            f"the unlinking of {arm} from {app_name}",
        )

    def get_all_apps(self, verbose: bool = False) -> list[Any]:
        """App names, or with ``verbose`` the app records."""
        apps = self._api.list_apps()
        return apps if verbose else [a["name"] for a in apps]

    def get_app_info(self, name: str) -> JSONObject | None:
        """The app (``cache_enabled`` included) with its ``linked_models``; ``None`` if
        there is no such app."""
        try:
            return self._api.get_app(name)
        except NotFoundError:
            return None

    def get_linked_models(self, app_name: str) -> list[str]:
        return self._api.get_links(app_name)

    # ------------------------------------------------------------------ models

    def build_and_deploy_model(
        self,
        name: str,
        version: str,
        input_type: str,
        model_data_path: str | os.PathLike[str],
        labels: Sequence[str] | None = None,
        num_replicas: int = 1,
        batch_size: int = -1,
        batch_mode: str = "",
        batch_wait_micros: int = 0,
    ) -> None:
        """Deploy a model bundle directory (``model.json`` + ``func.pkl``).

        The bundle's ``pkgs`` are installed for the replicas when missing. The batching
        options are those of ``deploy_python_closure`` (and ``docs/admin-api.md``).
        """
        from model_container.bundle import BundleError, read_bundle_info

        self._require_connected()
        batch = BatchSettings(batch_size, batch_mode, batch_wait_micros)
        name, version = check_name(name), check_version(version)
        input_type = check_input_type(input_type)
        try:
            info = read_bundle_info(model_data_path)
        except BundleError as exc:
            raise InvalidRequestError(f"cannot deploy {name}:{version}: {exc}") from exc
        if str(info.input_type) != input_type:
            raise InvalidRequestError(
                f"the bundle at {model_data_path} takes {info.input_type!s} but "
                f"input_type={input_type!r} was given: make them the same"
            )
        self._check_new_version(name, version, input_type)
        self.report(f"building {name}:{version}")
        artifact = self.cm.build_model(name, version, model_data_path)
        self._deploy(
            name,
            version,
            input_type,
            artifact,
            labels=labels,
            num_replicas=num_replicas,
            batch=batch,
            runtime=info.runtime,
            pkgs=info.pkgs,
        )

    def deploy_model(
        self,
        name: str,
        version: str,
        input_type: str,
        artifact: str,
        labels: Sequence[str] | None = None,
        num_replicas: int = 1,
        batch_size: int = -1,
        batch_mode: str = "",
        batch_wait_micros: int = 0,
    ) -> None:
        """Deploy an artifact the container manager can already run (for the local
        manager a prepared bundle directory; an image for Docker and Kubernetes)."""
        name, version = check_name(name), check_version(version)
        input_type = check_input_type(input_type)
        batch = BatchSettings(batch_size, batch_mode, batch_wait_micros)
        self._check_new_version(name, version, input_type)
        self._deploy(
            name,
            version,
            input_type,
            artifact,
            labels=labels,
            num_replicas=num_replicas,
            batch=batch,
        )

    def register_model(
        self,
        name: str,
        version: str,
        input_type: str,
        artifact: str = "",
        labels: Sequence[str] | None = None,
        batch_size: int = -1,
        batch_mode: str = "",
        batch_wait_micros: int = 0,
    ) -> JSONObject:
        """Register a version as current without starting replicas (they run elsewhere)."""
        return self._api.add_model_version(
            check_name(name),
            check_version(version),
            check_input_type(input_type),
            artifact=artifact,
            labels=labels or (),
            batch=BatchSettings(batch_size, batch_mode, batch_wait_micros),
            set_current=True,
        )

    def _check_new_version(self, name: str, version: str, input_type: str) -> None:
        """Refuse early what registration would refuse after a long build."""
        try:
            model = self._api.get_model(name)
        except NotFoundError:
            return
        if version in model.get("versions", []):
            raise ConflictError(
                f"{name}:{version} is already registered: deploy under a new version, or "
                f"switch between existing ones with set_model_version({name!r}, ...)",
                status_code=409,
                code="conflict",
            )
        if model.get("input_type") not in (None, input_type):
            raise ConflictError(
                f"model {name!r} takes {model['input_type']}, not {input_type}: every version "
                "of a model has the same input type; use another model name",
                status_code=409,
                code="conflict",
            )

    def _deploy(
        self,
        name: str,
        version: str,
        input_type: str,
        artifact: str,
        *,
        labels: Sequence[str] | None,
        num_replicas: int,
        batch: BatchSettings,
        runtime: dict[str, str] | None = None,
        pkgs: Sequence[str] = (),
    ) -> None:
        self._api.add_model_version(
            name,
            version,
            input_type,
            artifact=artifact,
            labels=labels or (),
            batch=batch,
            num_replicas=num_replicas,
            runtime=runtime,
            pkgs=pkgs,
            set_current=False,
        )
        try:
            if num_replicas > 0:
                self.report(f"starting {num_replicas} replica(s) of {name}:{version}")
                self.cm.set_num_replicas(name, version, input_type, artifact, num_replicas)
                self._wait_for_replicas(name, version, num_replicas)
        except BaseException:
            self._undo_deploy(name, version)
            raise
        self._switch_version(name, version)
        self.report(f"{name}:{version} is deployed and current ({num_replicas} replica(s))")

    def _undo_deploy(self, name: str, version: str) -> None:
        """Forget a version whose replicas did not start, so it can be deployed again."""
        try:
            self.cm.stop_models(name, [version])
            self._api.delete_model_version(name, version)
        except SchoonerError as exc:
            logger.warning("cleaning up the failed deploy of %s:%s: %s", name, version, exc)

    def set_model_version(self, name: str, version: str, num_replicas: int | None = None) -> None:
        """Make ``version`` current (roll back or forward); scale it first if asked."""
        version = check_version(version)
        if num_replicas is not None:
            self.set_num_replicas(name, num_replicas, version=version)
        elif int(self._api.get_model_version(name, version).get("num_replicas", 0)) == 0:
            self.report(
                f"{name}:{version} has no replicas: its queries get the default output until "
                "set_num_replicas() starts some"
            )
        self._switch_version(name, version)
        self.report(f"{name}:{version} is now current")

    def _switch_version(self, name: str, version: str) -> None:
        self._api.set_current_version(name, version)
        route = f"{name}:{version}"
        self._await_routes(
            lambda apps: _status.follows_current(apps, name, route),
            f"{route} as current version",
        )

    def _await_routes(self, done: Callable[[dict[str, Any]], bool], what: str) -> None:
        """Wait (briefly) until the query frontend routes as just changed.

        Changes reach query frontends through the change feed within milliseconds; waiting
        for it here means a query sent right after this call sees the change. ``done``
        gets the ``apps`` of the query frontend's ``/status``. Not fatal on a timeout.
        """
        client = self._query_client()

        def check() -> bool:
            try:
                return done(dict(client.get_object("/status").get("apps") or {}))
            except SchoonerError:
                return False

        with contextlib.closing(client):
            if not wait_for(check, timeout=self.timeout):
                logger.warning(
                    "the query frontend had not applied %s after %g s", what, self.timeout
                )

    def set_num_replicas(self, name: str, num_replicas: int, version: str | None = None) -> None:
        """Run ``num_replicas`` replicas of a version (the current one by default)."""
        if version is None:
            version = self._api.get_model(name).get("current_version")
            if not version:
                raise InvalidRequestError(
                    f"model {name!r} has no current version: pass version=..."
                )
        version = check_version(version)
        mv = self._api.get_model_version(name, version)
        self._api.set_num_replicas(name, version, num_replicas)
        self.report(f"scaling {name}:{version} to {num_replicas} replica(s)")
        self.cm.set_num_replicas(name, version, mv["input_type"], mv["artifact"], num_replicas)
        self._wait_for_replicas(name, version, num_replicas)

    def _wait_for_replicas(self, name: str, version: str, num_replicas: int) -> None:
        """Poll until ``num_replicas`` of the manager's replicas are connected; fail fast
        with the log tail of one that exited.

        A replica that serves several query frontends is connected once per frontend (on
        Kubernetes); the manager says how many connections to wait for.
        """
        if num_replicas == 0:
            return
        connected = 0
        wanted = num_replicas

        def done() -> bool:
            nonlocal connected, wanted
            states = self.cm.replica_states(name, version)
            for state in states:
                if not state.running:
                    raise ModelStartError(
                        f"{name}:{version} did not start: {state.detail}\nFix the model or "
                        "its packages and deploy again; all logs: conn.get_logs(dir)"
                    )
            pids = {s.replica_id: s.pid for s in states}
            wanted = self.cm.connections_expected(name, version, num_replicas)
            connected = sum(
                1
                for r in self._api.list_replicas()
                if r.get("model_name") == name
                and str(r.get("model_version")) == version
                and _is_replica(r, pids)
            )
            return connected >= wanted

        def counted() -> str:
            if wanted == num_replicas:
                return f"{connected}/{num_replicas} replica(s) connected"
            return (
                f"{connected}/{wanted} connections of {num_replicas} replica(s) to the query "
                "frontends"
            )

        ok = wait_for(
            done,
            timeout=self.deploy_timeout,
            on_progress=lambda t: self.report(
                f"waiting for {name}:{version}: {counted()} ({t:.0f} s)"
            ),
        )
        if not ok:
            raise ModelStartError(
                f"{name}:{version} did not connect within {self.deploy_timeout:g} s "
                f"({counted()}). Its replicas may still be loading (raise "
                "Connection(deploy_timeout=...)), or cannot reach the query frontend's RPC "
                "port: see their logs with conn.get_logs(dir)"
            )
        self.report(f"{name}:{version}: {num_replicas} replica(s) connected")

    def stop_models(self, model_names: str | Iterable[str]) -> None:
        """Stop every replica of every version of these models (they stay registered)."""
        names = [model_names] if isinstance(model_names, str) else list(model_names)
        for name in names:
            self._stop_versions(name, self._api.get_model(name).get("versions", []))

    def stop_versioned_models(self, model_versions: dict[str, Sequence[str]]) -> None:
        """Stop the replicas of some versions: ``{"model": ["1", "2"]}``."""
        for name, versions in model_versions.items():
            self._stop_versions(name, [check_version(v) for v in versions])

    def stop_inactive_model_versions(self, model_names: str | Iterable[str]) -> None:
        """Stop the replicas of every version that is not current."""
        names = [model_names] if isinstance(model_names, str) else list(model_names)
        for name in names:
            model = self._api.get_model(name)
            current = model.get("current_version")
            self._stop_versions(name, [v for v in model.get("versions", []) if v != current])

    def stop_all_model_containers(self) -> None:
        self.stop_models([m["name"] for m in self._api.list_models()])

    def _stop_versions(self, name: str, versions: Sequence[str]) -> None:
        for version in versions:  # record first: a restart must not bring them back
            self._api.set_num_replicas(name, version, 0)
        self.cm.stop_models(name, list(versions))
        self.report(f"stopped the replicas of {name} ({', '.join(versions) or 'no versions'})")

    def get_all_models(self, verbose: bool = False) -> list[Any]:
        """``"name:version"`` of every version, or with ``verbose`` the version records
        (each with ``is_current_version``)."""
        models = self._api.list_models()
        if not verbose:
            return [f"{m['name']}:{v}" for m in models for v in m.get("versions", [])]
        out = []
        for model in models:
            for version in model.get("versions", []):
                record = self._api.get_model_version(model["name"], version)
                record["is_current_version"] = version == model.get("current_version")
                out.append(record)
        return out

    def get_model_info(self, name: str, version: str) -> JSONObject | None:
        """The model version record; ``None`` if there is no such version."""
        try:
            return self._api.get_model_version(name, check_version(version))
        except NotFoundError:
            return None

    def get_all_model_replicas(self, verbose: bool = False) -> list[Any]:
        """Replica ids of the connected replicas, or with ``verbose`` their records."""
        replicas = self._api.list_replicas()
        return replicas if verbose else [r["replica_id"] for r in replicas]

    # ------------------------------------------------------------------ the instance

    def get_query_addr(self) -> str:
        """``host:port`` where applications POST ``/{app}/predict``."""
        self._require_connected()
        return self.cm.get_query_addr()

    def get_management_addr(self) -> str:
        self._require_connected()
        return self.cm.get_management_addr()

    def inspect_instance(self) -> JSONObject:
        """The query frontend's view: its apps, routes and model queues (``/status``)."""
        self._require_connected()
        client = self._query_client()
        with contextlib.closing(client):
            return client.get_object("/status")

    def _query_client(self) -> JSONClient:
        return JSONClient(
            self.cm.query_url,
            service="query frontend",
            timeout=self.timeout,
            transport=self._transport,
        )

    def get_logs(self, logging_dir: str | os.PathLike[str]) -> list[str]:
        """Copy every component's log into ``logging_dir``; the paths written."""
        return self.cm.get_logs(logging_dir)


def _is_replica(record: JSONObject, pids: dict[str, int | None]) -> bool:
    """Whether a connected-replica record is one of the replicas the manager started.

    The pids must agree when both are known: a record left behind by an earlier process
    with the same replica id (a crash, a restart) is not the new replica.
    """
    replica_id = record.get("replica_id")
    if replica_id not in pids:
        return False
    ours, theirs = pids[replica_id], record.get("pid")
    return not ours or not theirs or ours == theirs
