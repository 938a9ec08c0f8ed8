"""Clipper's ``clipper_admin.deployers.python``: ``deploy_python_closure`` and
``create_endpoint``, with Clipper's signatures.

The closure is deployed as Schooner deploys one (``admin.deployers.python``), wrapped so
that its string outputs that are JSON documents are answered as JSON values, as Clipper
answered them (``_outputs.json_outputs``; the wrapper is pickled with it, by value).
``version`` may be an int. ``base_image`` (Clipper's default ``"default"`` picked its
closure image for this Python) and ``registry`` are the container manager's settings:
the drop-in builds ``FROM`` the manager's base image and pushes where the manager does,
logging a name it does not use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from admin.clipper import _images
from admin.clipper._connection import ClipperConnection, _note_registry, _version
from admin.clipper._outputs import json_outputs
from admin.clipper.exceptions import clipper_errors
from admin.deployers import python as native

__all__ = ["create_endpoint", "deploy_python_closure"]


@clipper_errors
def deploy_python_closure(
    clipper_conn: ClipperConnection,
    name: str,
    version: str | int,
    input_type: str,
    func: Callable[[Any], Any],
    base_image: str = "default",
    labels: Sequence[str] | None = None,
    registry: str | None = None,
    num_replicas: int = 1,
    batch_size: int = -1,
    pkgs_to_install: Sequence[str] | None = None,
) -> None:
    """Deploy ``func`` (a batch of inputs in, one output per input out) as
    ``name:version``; ``pkgs_to_install`` are pip-installed into its image."""
    clipper_conn._require_connected()
    _images.note_image(base_image, "base_image", "the manager's base image")
    _note_registry(clipper_conn.cm, registry)
    native.deploy_python_closure(
        clipper_conn.connection,
        name,
        _version(version),
        input_type,
        json_outputs(func),
        pkgs_to_install=pkgs_to_install,
        num_replicas=num_replicas,
        batch_size=batch_size,
        labels=labels,
    )
    clipper_conn.logger.info("Done deploying model %s:%s.", name, version)


@clipper_errors
def create_endpoint(
    clipper_conn: ClipperConnection,
    name: str,
    input_type: str,
    func: Callable[[Any], Any],
    default_output: str = "None",
    version: str | int = 1,
    slo_micros: int = 3000000,
    labels: Sequence[str] | None = None,
    registry: str | None = None,
    base_image: str = "default",
    num_replicas: int = 1,
    batch_size: int = -1,
    pkgs_to_install: Sequence[str] | None = None,
) -> None:
    """Register app ``name``, deploy ``func`` as model ``name:version`` and link them."""
    clipper_conn.register_application(name, input_type, default_output, slo_micros)
    deploy_python_closure(
        clipper_conn,
        name,
        version,
        input_type,
        func,
        base_image,
        labels,
        registry,
        num_replicas,
        batch_size,
        pkgs_to_install,
    )
    clipper_conn.link_model_to_app(name, name)
