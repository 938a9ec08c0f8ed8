"""The errors the admin client raises: one tree, every message saying what to do.

    SchoonerError
     ├── NotConnectedError            a Connection method called before start() or connect()
     ├── ClusterNotRunningError       connect() found no running Schooner to attach to
     ├── RequestTimeoutError          a frontend did not answer within the timeout
     ├── ManagementAPIError           a frontend answered with an error (or not at all)
     │    ├── AuthenticationError     401: the admin token is missing or not the cluster's
     │    │    └── APIKeyError        401/403 from predict or update: the app needs one
     │    │                           of its API keys (QueryClient(api_key=...))
     │    ├── InvalidRequestError     a bad argument, refused by the client before any
     │    │                           request (a name, a port, a count) or by a frontend (400)
     │    ├── NotFoundError           404: unknown app, model or version
     │    ├── ConflictError           409: already exists, still linked, types differ, ...
     │    ├── ServiceUnavailableError 503, or the frontend cannot be reached
     │    ├── PredictionError         the model failed on the query: it raised, or the
     │    │                           input is quarantined (500, 422 from predict/update)
     │    └── TLSVerificationError    the frontend's HTTPS certificate is not trusted:
     │                                pass the CA that signed it (tls_ca=)
     ├── DeployError                  a model version could not be built or started
     │    ├── IncompatibleModelError  pickled under a Python/cloudpickle the replicas lack
     │    └── ModelStartError         a replica exited, or did not connect in time
     └── ContainerManagerError        a process or container could not be started/stopped,
          │                           or the files it needs could not be read or written
          └── ClusterAlreadyRunningError   start() on a data dir whose cluster is running

Errors of the libraries underneath -- httpx, psutil, subprocess, ``OSError`` from files
and sockets, the docker SDK (and ``requests`` under it), the kubernetes client (and
``urllib3`` under it), cloudpickle and ``model_container.bundle`` -- are translated where
they are caught, with ``raise ... from exc``: callers only ever need to catch
``SchoonerError``. ``tests/unit/test_admin_errors.py`` checks that every ``raise`` in the
package names one of these classes.
"""

from __future__ import annotations

__all__ = [
    "APIKeyError",
    "AuthenticationError",
    "ClusterAlreadyRunningError",
    "ClusterNotRunningError",
    "ConflictError",
    "ContainerManagerError",
    "DeployError",
    "IncompatibleModelError",
    "InvalidRequestError",
    "ManagementAPIError",
    "ModelStartError",
    "NotConnectedError",
    "NotFoundError",
    "PredictionError",
    "RequestTimeoutError",
    "SchoonerError",
    "ServiceUnavailableError",
    "TLSVerificationError",
]


class SchoonerError(Exception):
    """Base class of every error the admin client raises."""


class NotConnectedError(SchoonerError):
    """A Connection method that needs a running cluster was called before start()/connect()."""


class ClusterNotRunningError(SchoonerError):
    """connect() found no running Schooner cluster where it looked."""


class RequestTimeoutError(SchoonerError):
    """A frontend did not answer a request within the timeout."""


class ManagementAPIError(SchoonerError):
    """A frontend answered a request with an error.

    ``status_code`` is the HTTP status (``None`` when there was no answer at all) and
    ``code`` the ``"error"`` field of the body (``"invalid"``, ``"not_found"``, ...).
    """

    def __init__(self, message: str, *, status_code: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


class AuthenticationError(ManagementAPIError):
    """401: the frontend did not take the admin token this client sent.

    The message says where the client read the token (``$SCHOONER_ADMIN_TOKEN``, or the
    cluster's own copy: ``<data_dir>/admin-token`` locally) and how to fix it; it never
    shows the token.
    """


class APIKeyError(AuthenticationError):
    """401 or 403 from ``/{app}/predict`` or ``/{app}/update``: the app has API keys and
    this request carried none, a revoked one (401) or another app's (403). Pass one of the
    app's keys (``conn.create_api_key(app)``) as ``QueryClient(..., api_key=key)``; the
    message never shows the key that was sent."""


class InvalidRequestError(ManagementAPIError):
    """A bad argument: the message names it and says what is allowed.

    Raised by the client before any request is sent (a name or version that breaks the
    naming rules, a port out of range, a negative replica count, a value that is not
    JSON, ...; ``status_code`` is then ``None``), or by a frontend that refused a field
    (400, 413, 422).
    """


class NotFoundError(ManagementAPIError):
    """404: unknown app, model or version."""


class ConflictError(ManagementAPIError):
    """409: already exists, still linked, input types differ, ..."""


class ServiceUnavailableError(ManagementAPIError):
    """503 (Redis is down), or the frontend cannot be reached at all."""


class PredictionError(ManagementAPIError):
    """The query frontend could not answer a query because of the query itself: the model
    raised on it or returned the wrong number of outputs (500 ``model_error``: the message
    names the model, version, replica and exception type), or the input hung or crashed
    replicas before and is quarantined for a while (422 ``input_quarantined``), or a
    pipeline stage answered it with what the next stage cannot take (502
    ``pipeline_output_rejected``). Sending the same input again does not help; the
    replica's log (``get_logs()``) says more."""


class TLSVerificationError(ManagementAPIError):
    """A frontend serves HTTPS with a certificate this client does not trust (or one not
    issued for the address dialled). Verification is never turned off: pass the manager
    ``tls_ca=`` the CA certificate that signed the frontends' (or set SCHOONER_TLS_CA)."""


class DeployError(SchoonerError):
    """A model version could not be built, registered or started."""


class IncompatibleModelError(DeployError):
    """The model was pickled under a Python/cloudpickle the replicas do not run."""


class ModelStartError(DeployError):
    """A replica exited while starting, or did not connect before the deadline."""


class ContainerManagerError(SchoonerError):
    """The container manager could not start, stop or inspect a process or container, or
    could not read or write the files it keeps (data directory, logs, build contexts)."""


class ClusterAlreadyRunningError(ContainerManagerError):
    """start() was called for a cluster that is already running."""
