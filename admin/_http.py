"""A small typed client for the frontends' JSON APIs, over ``httpx.Client``.

This is the only module that talks HTTP and the only place where a status code or an
httpx error becomes a Schooner exception (``error_for_response`` and ``_send``): the
verbs in ``ManagementClient`` are one line each. Every request has a timeout (5 s by
default). A client holds a pool of connections: use it as a context manager (as
``httpx.Client``), or ``close()`` it.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final
from urllib.parse import quote, urlencode

import httpx

from admin._closing import Closing
from admin._names import check_object, check_strings, checked
from admin.exceptions import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    ManagementAPIError,
    NotFoundError,
    RequestTimeoutError,
    ServiceUnavailableError,
    TLSVerificationError,
)
from management_frontend.state import rules

DEFAULT_TIMEOUT: Final = 5.0

JSONObject = dict[str, Any]

_STATUS_ERRORS: Final[dict[int, type[ManagementAPIError]]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: InvalidRequestError,
    422: InvalidRequestError,  # a body the web framework itself refused
    503: ServiceUnavailableError,
}
_MAX_ERROR_TEXT: Final = 500


@dataclass(frozen=True)
class BatchSettings:
    """How the query frontend batches a model version's queries (``docs/admin-api.md``).

    ``batch_size``: the cap, -1 for the frontend's default. ``batch_mode``: "aimd",
    "latency_model", "fixed", or "" for Clipper's meaning ("fixed" when ``batch_size`` > 0,
    else "aimd"). ``batch_wait_micros``: how long a free replica may wait to fill a batch;
    0 is off. ``batch_timeout_micros``: how long one batch may run before its replica
    counts as stuck and is replaced; 0 derives it from the apps' tightest objective. A bad
    value raises ``InvalidRequestError`` on construction.
    """

    batch_size: int = -1
    batch_mode: str = ""
    batch_wait_micros: int = 0
    batch_timeout_micros: int = 0

    def __post_init__(self) -> None:
        # The contract's rules, so that a deploy fails before it builds anything.
        checked(rules.batch_mode, self.batch_mode)
        checked(rules.batch_wait_micros, self.batch_wait_micros)
        checked(rules.batch_timeout_micros, self.batch_timeout_micros)

    def to_json(self) -> JSONObject:
        return asdict(self)


def error_for_response(
    method: str, path: str, response: httpx.Response, token_source: str = ""
) -> ManagementAPIError:
    """The exception for an error answer; the server's message is kept verbatim.

    A 401 also says where this client read the admin token (``token_source``).

    The management API answers ``{"error": code, "message": text}``; anything else (a
    proxy's HTML page, a framework's ``{"detail": ...}``) is quoted, shortened.
    """
    status = response.status_code
    code, message = "", ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = str(body.get("error", ""))
        message = str(body.get("message") or body.get("detail") or "")
    if not message:
        message = response.text.strip()[:_MAX_ERROR_TEXT] or response.reason_phrase
    cls = _STATUS_ERRORS.get(status, ManagementAPIError)
    if cls is ManagementAPIError:
        message += " (unexpected answer: the frontend's log may say more; see get_logs())"
    if cls is AuthenticationError:
        message += (
            f". This client sent the admin token read from {token_source or 'nowhere'}: if "
            "the token was rotated, connect again (the cluster's copy is read then), or set "
            "SCHOONER_ADMIN_TOKEN to the current one (or unset it to use the cluster's)"
        )
    label = f"{status} {code}" if code else str(status)
    return cls(f"{method} {path} failed ({label}): {message}", status_code=status, code=code)


def tls_context(ca: str | None) -> ssl.SSLContext | bool:
    """How a client verifies HTTPS: against the CA certificate(s) in the PEM file ``ca``,
    else the system's trust store (``True``). Never off."""
    if not ca:
        return True
    try:
        return ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidRequestError(
            f"cannot load the CA certificate {ca!r} ({exc}): pass tls_ca= (or SCHOONER_TLS_CA) "
            "a PEM file holding the CA that signed the frontends' certificate"
        ) from exc


def _untrusted(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure under an httpx error, if that is what it is."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _not_trusted(what: str, error: ssl.SSLCertVerificationError) -> TLSVerificationError:
    return TLSVerificationError(
        f"{what}: the frontend serves HTTPS with a certificate this client does not trust "
        f"({error.verify_message or error.reason}); pass the container manager tls_ca= the "
        "CA certificate (PEM file) that signed it, or set SCHOONER_TLS_CA. The certificate "
        "must also name the address dialled",
        code="tls",
    )


class JSONClient(Closing):
    """JSON requests to one frontend, with errors translated to Schooner exceptions.

    ``with JSONClient(url) as client:`` closes its connections on exit. ``token``, the
    cluster's admin token, goes with every request as ``Authorization: Bearer``;
    ``token_source`` says where it was read, for the message of an
    ``AuthenticationError``. Neither a repr nor an error ever shows the token.
    """

    def __init__(
        self,
        base_url: str,
        *,
        service: str = "management frontend",
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
        token: str | None = None,
        token_source: str = "",
    ) -> None:
        """``verify``: how an https ``base_url`` is verified (``tls_context``)."""
        self.base_url = base_url
        self.service = service
        self.timeout = timeout
        self.token_source = token_source
        try:
            self._client = httpx.Client(
                base_url=base_url,
                timeout=httpx.Timeout(timeout),
                transport=transport,
                verify=verify,
            )
            self.set_token(token, token_source)
        except httpx.InvalidURL as exc:
            raise InvalidRequestError(
                f"{base_url!r} is not a URL of the {service}: {exc}; check the host and "
                "port given to the container manager"
            ) from exc

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.service} at {self.base_url}>"

    def set_token(self, token: str | None, source: str = "") -> None:
        """Send ``token`` from now on (``None``: no Authorization header)."""
        self.token_source = source or self.token_source
        if token is None:
            self._client.headers.pop("Authorization", None)
            return
        try:
            self._client.headers["Authorization"] = f"Bearer {token}"
        except (UnicodeEncodeError, ValueError):
            raise InvalidRequestError(
                f"the admin token read from {self.token_source or 'the caller'} is not a "
                "valid header value: check it for stray characters"
            ) from None

    def close(self) -> None:
        """Close the pooled connections (idempotent)."""
        self._client.close()

    @property
    def is_closed(self) -> bool:
        return self._client.is_closed

    def request(self, method: str, path: str, body: object = None) -> Any:
        """Send a request; the decoded JSON answer, ``None`` for an empty one."""
        response = self._send(method, path, body)
        if response.is_error:
            raise error_for_response(method, path, response, self.token_source)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ManagementAPIError(
                f"{method} {path}: the {self.service} at {self.base_url} answered "
                f"{response.status_code} with a body that is not JSON; is something else "
                "listening on that port?",
                status_code=response.status_code,
            ) from exc

    def _build(self, method: str, path: str, body: object) -> httpx.Request:
        """The request, its body encoded; a body that is not JSON is the caller's error."""
        try:
            if body is None:
                return self._client.build_request(method, path)
            return self._client.build_request(method, path, json=body)
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(
                f"{method} {path}: the request is not valid JSON ({exc}); pass plain JSON "
                "values: str, int, finite float, bool, None, and lists and dicts of them "
                "(e.g. numpy values converted with .tolist())"
            ) from exc
        except httpx.InvalidURL as exc:
            raise InvalidRequestError(f"{method} {path}: not a valid URL ({exc})") from exc

    def _send(self, method: str, path: str, body: object) -> httpx.Response:
        where = f"the {self.service} at {self.base_url}"
        request = self._build(method, path, body)
        try:
            return self._client.send(request)
        except httpx.TimeoutException as exc:
            raise RequestTimeoutError(
                f"{where} did not answer {method} {path} within {self.timeout:g} s: it may "
                "be overloaded or stuck; check `schooner status` and its log (get_logs())"
            ) from exc
        except httpx.TransportError as exc:
            if (untrusted := _untrusted(exc)) is not None:
                raise _not_trusted(f"{where} ({method} {path})", untrusted) from exc
            raise ServiceUnavailableError(
                f"cannot reach {where} ({method} {path}: {exc or type(exc).__name__}): is "
                "Schooner running? Start it with Connection.start() or `schooner start`, "
                "or check `schooner status`",
                code="unreachable",
            ) from exc
        except httpx.HTTPError as exc:
            raise ManagementAPIError(f"{method} {path} to {where} failed: {exc}") from exc

    def get_object(self, path: str) -> JSONObject:
        return _object(self.request("GET", path), path)


def _object(value: object, path: str) -> JSONObject:
    if not isinstance(value, dict):
        raise ManagementAPIError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _list(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise ManagementAPIError(f"{path}: expected a JSON list, got {type(value).__name__}")
    return value


def _seg(name: str) -> str:
    """A name as one path segment: never lets a name add path components."""
    if not isinstance(name, str):
        raise InvalidRequestError(f"a name must be a string, got {name!r}")
    return quote(name, safe="")


def _query(**params: str | None) -> str:
    """``?a=1&b=2`` of the parameters that are given, encoded ("" for none)."""
    given = {k: v for k, v in params.items() if v is not None}
    return f"?{urlencode(given)}" if given else ""


def _stage_param(stage: int) -> str | None:
    """The ``stage`` query parameter: left out for the first stage (the API's default)."""
    return None if stage == 1 else str(stage)


class ManagementClient(JSONClient):
    """The management REST API (``docs/admin-api.md``), one method per endpoint."""

    def healthz(self) -> JSONObject:
        return self.get_object("/healthz")

    # ------------------------------------------------------------------ apps and links

    def list_apps(self) -> list[JSONObject]:
        return _list(self.request("GET", "/admin/apps"), "/admin/apps")

    def add_app(
        self,
        name: str,
        input_type: str,
        default_output: object,
        slo_micros: int,
        policy: str | None = None,
        cache_enabled: bool | None = None,
        policy_params: Mapping[str, Any] | None = None,
        expose_model_errors: bool | None = None,
    ) -> JSONObject:
        body: JSONObject = {
            "name": name,
            "input_type": input_type,
            "default_output": default_output,
            "slo_micros": slo_micros,
        }
        if policy is not None:
            body["policy"] = policy
        if policy_params is not None:
            body["policy_params"] = check_object(policy_params, "policy_params")
        if cache_enabled is not None:
            body["cache_enabled"] = cache_enabled
        if expose_model_errors:  # sent only when on: the default needs no new server
            body["expose_model_errors"] = True
        return _object(self.request("POST", "/admin/apps", body), "/admin/apps")

    def get_app(self, name: str) -> JSONObject:
        return self.get_object(f"/admin/apps/{_seg(name)}")

    def set_app_cache(self, name: str, enabled: bool) -> JSONObject:
        path = f"/admin/apps/{_seg(name)}/cache"
        return _object(self.request("PUT", path, {"cache_enabled": enabled}), path)

    def delete_app(self, name: str) -> None:
        self.request("DELETE", f"/admin/apps/{_seg(name)}")

    def set_policy(
        self,
        app: str,
        policy: str,
        params: Mapping[str, Any] | None = None,
        *,
        reset_state: bool = False,
        stage: int = 1,
    ) -> JSONObject:
        """``stage``: which stage of the app's pipeline, from 1 (sent only when not 1,
        so that a management frontend without pipelines takes today's requests)."""
        path = f"/admin/apps/{_seg(app)}/policy"
        body: JSONObject = {
            "policy": policy,
            "params": dict(params or {}),
            "reset_state": reset_state,
        }
        if stage != 1:
            body["stage"] = stage
        return _object(self.request("PUT", path, body), path)

    def get_policy_state(self, app: str, uid: str | None = None, *, stage: int = 1) -> JSONObject:
        query = _query(uid=uid, stage=_stage_param(stage))
        return self.get_object(f"/admin/apps/{_seg(app)}/policy/state{query}")

    def reset_policy_state(self, app: str, uid: str | None = None, *, stage: int = 1) -> None:
        query = _query(uid=uid, stage=_stage_param(stage))
        self.request("DELETE", f"/admin/apps/{_seg(app)}/policy/state{query}")

    def get_pipeline(self, app: str) -> list[JSONObject]:
        """Every stage of the app, in order (``{"app": ..., "stages": [...]}``'s stages)."""
        path = f"/admin/apps/{_seg(app)}/pipeline"
        answer = self.get_object(path)
        return [_object(stage, path) for stage in _list(answer.get("stages"), path)]

    def set_pipeline(
        self, app: str, stages: Sequence[Mapping[str, Any]], *, reset_state: bool = False
    ) -> JSONObject:
        """Replace the app's stages (``_pipelines.stages_json`` shapes them); the app."""
        path = f"/admin/apps/{_seg(app)}/pipeline"
        body = {"stages": [dict(s) for s in stages], "reset_state": reset_state}
        return _object(self.request("PUT", path, body), path)

    def get_links(self, app: str) -> list[str]:
        path = f"/admin/apps/{_seg(app)}/links"
        return [str(m) for m in _list(self.request("GET", path), path)]

    def add_link(self, app: str, model: str, version: str | None = None) -> list[str]:
        """Link the model (it follows its current version), or pin ``version`` of it."""
        path = f"/admin/apps/{_seg(app)}/links"
        body: JSONObject = {"model_name": model}
        if version is not None:
            body["version"] = version
        return [str(m) for m in _list(self.request("POST", path, body), path)]

    def delete_link(self, app: str, model: str, version: str | None = None) -> None:
        path = f"/admin/apps/{_seg(app)}/links/{_seg(model)}{_query(version=version)}"
        self.request("DELETE", path)

    # ------------------------------------------------------------------ models

    def list_models(self) -> list[JSONObject]:
        return _list(self.request("GET", "/admin/models"), "/admin/models")

    def add_model_version(
        self,
        name: str,
        version: str,
        input_type: str,
        *,
        bundle_sha256: str = "",
        labels: Sequence[str] = (),
        batch: BatchSettings = BatchSettings(),
        num_replicas: int = 0,
        runtime: dict[str, str] | None = None,
        pkgs: Sequence[str] = (),
        set_current: bool = True,
        memory_limit: int = 0,
        output_type: str = "",
    ) -> JSONObject:
        """``output_type``: what the version's outputs are ("" undeclared; sent only
        when declared, so that a management frontend without pipelines takes it)."""
        body: JSONObject = {
            "name": name,
            "version": version,
            "input_type": input_type,
            "bundle_sha256": bundle_sha256,
            "labels": check_strings(labels, "labels"),
            **batch.to_json(),
            "num_replicas": num_replicas,
            "memory_limit": memory_limit,
            "runtime": dict(runtime or {}),
            "pkgs": check_strings(pkgs, "pkgs"),
            "set_current": set_current,
        }
        if output_type:
            body["output_type"] = output_type
        return _object(self.request("POST", "/admin/models", body), "/admin/models")

    def get_model(self, name: str) -> JSONObject:
        return self.get_object(f"/admin/models/{_seg(name)}")

    def get_model_version(self, name: str, version: str) -> JSONObject:
        return self.get_object(f"/admin/models/{_seg(name)}/versions/{_seg(version)}")

    def delete_model_version(self, name: str, version: str) -> None:
        self.request("DELETE", f"/admin/models/{_seg(name)}/versions/{_seg(version)}")

    def set_current_version(self, name: str, version: str) -> JSONObject:
        path = f"/admin/models/{_seg(name)}/current_version"
        return _object(self.request("PUT", path, {"version": version}), path)

    def set_num_replicas(self, name: str, version: str, num_replicas: int) -> JSONObject:
        path = f"/admin/models/{_seg(name)}/versions/{_seg(version)}/replicas"
        return _object(self.request("PUT", path, {"num_replicas": num_replicas}), path)

    def list_replicas(self) -> list[JSONObject]:
        return _list(self.request("GET", "/admin/replicas"), "/admin/replicas")

    # ------------------------------------------------------------------ telemetry

    def get_overview(self, window_s: int) -> JSONObject:
        return self.get_object(f"/admin/overview{_query(window=str(window_s))}")

    def get_app_activity(self, app: str, window_s: int) -> JSONObject:
        return self.get_object(f"/admin/apps/{_seg(app)}/activity{_query(window=str(window_s))}")

    # ------------------------------------------------------------------ API keys

    def create_api_key(self, app: str) -> JSONObject:
        path = f"/admin/apps/{_seg(app)}/keys"
        return _object(self.request("POST", path), path)

    def revoke_api_key(self, app: str, key_sha256: str) -> JSONObject:
        path = f"/admin/apps/{_seg(app)}/keys/{_seg(key_sha256)}"
        return _object(self.request("DELETE", path), path)
