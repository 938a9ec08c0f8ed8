"""Deploy a fitted scikit-learn estimator (anything with ``predict``) as a model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from admin._connection import Connection
from admin.deployers.python import deploy_python_closure
from admin.exceptions import InvalidRequestError


def deploy_sklearn_model(
    conn: Connection,
    name: str,
    version: str,
    input_type: str,
    model: Any,
    pkgs_to_install: Sequence[str] | None = None,
    num_replicas: int = 1,
    batch_size: int = -1,
    labels: Sequence[str] | None = None,
    batch_mode: str = "",
    batch_wait_micros: int = 0,
    batch_timeout_micros: int = 0,
    memory_limit: int | str = 0,
    output_type: str | None = None,
) -> None:
    """Deploy ``model.predict`` as model ``name:version``; outputs are plain JSON values.

    ``pkgs_to_install`` defaults to the scikit-learn version the model was fitted with,
    pinned: an estimator pickled under one scikit-learn may not load under another. The
    batching, timeout and memory options, and ``output_type`` (e.g. ``"doubles"`` for a
    regressor feeding a later pipeline stage), are those of ``deploy_python_closure``.
    """
    predict = getattr(model, "predict", None)
    if not callable(predict):
        raise InvalidRequestError(
            f"{type(model).__name__} has no predict method: pass a fitted estimator"
        )
    if pkgs_to_install is None:
        try:
            import sklearn
        except ImportError:
            raise InvalidRequestError(
                "scikit-learn is not installed here, so the version the replicas need "
                "cannot be pinned: pass pkgs_to_install=['scikit-learn==X.Y'] (or [])"
            ) from None
        pkgs_to_install = [f"scikit-learn=={sklearn.__version__}"]

    def predict_batch(inputs: Any) -> list[Any]:
        return list(predict(inputs).tolist())

    deploy_python_closure(
        conn,
        name,
        version,
        input_type,
        predict_batch,
        pkgs_to_install=pkgs_to_install,
        num_replicas=num_replicas,
        batch_size=batch_size,
        labels=labels,
        batch_mode=batch_mode,
        batch_wait_micros=batch_wait_micros,
        batch_timeout_micros=batch_timeout_micros,
        memory_limit=memory_limit,
        output_type=output_type,
    )
