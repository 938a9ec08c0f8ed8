"""Deploy a model file instead of code: an ONNX model, served by onnxruntime.

Nothing of the user's is pickled: the bundle holds the ``.onnx`` file and a manifest
naming the output to serve, and replicas run it with ``onnxruntime.InferenceSession``
(``model_container.onnx_model`` says which models fit and how a batch is fed). The
model is loaded here first, with the same checks a replica makes, so that a wrong
file, input type or output name is refused before anything is built.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from admin._connection import Connection
from admin._files import os_errors
from admin._names import check_input_type, check_name, check_output_type, check_version
from admin.deployers.python import _bundle_dir, _requirements
from admin.exceptions import DeployError, InvalidRequestError

# pkgs_to_install naming one of these replaces the onnxruntime pinned to this client's.
_RUNTIME_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")


def deploy_onnx_model(
    conn: Connection,
    name: str,
    version: str | int,
    input_type: str,
    model_path: str | os.PathLike[str],
    *,
    output_name: str | None = None,
    num_replicas: int = 1,
    batch_size: int = -1,
    labels: Sequence[str] | None = None,
    batch_mode: str = "",
    batch_wait_micros: int = 0,
    batch_timeout_micros: int = 0,
    memory_limit: int | str = 0,
    pkgs_to_install: Sequence[str] | None = None,
    output_type: str | None = None,
) -> None:
    """Serve the ONNX model file at ``model_path`` as model ``name:version``.

    Each query is a list of numbers; a batch of N queries runs as one ``[N, ...]``
    tensor of the dtype the model's input declares (doubles become float32 for most
    skl2onnx models). The model must have one input whose first dimension is the batch
    (dynamic; a batch dimension fixed at 1 is served one query at a time). Each query's
    output is its row of the model's first output, or of ``output_name`` (skl2onnx
    classifiers: ``"output_label"`` first, ``"output_probability"`` the probabilities).

    ``pkgs_to_install`` adds pip requirements for the replicas; onnxruntime is added,
    pinned to the version installed here (which checks the model before it is
    deployed: ``pip install 'schooner[onnx]'``), unless they name onnxruntime (or
    onnxruntime-gpu) themselves. The batching, timeout and memory options, and
    ``output_type`` (a row of numbers is ``"doubles"``), are those of
    ``deploy_python_closure``.

    Raises ``DeployError`` when the file is missing or not ONNX, or the model does not
    fit (several inputs, a fixed batch size, an input type its input cannot take, no
    such output), with what to do.
    """
    from model_container.bundle import ONNX_FILE, BundleError, write_onnx_bundle
    from model_container.onnx_model import OnnxModelError, inspect_onnx_model, onnxruntime_version

    name, version = check_name(name), check_version(version)
    input_type = check_input_type(input_type)
    declared = check_output_type(output_type)
    if output_name is not None and (not isinstance(output_name, str) or not output_name):
        raise InvalidRequestError(
            f"output_name must name one of the model's outputs, got {output_name!r}"
        )
    if not isinstance(model_path, str | os.PathLike):
        raise InvalidRequestError(
            f"model_path must be the path of an .onnx file, got {type(model_path).__name__}"
        )
    path = Path(model_path)
    pkgs = _requirements(pkgs_to_install)
    installed = onnxruntime_version()
    if installed is None:
        raise DeployError(
            f"cannot deploy {name}:{version}: deploy_onnx_model checks the model with "
            "onnxruntime before deploying it, and onnxruntime is not installed here: "
            "pip install 'schooner[onnx]'"
        )
    if not any(_names_runtime(p) for p in pkgs):
        pkgs.insert(0, f"onnxruntime=={installed}")
    with _bundle_dir(name, version) as bundle:
        try:
            with os_errors(f"write the bundle of {name}:{version} to {bundle}", DeployError):
                write_onnx_bundle(bundle, path, input_type, output_name, pkgs)
            # The bundle's copy, opened as a replica will open it (weights in other
            # files beside the original are not in the bundle).
            signature = inspect_onnx_model(
                bundle / ONNX_FILE, input_type, output_name, what=str(path)
            )
        except (BundleError, OnnxModelError) as exc:
            raise DeployError(f"cannot deploy {name}:{version} from {path}: {exc}") from exc
        conn.report(f"{name}:{version}: {path.name} takes {signature.describe()}")
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


def _names_runtime(requirement: str) -> bool:
    """Whether a pip requirement string is for onnxruntime (or its GPU build)."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    try:
        return canonicalize_name(Requirement(requirement).name) in _RUNTIME_DISTRIBUTIONS
    except InvalidRequirement:
        return False
