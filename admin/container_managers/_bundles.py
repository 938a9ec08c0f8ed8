"""What every container manager checks on a model bundle before it builds anything, and
the bundle digest a model version is recorded with (``model_container.bundle``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from admin._names import check_name, check_version
from admin.exceptions import DeployError, IncompatibleModelError
from management_frontend.state import rules
from management_frontend.state.errors import InvalidValue

# The label a model image built by Schooner carries: the sha256 of the bundle inside it.
IMAGE_BUNDLE_SHA256 = "schooner.bundle-sha256"

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
    name: str, version: str, info: BundleInfo, ours: dict[str, str], runs_on: str, fix: str
) -> None:
    """Refuse a bundle pickled under ``info.runtime`` that replicas running ``ours``
    cannot load; a model file (ONNX) loads under any Python and is never refused.

    ``runs_on`` says where the replicas run ("its image X runs"), ``fix`` what to do.
    """
    from model_container.bundle import IncompatibleRuntimeError, check_compatible

    if not info.needs_same_python:
        return
    theirs = info.runtime
    try:
        check_compatible(theirs, ours)
    except IncompatibleRuntimeError as exc:
        raise IncompatibleModelError(
            f"cannot deploy {name}:{version}: it was pickled under Python "
            f"{theirs.get('python', '?')} / cloudpickle {theirs.get('cloudpickle', '?')}, "
            f"but {runs_on} Python {ours.get('python', '?')} / cloudpickle "
            f"{ours.get('cloudpickle', '?')}. {fix}"
        ) from exc


def digest_of(name: str, version: str, bundle_dir: str | os.PathLike[str]) -> str:
    """The sha256 of a bundle directory, or ``DeployError`` saying why it has none."""
    from model_container.bundle import BundleError, bundle_digest

    try:
        return bundle_digest(bundle_dir)
    except BundleError as exc:
        raise DeployError(f"cannot deploy {name}:{version}: {exc}") from exc


def require_digest(name: str, version: str, bundle_sha256: str) -> str:
    """The digest recorded for a version, checked before it names a file or an image:
    refused when empty (registered with replicas elsewhere) or not a sha256."""
    try:
        digest = rules.bundle_sha256(bundle_sha256)
    except InvalidValue as exc:
        raise DeployError(f"cannot start replicas of {name}:{version}: {exc.message}") from None
    if not digest:
        raise DeployError(
            f"cannot start replicas of {name}:{version}: no bundle is recorded for it (it was "
            "registered with register_model, whose replicas run elsewhere, or by a Schooner "
            "that recorded a path or image instead of a bundle digest): deploy the model "
            "again under a new version with deploy_python_closure or deploy_model"
        )
    return digest


def image_bundle_digest(name: str, version: str, image: str, labels: dict[str, str]) -> str:
    """The bundle digest a prebuilt model image carries in its labels, or ``DeployError``."""
    digest = labels.get(IMAGE_BUNDLE_SHA256, "")
    try:
        checked = rules.bundle_sha256(digest)
    except InvalidValue:
        checked = ""
    if not checked:
        raise DeployError(
            f"cannot deploy {name}:{version} from image {image}: it carries no valid "
            f"{IMAGE_BUNDLE_SHA256} label, so the replicas could not check the bundle in it. "
            "Schooner runs only images built from a bundle by a container manager (which "
            "labels them): pass the bundle directory to deploy_model instead"
        )
    return checked
