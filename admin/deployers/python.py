"""Deploy a Python function as a model: pickle it into a bundle and deploy the bundle."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from admin._connection import Connection
from admin._files import os_errors
from admin._names import check_input_type, check_output_type
from admin.exceptions import DeployError, InvalidRequestError


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
    batch_timeout_micros: int = 0,
    memory_limit: int | str = 0,
    output_type: str | None = None,
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

    Replacement: a batch running longer than ``batch_timeout_micros`` (0: derived from the
    tightest SLO of the model's apps, at least a second) counts as stuck, and its replica
    is replaced. ``memory_limit`` (bytes, or a size like ``"1Gi"``; 0: none) caps what one
    replica may use; a replica that hits it is restarted.

    ``output_type`` declares what each output is, named as an input type (e.g.
    ``"doubles"`` for a list of numbers, ``"strings"`` for a string): a pipeline that
    feeds these outputs to a stage that cannot take them is then refused when it is set
    (``Connection.set_app_pipeline``), not at the first query. Left out, nothing is
    declared and each output is checked when it arrives.
    """
    from model_container.bundle import BundleError, write_closure_bundle

    input_type = check_input_type(input_type)
    declared = check_output_type(output_type)
    pkgs = _requirements(pkgs_to_install)
    with _bundle_dir(name, version) as bundle:
        try:
            with os_errors(f"write the bundle of {name}:{version} to {bundle}", DeployError):
                write_closure_bundle(bundle, func, input_type, pkgs)
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
            batch_timeout_micros=batch_timeout_micros,
            memory_limit=memory_limit,
            output_type=declared,
        )


def _requirements(pkgs_to_install: Sequence[str] | None) -> list[str]:
    """``pkgs_to_install`` as a list of requirement strings, or say what to pass."""
    if pkgs_to_install is None:
        return []
    if isinstance(pkgs_to_install, Iterable) and not isinstance(pkgs_to_install, str | bytes):
        pkgs = list(pkgs_to_install)
        if all(isinstance(p, str) for p in pkgs):
            return pkgs
    raise InvalidRequestError(
        "pkgs_to_install must be a list of pip requirement strings, e.g. "
        f"['scikit-learn', 'pandas>=2'], got {pkgs_to_install!r}"
    )


@contextmanager
def _bundle_dir(name: str, version: str) -> Iterator[Path]:
    """A temporary directory to write the bundle in, removed afterwards."""
    with os_errors(f"make a temporary directory for the bundle of {name}:{version}", DeployError):
        tmp = tempfile.TemporaryDirectory(prefix="schooner-bundle-", ignore_cleanup_errors=True)
    with tmp as root:
        yield Path(root) / "bundle"
