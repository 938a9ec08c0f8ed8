"""Deploy a Python function as a model: pickle it into a bundle and deploy the bundle."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from admin._connection import Connection
from admin._names import check_input_type
from admin.exceptions import DeployError


def deploy_python_closure(
    conn: Connection,
    name: str,
    version: str,
    input_type: str,
    func: Callable[..., Any],
    pkgs_to_install: Sequence[str] | None = None,
    num_replicas: int = 1,
    batch_size: int = -1,
    labels: Sequence[str] | None = None,
    batch_mode: str = "",
    batch_wait_micros: int = 0,
) -> None:
    """Deploy ``func`` (anything cloudpickle can pickle) as model ``name:version``.

    ``func`` receives a batch: for numeric input types a 2-d numpy array (one row per
    query) when the inputs have equal lengths, else a list of 1-d arrays; a list of
    ``bytes``, ``str`` or decoded JSON values otherwise. It returns one JSON-serialisable
    output per input. ``pkgs_to_install`` (pip requirement strings) are installed for
    the replicas when they are missing there.

    Batching: ``batch_size`` caps a batch (-1: the query frontend's default);
    ``batch_mode`` picks how batch sizes are chosen ("aimd", "latency_model", "fixed"; ""
    means "fixed" when ``batch_size`` > 0, else "aimd"); ``batch_wait_micros`` lets a free
    replica wait that long for a batch to fill (0: send at once).
    """
    from model_container.bundle import BundleError, write_closure_bundle

    input_type = check_input_type(input_type)
    with tempfile.TemporaryDirectory(prefix="schooner-bundle-") as tmp:
        bundle = Path(tmp) / "bundle"
        try:
            write_closure_bundle(bundle, func, input_type, pkgs_to_install or ())
        except BundleError as exc:
            raise DeployError(
                f"cannot deploy {name}:{version}: {exc}. Make sure the function and what it "
                "refers to can be pickled (no open files, sockets or locks)"
            ) from exc
        conn.build_and_deploy_model(
            name,
            version,
            input_type,
            bundle,
            labels=labels,
            num_replicas=num_replicas,
            batch_size=batch_size,
            batch_mode=batch_mode,
            batch_wait_micros=batch_wait_micros,
        )
