"""Schooner's admin client: start, connect to and drive a Schooner cluster.

    from admin import Connection, LocalContainerManager, QueryClient
    from admin.deployers.python import deploy_python_closure

    conn = Connection(LocalContainerManager())
    conn.start()
    conn.register_application(name="pipeline", input_type="doubles",
                              default_output="-1.0", slo_micros=100000)
    deploy_python_closure(conn, name="m", version="1", input_type="doubles", func=f)
    conn.link_model_to_app(app_name="pipeline", model_name="m")
    # or chain models: conn.set_app_pipeline("pipeline", ["featuriser", "m"])

    with QueryClient.for_connection(conn) as client:
        client.predict("pipeline", [1.0, 2.0]).output

Everything public is named in ``__all__``; the modules starting with ``_`` are private.
Every error is a ``SchoonerError`` (the tree is in ``admin.exceptions``).
"""

from __future__ import annotations

from admin._connection import Connection
from admin._pipelines import Stage
from admin.container_managers.base import ContainerManager, ReplicaState
from admin.container_managers.docker import DockerContainerManager
from admin.container_managers.kubernetes import KubernetesContainerManager
from admin.container_managers.local import LocalContainerManager
from admin.exceptions import (
    APIKeyError,
    AuthenticationError,
    ClusterAlreadyRunningError,
    ClusterNotRunningError,
    ConflictError,
    ContainerManagerError,
    DeployError,
    IncompatibleModelError,
    InvalidRequestError,
    ManagementAPIError,
    ModelStartError,
    NotConnectedError,
    NotFoundError,
    PredictionError,
    RequestTimeoutError,
    SchoonerError,
    ServiceUnavailableError,
    TLSVerificationError,
)
from admin.query_client import AsyncQueryClient, Prediction, QueryClient, UpdateResult

__all__ = [
    "APIKeyError",
    "AsyncQueryClient",
    "AuthenticationError",
    "ClusterAlreadyRunningError",
    "ClusterNotRunningError",
    "ConflictError",
    "Connection",
    "ContainerManager",
    "ContainerManagerError",
    "DeployError",
    "DockerContainerManager",
    "IncompatibleModelError",
    "InvalidRequestError",
    "KubernetesContainerManager",
    "LocalContainerManager",
    "ManagementAPIError",
    "ModelStartError",
    "NotConnectedError",
    "NotFoundError",
    "Prediction",
    "PredictionError",
    "QueryClient",
    "ReplicaState",
    "RequestTimeoutError",
    "SchoonerError",
    "ServiceUnavailableError",
    "Stage",
    "TLSVerificationError",
    "UpdateResult",
]

__version__ = "0.1.0"
