"""``Connection``: what a data scientist drives Schooner with, from a notebook or a script.

The method names and keyword arguments are Clipper's (``register_application``,
``link_model_to_app``, ``set_model_version``, ...), because they are its users' habit.
A ``Connection`` holds a container manager (which runs things) and a management client
(which records what should run, in Redis). Every change is recorded first and enacted
second, so that the state in Redis is what a restart brings back.

The management API, and the query frontend's ``/status``, need the cluster's admin
token: ``start()`` and ``connect()`` read it from the container manager
(``cm.admin_token()``: ``<data_dir>/admin-token`` locally), ``$SCHOONER_ADMIN_TOKEN``
overriding, and it is never shown in a repr, a log line or an error.

This class is the facade: it checks the arguments and delegates. Deploying lives in
``_deploy``, replica counts (scaling, stopping, restoring after ``start()``) in
``_replicas``, and waiting for the cluster to catch up with a change in ``_wait``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import httpx

from admin import _status
from admin._closing import Closing
from admin._deploy import Deployer
from admin._http import DEFAULT_TIMEOUT, BatchSettings, JSONClient, JSONObject, ManagementClient
from admin._names import (
    check_default_output,
    check_flag,
    check_input_type,
    check_memory_limit,
    check_name,
    check_names,
    check_num_replicas,
    check_output_type,
    check_strings,
    check_user_id,
    check_version,
)
from admin._overview import (
    MAX_WINDOW_S,
    MIN_WINDOW_S,
    OVERVIEW_WINDOW_S,
    AppActivity,
    Overview,
)
from admin._pipelines import check_stage_number, describe, stages_json
from admin._progress import ProgressCallback, wait_for
from admin._replicas import Replicas
from admin._wait import RoutesDone, await_routes, wait_for_replicas
from admin.container_managers._credentials import ADMIN_TOKEN_ENV
from admin.container_managers.base import ContainerManager
from admin.exceptions import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotConnectedError,
    NotFoundError,
    SchoonerError,
)
from management_frontend.state.keys import arm_name
from management_frontend.state.rules import SHA256_RE
from model_container.credentials import sha256_hex

DEFAULT_DEPLOY_TIMEOUT = 60.0


class Connection(Closing):
    """A connection to one Schooner cluster, run by ``container_manager``.

    Call ``start()`` to start the cluster or ``connect()`` to attach to a running one;
    everything else except ``stop_all()`` and ``get_logs()`` needs one of them first.
    ``timeout`` bounds every HTTP request, ``deploy_timeout`` the wait for replicas to
    connect. ``progress``, if given, receives a line per step of a long operation (pass
    ``print`` in a notebook); the lines also go to the ``admin`` logger at INFO.
    ``transport`` replaces httpx's network transport for the frontends' APIs (as
    ``httpx.Client(transport=...)``: for tests, or a custom proxy setup).

    A Connection holds HTTP connections to the frontends, and its container manager
    may hold a client of its own (Docker's, Kubernetes'). ``close()`` releases them all
    while the cluster keeps running, as ``httpx.Client.close()`` does; ``with
    Connection(cm) as conn:`` returns the connection as it is -- entering starts and
    connects nothing, call ``start()`` or ``connect()`` inside -- and closes it on the
    way out, also when the block raised. Stopping the cluster is ``stop_all()``.
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
        # The admin token and where it was read (for error messages); never shown.
        self._token: str | None = None
        self._token_source = ""

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
        self._replicas().restore()

    def connect(self) -> None:
        """Attach to a cluster that is already running (started by another process).

        If it fails, nothing is left open: not this client's connections, nor those the
        manager opened to look for the cluster.
        """
        try:
            self.cm.connect()
            self._open()
            self._api.healthz()
        except SchoonerError:
            self.close()
            raise

    def close(self) -> None:
        """Release this client's connections; the cluster keeps running.

        Closes the management client and the container manager's own clients (the
        manager opens them again when next used). Idempotent; ``start()`` or
        ``connect()`` connects again.
        """
        self._close_api()
        self.cm.close()

    def stop_all(self, graceful: bool = True) -> None:
        """Stop every replica, both frontends and Redis. State is kept for the next start().

        Works without start()/connect(): it stops whatever runs on the manager's cluster.
        ``graceful`` is accepted for Clipper compatibility; stopping is always graceful
        first (SIGTERM), forceful only after a deadline. Afterwards nothing is left open:
        the manager's clients are closed too.
        """
        del graceful
        self._close_api()
        try:
            self.cm.stop_all()
        finally:
            self.cm.close()

    def _close_api(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _open(self) -> None:
        # Only the management client: the manager's client is in use (start_cluster).
        self._close_api()
        self._read_admin_token()
        self._client = ManagementClient(
            self.cm.management_url,
            timeout=self.timeout,
            transport=self._transport,
            verify=self.cm.tls_verify(),
            token=self._token,
            token_source=self._token_source,
        )

    def _read_admin_token(self) -> None:
        """The token this connection sends: ``$SCHOONER_ADMIN_TOKEN``, else the cluster's."""
        override = os.environ.get(ADMIN_TOKEN_ENV, "").strip()
        if override:
            self._token, self._token_source = override, f"${ADMIN_TOKEN_ENV}"
            return
        self._token = self.cm.admin_token()
        self._token_source = f"the cluster ({self.cm!r}; ${ADMIN_TOKEN_ENV} is not set)"

    def rotate_admin_token(self) -> None:
        """Replace the cluster's admin token with a new one; this connection keeps working.

        The container manager writes the new token where the cluster keeps it (locally
        ``<data_dir>/admin-token``) and its hash where the frontends and replicas check
        it; they take it within a second, and from then on the old token gets 401. Other
        connections read the new token when they next connect. Returns once the
        frontends take the new token.
        """
        api = self._api
        new = self.cm.rotate_admin_token()
        self._token = new
        self._token_source = f"the cluster ({self.cm!r}, rotated)"
        api.set_token(new, self._token_source)

        def accepted() -> bool:  # by the management frontend and the query frontend
            try:
                api.list_replicas()
                with self._query_client() as query:
                    query.get_object("/status")
            except AuthenticationError:
                return False
            return True

        if not wait_for(accepted, timeout=self.timeout):
            raise AuthenticationError(
                f"the frontends did not take the new admin token within {self.timeout:g} s: "
                "are they reading the secrets directory the manager wrote? "
                "Check its log (get_logs())",
                status_code=401,
            )
        if os.environ.get(ADMIN_TOKEN_ENV):
            self.report(
                f"the admin token is rotated; ${ADMIN_TOKEN_ENV} in this process still holds "
                "the old one: update or unset it before the next connect()"
            )
        else:
            self.report("the admin token is rotated; the old one no longer works")

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
        expose_model_errors: bool = False,
        exist_ok: bool = False,
    ) -> JSONObject:
        """Register an app; ``default_output`` (any JSON value) answers late queries.

        ``policy`` chooses among the app's linked models: "single" (the default), "split",
        "exp3" or "exp4", with ``policy_params`` its settings (``docs/admin-api.md``);
        ``set_selection_policy`` changes both later. ``cache_enabled=False`` makes every
        query reach a model (for models whose answer to the same input changes); it can
        be changed later with ``set_app_cache``. When a model raises, the app's clients
        see the exception's type and the model (``"model 'm' version '1' raised
        ValueError"``) and the replica logs its message and traceback;
        ``expose_model_errors=True`` shows clients the message too (for development).

        An app of that name registered already raises ``ConflictError``; with
        ``exist_ok=True`` the existing app is returned instead when it has these same
        settings (a notebook run twice), and the error names the settings that differ
        otherwise.
        """
        settings: dict[str, Any] = {
            "input_type": check_input_type(input_type),
            "default_output": check_default_output(default_output),
            "slo_micros": slo_micros,
            "policy": policy or "single",
            "cache_enabled": check_flag(cache_enabled, "cache_enabled"),
            "expose_model_errors": check_flag(expose_model_errors, "expose_model_errors"),
        }
        try:
            app = self._api.add_app(
                check_name(name, "application name"),
                settings["input_type"],
                settings["default_output"],
                slo_micros,
                policy,
                settings["cache_enabled"],
                policy_params,
                settings["expose_model_errors"],
            )
        except ConflictError as exc:
            existing = self._api.get_app(name)
            differ = [
                f"{key} {existing.get(key)!r} (not {wanted!r})"
                for key, wanted in settings.items()
                if existing.get(key) != wanted
            ]
            stored = existing.get("policy_params") or {}
            differ += [  # the policy settings given; the frontend fills in the others
                f"policy_params[{key!r}] {stored.get(key)!r} (not {wanted!r})"
                for key, wanted in (policy_params or {}).items()
                if not isinstance(stored, dict) or stored.get(key) != wanted
            ]
            if exist_ok and not differ:
                self.report(f"application {name!r} is registered already, with these settings")
                return existing
            why = f" with {', '.join(differ)}" if differ else ""
            hint = "" if exist_ok else "pass exist_ok=True to keep it if it is the same, or "
            raise ConflictError(
                f"app {name!r} already exists{why}: {hint}remove it first with "
                f"unregister_application({name!r}) (its links go with it)",
                status_code=exc.status_code,
                code=exc.code,
            ) from exc
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
        self,
        app_name: str,
        policy: str,
        *,
        stage: int = 1,
        reset_state: bool = False,
        **params: Any,
    ) -> JSONObject:
        """Choose how the app picks among its linked models, live; the app is returned.

        ``policy``: "single", "split" (``weights={"m:1": 90, "m:2": 10}``), "exp3"
        (``eta``, ``gamma``) or "exp4" (``eta``); every policy takes ``loss``. Settings
        left out take their defaults. A new policy starts learning afresh; changing only
        the settings keeps what it learned, unless ``reset_state=True``. ``stage``: which
        stage of a pipeline app (from 1, the app's links; ``set_app_pipeline``); the
        other stages are left as they are. Returns once the query frontend runs the new
        policy.
        """
        stage = check_stage_number(stage)
        app = self._api.set_policy(
            app_name,
            policy,
            params,
            reset_state=check_flag(reset_state, "reset_state"),
            stage=stage,
        )
        which = f"application {app_name!r}" + (f" (stage {stage})" if stage != 1 else "")
        self._await_routes(
            lambda apps: _status.stage_policy(apps, app_name, stage) in (None, policy),
            f"the {policy!r} policy of {which}",
        )
        stages = app.get("pipeline") or [app]  # every stage, or the app's own (one stage)
        settings = stages[stage - 1].get("policy_params") if len(stages) >= stage else None
        shown = ", ".join(f"{k}={v!r}" for k, v in dict(settings or {}).items())
        self.report(f"{which} uses the {policy!r} policy ({shown})")
        return app

    def get_policy_state(
        self, app_name: str, uid: str | int | None = None, *, stage: int = 1
    ) -> JSONObject:
        """What the app's policy learned from feedback: per linked model, its chance to
        answer (or weight), update count and mean loss. With ``uid``, what that user sees:
        the app's state plus what their own feedback added. ``stage``: the policy of that
        stage of a pipeline app (from 1)."""
        return self._api.get_policy_state(
            app_name, check_user_id(uid), stage=check_stage_number(stage)
        )

    def reset_policy_state(
        self, app_name: str, uid: str | int | None = None, *, stage: int = 1
    ) -> None:
        """Forget what the app's policy learned (with ``uid``: only that user's part;
        with ``stage``: that stage's policy of a pipeline app, from 1)."""
        user = check_user_id(uid)
        stage = check_stage_number(stage)
        self._api.reset_policy_state(app_name, user, stage=stage)
        whose = f"user {user!r} of " if user is not None else ""
        which = f"stage {stage} of " if stage != 1 else ""
        self.report(f"the learned policy state of {whose}{which}{app_name!r} is reset")

    # ------------------------------------------------------------------ pipelines

    def set_app_pipeline(
        self, app_name: str, stages: Sequence[Any], *, reset_state: bool = False
    ) -> JSONObject:
        """Make the app a pipeline: each query goes through ``stages`` in order, each
        stage's outputs becoming the next one's inputs; the answer is the last stage's.

        Each stage is ``"model"`` or ``"model:version"`` (one arm, policy single), a list
        of arms, a dict ``{"arms": [...], "policy": "exp4", "policy_params": {...}}``
        (or with the settings flat: ``{"arms": [...], "policy": "exp4", "eta": 0.2}``),
        or ``admin.Stage(arms, policy=..., **params)``. Stage 1 is the app's links and
        policy (``link_model_to_app`` and ``set_selection_policy`` work on it); a list of
        one stage makes the app an ordinary one again.

        The whole pipeline is refused, and nothing changed, when a stage is malformed
        (here, before any request) or when the cluster refuses it
        (``InvalidRequestError`` with the management frontend's reason: a model that is
        not deployed, a stage whose input type cannot take what the stage before it
        declares it answers -- ``output_type=`` of the deploy methods). A stage keeps
        what its policy learned while its policy stays the same, unless
        ``reset_state=True``. Returns the app (its ``"pipeline"``: every stage) once the
        query frontend serves the new pipeline. ``docs/pipelines.md`` tells more.
        """
        name = check_name(app_name, "application name")
        body = stages_json(stages)
        app = self._api.set_pipeline(name, body, reset_state=check_flag(reset_state, "reset_state"))
        self._await_routes(
            lambda apps: _status.serves_pipeline(apps, name, body),
            f"the pipeline of {name!r}",
        )
        self.report(f"application {name!r} runs {describe(app.get('pipeline') or body)}")
        return app

    def get_app_pipeline(self, app_name: str) -> list[JSONObject]:
        """Every stage of the app, in order (the first is its links): each
        ``{"arms", "policy", "policy_params", "policy_epoch"}``. An ordinary app has
        one stage. ``NotFoundError`` for an unknown app."""
        return self._api.get_pipeline(check_name(app_name, "application name"))

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
            route = arm_name(model_name, current) if current else ""
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
        """The app (``cache_enabled`` included) with its ``linked_models`` and its
        ``pipeline`` (every stage, ``get_app_pipeline``); ``None`` if there is no such
        app."""
        try:
            return self._api.get_app(name)
        except NotFoundError:
            return None

    def get_linked_models(self, app_name: str) -> list[str]:
        return self._api.get_links(app_name)

    # ------------------------------------------------------------------ API keys

    def create_api_key(self, app_name: str) -> str:
        """A new API key of the app; shown once (only its sha256 is stored).

        Once an app has a key, ``/{app}/predict`` and ``/{app}/update`` need
        ``Authorization: Bearer <key>`` (401 without, 403 with another app's key); an app
        without keys is open to anyone who reaches the query port.
        """
        answer = self._api.create_api_key(check_name(app_name, "application name"))
        self.report(
            f"API key created for {app_name!r} ({answer.get('api_keys')} key(s)); "
            f"its sha256 (to revoke it by) is {answer.get('key_sha256')}"
        )
        return str(answer["key"])

    def revoke_api_key(self, app_name: str, key: str) -> None:
        """Revoke one of the app's keys: the key itself, or its hex sha256. Every query
        frontend refuses it within a second; an app left with no keys is open again."""
        if not isinstance(key, str) or not key.strip():
            raise InvalidRequestError("pass the API key to revoke (or its hex sha256)")
        key = key.strip()
        digest = key.lower() if SHA256_RE.fullmatch(key.lower()) else sha256_hex(key)
        answer = self._api.revoke_api_key(check_name(app_name, "application name"), digest)
        left = int(answer.get("api_keys", 0))
        note = "" if left else "; it has no keys left and is open to anyone again"
        self.report(f"API key {digest[:8]}... of {app_name!r} revoked{note}")

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
        batch_timeout_micros: int = 0,
        memory_limit: int | str = 0,
        output_type: str | None = None,
    ) -> None:
        """Deploy a model bundle directory (``model.json`` + ``func.pkl``).

        The bundle's ``pkgs`` are installed for the replicas when missing. The batching,
        timeout and memory options are those of ``deploy_python_closure`` (and
        ``docs/admin-api.md``), and so is ``output_type``.
        """
        self._require_connected()
        batch = BatchSettings(batch_size, batch_mode, batch_wait_micros, batch_timeout_micros)
        memory = check_memory_limit(memory_limit)
        name, version = check_name(name), check_version(version)
        input_type = check_input_type(input_type)
        declared = check_output_type(output_type)
        num_replicas = check_num_replicas(num_replicas)
        self._deployer().build_and_deploy(
            name,
            version,
            input_type,
            model_data_path,
            labels=check_strings(labels or [], "labels"),
            num_replicas=num_replicas,
            batch=batch,
            memory_limit=memory,
            output_type=declared,
        )

    def deploy_model(
        self,
        name: str,
        version: str,
        input_type: str,
        artifact: str | os.PathLike[str],
        labels: Sequence[str] | None = None,
        num_replicas: int = 1,
        batch_size: int = -1,
        batch_mode: str = "",
        batch_wait_micros: int = 0,
        batch_timeout_micros: int = 0,
        memory_limit: int | str = 0,
        output_type: str | None = None,
    ) -> None:
        """Deploy a prepared bundle directory (any manager), or an image built by a Docker
        or Kubernetes manager (it carries its bundle's digest in the label
        ``schooner.bundle-sha256``; other images are refused).

        Either way the version is recorded with the bundle's sha256, never the path or
        image: the manager finds the bundle by that digest, and replicas refuse any other.
        ``output_type`` is that of ``deploy_python_closure``.
        """
        name, version = check_name(name), check_version(version)
        input_type = check_input_type(input_type)
        declared = check_output_type(output_type)
        num_replicas = check_num_replicas(num_replicas)
        batch = BatchSettings(batch_size, batch_mode, batch_wait_micros, batch_timeout_micros)
        memory = check_memory_limit(memory_limit)
        checked_labels = check_strings(labels or [], "labels")
        if not isinstance(artifact, str | os.PathLike):
            raise InvalidRequestError(
                f"artifact must be a bundle directory or an image name, got {artifact!r}"
            )
        path = os.fspath(artifact)
        if not os.path.isdir(path) and (
            not isinstance(artifact, str) or os.path.isabs(path) or path.startswith((".", "~"))
        ):
            raise InvalidRequestError(
                f"cannot deploy {name}:{version}: there is no bundle directory at {path}; pass "
                "a bundle directory (model.json and func.pkl), or an image a Docker or "
                "Kubernetes manager built"
            )
        if os.path.isdir(path):
            self.build_and_deploy_model(
                name,
                version,
                input_type,
                artifact,
                labels=checked_labels,
                num_replicas=num_replicas,
                batch_size=batch_size,
                batch_mode=batch_mode,
                batch_wait_micros=batch_wait_micros,
                batch_timeout_micros=batch_timeout_micros,
                memory_limit=memory_limit,
                output_type=declared,
            )
            return
        self._require_connected()
        deployer = self._deployer()
        deployer.check_new_version(name, version, input_type)
        self.report(f"taking image {artifact} for {name}:{version}")
        bundle_sha256 = self.cm.adopt_image(name, version, path)
        deployer.deploy(
            name,
            version,
            input_type,
            bundle_sha256,
            labels=checked_labels,
            num_replicas=num_replicas,
            batch=batch,
            memory_limit=memory,
            output_type=declared,
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
        batch_timeout_micros: int = 0,
        output_type: str | None = None,
    ) -> JSONObject:
        """Register a version as current whose replicas run elsewhere (started by hand,
        connecting to the query frontend's RPC port).

        No bundle is recorded for it, so this cluster never starts replicas of it:
        ``set_num_replicas`` and ``start()`` refuse to, saying so. ``artifact`` is kept
        for the signature's sake and must stay empty: the cluster records no path or
        image a client names. ``output_type`` is that of ``deploy_python_closure``.
        """
        if artifact:
            raise InvalidRequestError(
                f"register_model records no artifact ({artifact!r}): the cluster runs only "
                "bundles it stored itself, and never starts replicas of a registered "
                "version. Leave artifact out to register replicas that run elsewhere, or "
                "deploy the bundle directory with deploy_model"
            )
        return self._api.add_model_version(
            check_name(name),
            check_version(version),
            check_input_type(input_type),
            labels=check_strings(labels or [], "labels"),
            batch=BatchSettings(batch_size, batch_mode, batch_wait_micros, batch_timeout_micros),
            set_current=True,
            output_type=check_output_type(output_type),
        )

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
        self._deployer().make_current(name, version)
        self.report(f"{name}:{version} is now current")

    def set_num_replicas(self, name: str, num_replicas: int, version: str | None = None) -> None:
        """Run ``num_replicas`` replicas of a version (the current one by default)."""
        num_replicas = check_num_replicas(num_replicas)
        self._replicas().scale(name, num_replicas, version)

    def stop_models(self, model_names: str | Iterable[str]) -> None:
        """Stop every replica of every version of these models (they stay registered)."""
        self._replicas().stop_models(check_names(model_names))

    def stop_versioned_models(self, model_versions: dict[str, Sequence[str]]) -> None:
        """Stop the replicas of some versions: ``{"model": ["1", "2"]}``."""
        if not isinstance(model_versions, Mapping):
            raise InvalidRequestError(
                f'pass the versions by model, e.g. {{"m": ["1", "2"]}}, got {model_versions!r}'
            )
        checked = {
            check_name(m): [check_version(v) for v in _versions(vs)]
            for m, vs in model_versions.items()
        }
        self._replicas().stop_versions(checked)

    def stop_inactive_model_versions(self, model_names: str | Iterable[str]) -> None:
        """Stop the replicas of every version that is not current."""
        self._replicas().stop_inactive(check_names(model_names))

    def stop_all_model_containers(self) -> None:
        self._replicas().stop_all()

    def get_all_models(self, verbose: bool = False) -> list[Any]:
        """``"name:version"`` of every version, or with ``verbose`` the version records
        (each with ``is_current_version``)."""
        models = self._api.list_models()
        if not verbose:
            return [arm_name(m["name"], v) for m in models for v in m.get("versions", [])]
        out = []
        for model in models:
            for version in model.get("versions", []):
                record = self._api.get_model_version(model["name"], version)
                record["is_current_version"] = version == model.get("current_version")
                out.append(record)
        return out

    def get_model(self, name: str) -> JSONObject | None:
        """The model: its ``versions`` (in registration order) and ``current_version``;
        ``None`` if there is no such model."""
        try:
            return self._api.get_model(check_name(name))
        except (NotFoundError, InvalidRequestError):
            return None

    def unregister_model_version(self, name: str, version: str | int) -> None:
        """Delete a version's record (the last version takes the model with it), then
        stop its replicas. Refused with ``ConflictError`` while an app depends on it:
        pinned to it, or linked to the model whose current (or last) version it is (in
        any stage of a pipeline); refused, its replicas keep serving."""
        name, version = check_name(name), check_version(version)
        self._api.delete_model_version(name, version)  # refused: nothing stopped
        self.cm.stop_models(name, [version])
        self.report(f"{name}:{version} is unregistered")

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

    # ------------------------------------------------------------------ what it does

    def get_overview(self, window_s: int = OVERVIEW_WINDOW_S) -> Overview:
        """What the cluster is doing (``GET /admin/overview``; the numbers of the
        dashboard and of ``schooner top``): per app its throughput, latency percentiles,
        default and error rates; per model its versions, replicas, batch size, queue
        depth and throughput; the prediction cache and the query frontends. Each comes
        with a series of one point per ``interval_s`` over the last ``window_s`` seconds
        (10 to 3600). The shapes: ``admin._overview``."""
        window = _check_window(window_s)
        return cast(Overview, self._telemetry(lambda api: api.get_overview(window)))

    def get_app_activity(self, app_name: str, window_s: int = OVERVIEW_WINDOW_S) -> AppActivity:
        """What the app's policy did over the last ``window_s`` seconds
        (``GET /admin/apps/{app}/activity``): its weights or probabilities per linked
        model over time, and its recent default answers with their reasons, newest
        first. ``NotFoundError`` for an unknown app."""
        name = check_name(app_name, "application name")
        window = _check_window(window_s)
        return cast(AppActivity, self._telemetry(lambda api: api.get_app_activity(name, window)))

    def _telemetry(self, call: Callable[[ManagementClient], JSONObject]) -> JSONObject:
        try:
            return call(self._api)
        except NotFoundError as exc:
            if "no such endpoint" not in str(exc):
                raise
            raise NotFoundError(
                f"{exc}: this management frontend predates the telemetry endpoints; "
                "upgrade it (and the query frontends, which write the numbers)",
                status_code=exc.status_code,
                code=exc.code,
            ) from exc

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
        with self._query_client() as client:
            return client.get_object("/status")

    def get_logs(self, logging_dir: str | os.PathLike[str]) -> list[str]:
        """Copy every component's log into ``logging_dir``; the paths written."""
        return self.cm.get_logs(logging_dir)

    # ------------------------------------------------------------------ delegation

    def _deployer(self) -> Deployer:
        return Deployer(
            self._api,
            self.cm,
            self.report,
            wait_for_replicas=self._wait_for_replicas,
            await_routes=self._await_routes,
        )

    def _replicas(self) -> Replicas:
        return Replicas(self._api, self.cm, self.report, wait_for_replicas=self._wait_for_replicas)

    def _wait_for_replicas(self, name: str, version: str, num_replicas: int) -> None:
        """Wait up to ``deploy_timeout`` for the replicas to connect (``_wait``)."""
        wait_for_replicas(
            self._api,
            self.cm,
            name,
            version,
            num_replicas,
            timeout=self.deploy_timeout,
            report=self.report,
        )

    def _await_routes(self, done: RoutesDone, what: str) -> None:
        """Wait up to ``timeout`` for the query frontend to route as changed (``_wait``)."""
        with self._query_client() as client:
            await_routes(client, done, what, timeout=self.timeout)

    def _query_client(self) -> JSONClient:
        return JSONClient(
            self.cm.query_url,
            service="query frontend",
            timeout=self.timeout,
            transport=self._transport,
            verify=self.cm.tls_verify(),
            token=self._token,
            token_source=self._token_source,
        )


def _check_window(window_s: object) -> int:
    """A telemetry window in whole seconds, within what the management frontend keeps."""
    if (
        isinstance(window_s, bool)
        or not isinstance(window_s, int)
        or not MIN_WINDOW_S <= window_s <= MAX_WINDOW_S
    ):
        raise InvalidRequestError(
            f"window_s must be a whole number of seconds from {MIN_WINDOW_S} to "
            f"{MAX_WINDOW_S}, got {window_s!r}"
        )
    return window_s


def _versions(versions: object) -> list[object]:
    """The versions of one model in ``stop_versioned_models``: one, or a list of them."""
    if isinstance(versions, str | int):
        return [versions]
    if isinstance(versions, list | tuple | set):
        return list(versions)
    raise InvalidRequestError(f"pass a model's versions as a list, got {versions!r}")
