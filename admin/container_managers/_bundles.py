"""What every container manager checks on a model bundle before it builds anything."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from admin._names import check_name, check_version
from admin.exceptions import DeployError, IncompatibleModelError

if TYPE_CHECKING:
    from model_container.bundle import BundleInfo


def read_model_bundle(name: str, version: str, bundle_dir: str | os.PathLike[str]) -> BundleInfo:
    """Check the model's name and version and read its bundle, or say what is wrong."""
    from model_container.bundle import BundleError, read_bundle_info

    check_name(name)
    check_version(version)
    try:
        return read_bundle_info(bundle_dir)
    except BundleError as exc:
        raise DeployError(f"cannot deploy {name}:{version}: {exc}") from exc


def require_compatible(
    name: str, version: str, theirs: dict[str, str], ours: dict[str, str], runs_on: str, fix: str
) -> None:
    """Refuse a bundle pickled under ``theirs`` that replicas running ``ours`` cannot load.

    ``runs_on`` says where the replicas run ("its image X runs"), ``fix`` what to do.
    """
    from model_container.bundle import IncompatibleRuntimeError, check_compatible

    try:
        check_compatible(theirs, ours)
    except IncompatibleRuntimeError as exc:
        raise IncompatibleModelError(
            f"cannot deploy {name}:{version}: it was pickled under Python "
            f"{theirs.get('python', '?')} / cloudpickle {theirs.get('cloudpickle', '?')}, "
            f"but {runs_on} Python {ours.get('python', '?')} / cloudpickle "
            f"{ours.get('cloudpickle', '?')}. {fix}"
        ) from exc
