"""Clipper's image names, recognised so that Clipper code runs unchanged.

Clipper started its cluster from images of its own (``clipper/query_frontend:0.4.1``,
...) and built models ``FROM`` closure images (``clipper/python37-closure-container``).
Schooner builds its own images from ``deploy/docker``; where Clipper code names one of
Clipper's images, the drop-in uses Schooner's equivalent and says so at DEBUG. A name
that is not Clipper's is also accepted, with a WARNING that it is not used (Schooner's
managers take their base image as ``base_image=`` when constructed).
"""

from __future__ import annotations

import logging

from admin.clipper.version import __registry__

__all__ = ["is_clipper_image", "note_image"]

logger = logging.getLogger("admin.clipper")

_CLIPPER_REPOSITORIES = (
    "query_frontend",
    "management_frontend",
    "frontend-exporter",
    "noop-container",
    "python-closure-container",
    "python35-closure-container",
    "python36-closure-container",
    "python37-closure-container",
    "pyspark-container",
    "pytorch-container",
    "tf-container",
    "keras-container",
    "mxnet-container",
    "onnx-container",
)


def is_clipper_image(image: str) -> bool:
    """Whether ``image`` names one of Clipper's images (any tag, any registry prefix)."""
    if image == "default":  # deploy_python_closure's base_image default in Clipper
        return True
    path = image.rpartition(":")[0] if ":" in image.rpartition("/")[2] else image
    owner, _, repository = path.rpartition("/")
    return repository in _CLIPPER_REPOSITORIES and owner.rpartition("/")[2] == __registry__


def note_image(image: str | None, role: str, used: str) -> None:
    """Log that ``image`` (given for ``role``) is not run: ``used`` runs instead."""
    if image is None or image == used:
        return
    if is_clipper_image(image):
        logger.debug("%s: Clipper's image %s is not used; Schooner runs %s", role, image, used)
    else:
        logger.warning(
            "%s: image %s is not used; Schooner runs %s (set base_image= on the container "
            "manager to build from another Python image)",
            role,
            image,
            used,
        )
