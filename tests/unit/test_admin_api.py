"""The admin package's public surface: ``__all__`` is pinned, and one exception tree."""

from __future__ import annotations

import admin
import admin.exceptions
from admin import (
    ConflictError,
    InvalidRequestError,
    ManagementAPIError,
    NotFoundError,
    SchoonerError,
    ServiceUnavailableError,
)

PUBLIC_API = [
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


def test_all_is_pinned() -> None:
    assert admin.__all__ == PUBLIC_API


def test_every_public_name_exists() -> None:
    for name in admin.__all__:
        assert getattr(admin, name) is not None, name


def test_every_exception_is_a_schooner_error_and_exported() -> None:
    for name in admin.exceptions.__all__:
        cls = getattr(admin.exceptions, name)
        assert issubclass(cls, SchoonerError), name
        assert name in admin.__all__, name


def test_exception_tree_matches_the_docstring() -> None:
    doc = admin.exceptions.__doc__ or ""
    for name in admin.exceptions.__all__:
        assert name in doc, f"{name} is missing from the tree in exceptions.py"
    for cls in (InvalidRequestError, NotFoundError, ConflictError, ServiceUnavailableError):
        assert issubclass(cls, ManagementAPIError)


def test_deployers_are_importable_by_their_documented_paths() -> None:
    from admin.deployers.python import deploy_python_closure
    from admin.deployers.sklearn import deploy_sklearn_model

    assert callable(deploy_python_closure)
    assert callable(deploy_sklearn_model)
