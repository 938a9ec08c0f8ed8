"""Clipper's admin API over Schooner, for code written for Clipper.

    from admin.clipper import ClipperConnection, DockerContainerManager
    from admin.clipper.deployers import python as python_deployer

    clipper_conn = ClipperConnection(DockerContainerManager())
    clipper_conn.start_clipper()
    clipper_conn.register_application(name="hello-world", input_type="doubles",
                                      default_output="-1.0", slo_micros=100000)
    python_deployer.deploy_python_closure(clipper_conn, name="sum-model", version=1,
                                          input_type="doubles", func=feature_sum)
    clipper_conn.link_model_to_app(app_name="hello-world", model_name="sum-model")

Only the import lines of Clipper code change (``clipper_admin`` becomes
``admin.clipper``): the names, signatures, records and return values are Clipper's,
every error is a ``ClipperException`` (a ``SchoonerError``). What differs, and why, is in
``docs/clipper.md``. New code should use ``admin.Connection``, Schooner's own API.
"""

from __future__ import annotations

from admin.clipper import deployers
from admin.clipper._connection import (
    CLIPPER_TEMP_DIR,
    DEFAULT_PREDICTION_CACHE_SIZE_BYTES,
    ClipperConnection,
)
from admin.clipper.container_manager import CLIPPER_DOCKER_LABEL, ContainerManager
from admin.clipper.docker import DockerContainerManager
from admin.clipper.exceptions import ClipperException, UnconnectedException
from admin.clipper.kubernetes import KubernetesContainerManager
from admin.clipper.version import __registry__, __version__

__all__ = [
    "CLIPPER_DOCKER_LABEL",
    "CLIPPER_TEMP_DIR",
    "DEFAULT_PREDICTION_CACHE_SIZE_BYTES",
    "ClipperConnection",
    "ClipperException",
    "ContainerManager",
    "DockerContainerManager",
    "KubernetesContainerManager",
    "UnconnectedException",
    "__registry__",
    "__version__",
    "deployers",
]
