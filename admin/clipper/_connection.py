"""``ClipperConnection``: Clipper's admin API, method for method, over Schooner's ``Connection``.

Names, signatures, record shapes and return values are Clipper's (``clipper_admin``
0.4); every call is delegated to the native ``Connection`` (``self.connection``) and
its container manager, and every ``SchoonerError`` leaves as a ``ClipperException``
(``exceptions.clipper_errors``). Where Clipper's behaviour and Schooner's differ, the
drop-in follows Clipper -- the ``stop_*`` methods unregister the versions they stop,
string outputs and defaults that are JSON are answered as JSON values -- and the native
API keeps Schooner's. ``docs/clipper.md`` has the whole mapping.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import cloudpickle

from admin._connection import Connection
from admin._http import DEFAULT_TIMEOUT, JSONObject
from admin._progress import ProgressCallback
from admin.clipper import _images, _records
from admin.clipper._bundles import bundle_with_pkgs
from admin.clipper._outputs import default_value
from admin.clipper._trial import batch_of
from admin.clipper.container_manager import CONTAINERLESS_MODEL_IMAGE
from admin.clipper.exceptions import ClipperException, UnconnectedException, clipper_errors
from admin.clipper.version import __registry__, __version__
from admin.container_managers.base import ContainerManager
from admin.exceptions import ConflictError, InvalidRequestError, NotFoundError

__all__ = ["CLIPPER_TEMP_DIR", "DEFAULT_PREDICTION_CACHE_SIZE_BYTES", "ClipperConnection"]

logger = logging.getLogger("admin.clipper")

DEFAULT_PREDICTION_CACHE_SIZE_BYTES = 33554432
# Where Clipper's tests keep their temporary files; exported because they import it.
CLIPPER_TEMP_DIR = "/tmp/clipper"
DEFAULT_DEPLOY_TIMEOUT = 120.0

# Clipper's own images, named by start_clipper's defaults; Schooner runs its own.
_QUERY_IMAGE = f"{__registry__}/query_frontend:{__version__}"
_MGMT_IMAGE = f"{__registry__}/management_frontend:{__version__}"
_EXPORTER_IMAGE = f"{__registry__}/frontend-exporter:{__version__}"


class ClipperConnection:
    """Clipper's ``ClipperConnection(container_manager)``.

    ``container_manager`` is ``admin.clipper``'s ``DockerContainerManager`` or
    ``KubernetesContainerManager`` (Clipper's keywords), or any Schooner manager
    (``LocalContainerManager()`` runs the cluster as local processes). The keywords after
    it are Schooner's (``Connection``'s): request timeout, how long a deploy waits for
    replicas, and a progress callback.
    """

    def __init__(
        self,
        container_manager: ContainerManager,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        deploy_timeout: float = DEFAULT_DEPLOY_TIMEOUT,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.cm = container_manager
        self.connection = Connection(
            container_manager, timeout=timeout, deploy_timeout=deploy_timeout, progress=progress
        )
        self.connected = False
        cluster = getattr(container_manager, "cluster_name", "")
        self.logger = logging.LoggerAdapter(logger, {"cluster_name": cluster})

    def __repr__(self) -> str:
        state = "connected" if self.connected else "not connected"
        return f"<ClipperConnection {state} via {self.cm!r}>"

    def _require_connected(self) -> None:
        if not self.connected:
            raise UnconnectedException()

    # ------------------------------------------------------------------ the cluster

    @clipper_errors
    def start_clipper(
        self,
        query_frontend_image: str = _QUERY_IMAGE,
        mgmt_frontend_image: str = _MGMT_IMAGE,
        frontend_exporter_image: str = _EXPORTER_IMAGE,
        cache_size: int = DEFAULT_PREDICTION_CACHE_SIZE_BYTES,
        qf_http_thread_pool_size: int = 1,
        qf_http_timeout_request: int = 5,
        qf_http_timeout_content: int = 300,
        num_frontend_replicas: int = 1,
    ) -> None:
        """Start the cluster and connect to it.

        The image arguments are accepted and not run: Schooner builds its own frontend
        images (a non-Clipper name is logged as unused). ``cache_size`` and the
        ``qf_http_*`` settings are the query frontend's own (bounded cache, request
        deadlines) and are not passed on. ``num_frontend_replicas`` runs that many query
        frontends, on managers that can (``query_frontends=``).
        """
        _images.note_image(query_frontend_image, "query_frontend_image", "Schooner's frontend")
        _images.note_image(mgmt_frontend_image, "mgmt_frontend_image", "Schooner's frontend")
        _images.note_image(frontend_exporter_image, "frontend_exporter_image", "no exporter")
        if cache_size != DEFAULT_PREDICTION_CACHE_SIZE_BYTES:
            self.logger.warning("cache_size=%d is not used: the query frontend sizes its cache")
        del qf_http_thread_pool_size, qf_http_timeout_request, qf_http_timeout_content
        if num_frontend_replicas != 1:
            self._use_query_frontends(num_frontend_replicas)
        self.connection.start()
        self.connected = True
        self.logger.info("Clipper is running")

    def _use_query_frontends(self, count: int) -> None:
        import dataclasses

        settings = getattr(self.cm, "settings", None)
        # Docker's setting is query_frontends, Kubernetes' query_replicas.
        for field in ("query_frontends", "query_replicas"):
            if dataclasses.is_dataclass(settings) and hasattr(settings, field):
                replaced = dataclasses.replace(settings, **{field: count})  # type: ignore[type-var]
                self.cm.settings = replaced  # type: ignore[attr-defined]
                return
        self.logger.warning(
            "num_frontend_replicas=%d is not used: %r runs one query frontend", count, self.cm
        )

    @clipper_errors
    def connect(self) -> None:
        """Attach to a running cluster."""
        self.connection.connect()
        self.connected = True
        self.logger.info(
            "Successfully connected to Clipper cluster at %s", self.connection.get_query_addr()
        )

    @clipper_errors
    def stop_all(self, graceful: bool = True) -> None:
        """Stop the whole cluster; works without connecting. With Clipper's managers
        (``admin.clipper``'s) its state goes too, as Clipper's Redis kept none."""
        self.connection.stop_all(graceful=graceful)
        self.connected = False
        self.logger.info("Stopped all Clipper cluster and all model containers")

    @clipper_errors
    def get_query_addr(self) -> str:
        self._require_connected()
        return self.connection.get_query_addr()

    @clipper_errors
    def get_metric_addr(self) -> str:
        """Where Prometheus metrics are served (the query frontend's ``/metrics``)."""
        self._require_connected()
        metric_addr = getattr(self.cm, "get_metric_addr", None)
        return str(metric_addr()) if callable(metric_addr) else self.connection.get_query_addr()

    @clipper_errors
    def get_clipper_logs(self, logging_dir: str = "clipper_logs/") -> list[str]:
        """Copy every container's log into ``logging_dir``; the paths written."""
        self._require_connected()
        return self.connection.get_logs(logging_dir)

    @clipper_errors
    def inspect_instance(self) -> JSONObject:
        """The query frontend's state as a dict (Schooner's ``/status``: apps, routes,
        model queues, replicas), where Clipper gave its metrics."""
        self._require_connected()
        return self.connection.inspect_instance()

    # ------------------------------------------------------------------ applications

    @clipper_errors
    def register_application(
        self, name: str, input_type: str, default_output: Any, slo_micros: int
    ) -> None:
        """Register an app. A ``default_output`` string that is JSON (``"-1.0"``) is
        answered as its value, as Clipper's query frontend did."""
        self._require_connected()
        self.connection.register_application(
            name, input_type, default_value(default_output), slo_micros
        )
        self.logger.info("Application %s was successfully registered", name)

    @clipper_errors
    def unregister_application(self, name: str) -> None:
        self._require_connected()
        self.connection.unregister_application(name)
        self.logger.info("Application %s was successfully unregistered", name)

    def delete_application(self, name: str) -> None:
        """Deprecated in Clipper in favour of ``unregister_application``; same here."""
        self.logger.warning("[DEPRECATED] Use 'unregister_application' API instead of this.")
        self.unregister_application(name)

    @clipper_errors
    def link_model_to_app(self, app_name: str, model_name: str) -> None:
        """Route the app's queries to the model's current version."""
        self._require_connected()
        if self.connection.get_model(model_name) is None:
            raise ClipperException(f"No model with name '{model_name}' exists.")
        self.connection.link_model_to_app(app_name, model_name)
        self.logger.info("Model %s is now linked to application %s", model_name, app_name)

    @clipper_errors
    def unlink_model_from_app(self, app_name: str, model_name: str) -> None:
        self._require_connected()
        self.connection.unlink_model_from_app(app_name, model_name)
        self.logger.info("Model %s is now removed to application %s", model_name, app_name)

    @clipper_errors
    def get_all_apps(self, verbose: bool = False) -> list[Any]:
        """App names, or with ``verbose`` the apps in Clipper's shape (``_records``)."""
        self._require_connected()
        if not verbose:
            return self.connection.get_all_apps()
        return [_records.app_record(app) for app in self.connection.get_all_apps(verbose=True)]

    @clipper_errors
    def get_app_info(self, name: str) -> dict[str, Any] | None:
        """The app in Clipper's shape; ``None`` if no app has that name."""
        self._require_connected()
        try:
            app = self.connection.get_app_info(name)
        except InvalidRequestError:  # a name no app can have
            return None
        if app is None:
            self.logger.warning("Application %s is not registered with Clipper", name)
            return None
        return _records.app_record(app)

    @clipper_errors
    def get_linked_models(self, app_name: str) -> list[str]:
        self._require_connected()
        return self.connection.get_linked_models(app_name)

    # ------------------------------------------------------------------ models

    @clipper_errors
    def build_and_deploy_model(
        self,
        name: str,
        version: str | int,
        input_type: str,
        model_data_path: str,
        base_image: str,
        labels: Sequence[str] | None = None,
        container_registry: str | None = None,
        num_replicas: int = 1,
        batch_size: int = -1,
        pkgs_to_install: Sequence[str] | None = None,
    ) -> None:
        """Build and deploy a Schooner model bundle (``model.json`` and ``func.pkl``, as
        ``deploy_python_closure`` writes), ``pkgs_to_install`` added to its packages.

        ``base_image`` and ``container_registry`` are the manager's (``base_image=``,
        ``registry=``): given here they are logged as unused.
        """
        self._require_connected()
        _images.note_image(base_image, "base_image", "the manager's base image")
        _note_registry(self.cm, container_registry)
        with bundle_with_pkgs(model_data_path, pkgs_to_install) as bundle:
            self.connection.build_and_deploy_model(
                name,
                _version(version),
                input_type,
                bundle,
                labels=labels,
                num_replicas=num_replicas,
                batch_size=batch_size,
            )
        self.logger.info("Done deploying model %s:%s.", name, version)

    @clipper_errors
    def build_model(
        self,
        name: str,
        version: str | int,
        model_data_path: str,
        base_image: str,
        container_registry: str | None = None,
        pkgs_to_install: Sequence[str] | None = None,
    ) -> str:
        """Build a model bundle's image (Docker and Kubernetes managers); its name.

        The image is named from the bundle's digest, and ``deploy_model`` takes it.
        """
        _images.note_image(base_image, "base_image", "the manager's base image")
        _note_registry(self.cm, container_registry)
        images = getattr(self.cm, "images", None)
        if images is None:
            raise ClipperException(
                f"build_model needs a manager that builds images (Docker or Kubernetes); "
                f"{self.cm!r} runs bundles as they are: use build_and_deploy_model"
            )
        version = _version(version)
        with bundle_with_pkgs(model_data_path, pkgs_to_install) as bundle:
            digest = self.cm.build_model(name, version, bundle)
        return str(images.model_image_name(name, version, digest))

    @clipper_errors
    def deploy_model(
        self,
        name: str,
        version: str | int,
        input_type: str,
        image: str,
        labels: Sequence[str] | None = None,
        num_replicas: int = 1,
        batch_size: int = -1,
    ) -> None:
        """Deploy an image ``build_model`` built (or a bundle directory)."""
        self._require_connected()
        self.connection.deploy_model(
            name,
            _version(version),
            input_type,
            image,
            labels=labels,
            num_replicas=num_replicas,
            batch_size=batch_size,
        )
        self.logger.info("Done deploying model %s:%s.", name, version)

    @clipper_errors
    def register_model(
        self,
        name: str,
        version: str | int,
        input_type: str,
        image: str | None = None,
        labels: Sequence[str] | None = None,
        batch_size: int = -1,
    ) -> None:
        """Register a version as current without starting replicas. Without ``image``
        its replicas run elsewhere (a "containerless" model); with an image
        ``build_model`` built, the version is recorded with it, at 0 replicas."""
        self._require_connected()
        if image is None or image == CONTAINERLESS_MODEL_IMAGE:
            self.connection.register_model(
                name, _version(version), input_type, labels=labels, batch_size=batch_size
            )
        else:
            self.connection.deploy_model(
                name,
                _version(version),
                input_type,
                image,
                labels=labels,
                num_replicas=0,
                batch_size=batch_size,
            )
        self.logger.info("Successfully registered model %s:%s", name, version)

    @clipper_errors
    def get_current_model_version(self, name: str) -> str:
        self._require_connected()
        model = self.connection.get_model(name)
        current = model.get("current_version") if model else None
        if not current:
            raise ClipperException(f"No versions of model {name} registered with Clipper")
        return str(current)

    @clipper_errors
    def get_num_replicas(self, name: str, version: str | int | None = None) -> int:
        """How many replicas of the version (the current one by default) run now."""
        self._require_connected()
        version = self.get_current_model_version(name) if version is None else _version(version)
        count = getattr(self.cm, "get_num_replicas", None)
        if callable(count):
            return int(count(name, version))
        return sum(1 for s in self.cm.replica_states(name, version) if s.running)

    @clipper_errors
    def set_num_replicas(
        self, name: str, num_replicas: int, version: str | int | None = None
    ) -> None:
        """Run ``num_replicas`` replicas of the version (the current one by default)."""
        self._require_connected()
        version = self.get_current_model_version(name) if version is None else _version(version)
        record = self._version_record(name, version)
        if record is None:
            raise ClipperException(
                f"Cannot add container for non-registered model {name}:{version}"
            )
        if not record.get("bundle_sha256"):
            raise ClipperException(
                f"Cannot resize the replica set for containerless model {name}:{version}"
            )
        self.connection.set_num_replicas(name, num_replicas, version=version)

    @clipper_errors
    def set_model_version(
        self, name: str, version: str | int, num_replicas: int | None = None
    ) -> None:
        """Make ``version`` current (roll back or forward); scale it if asked."""
        self._require_connected()
        self.connection.set_model_version(name, _version(version), num_replicas=num_replicas)

    @clipper_errors
    def get_all_models(self, verbose: bool = False) -> list[Any]:
        """``"name:version"`` of every version, or with ``verbose`` Clipper's records."""
        self._require_connected()
        if not verbose:
            return self.connection.get_all_models()
        return [
            _records.model_record(
                record,
                is_current_version=bool(record.get("is_current_version")),
                container_name=self._container_name(record),
            )
            for record in self.connection.get_all_models(verbose=True)
        ]

    @clipper_errors
    def get_model_info(self, name: str, version: str | int) -> dict[str, Any] | None:
        """The version in Clipper's shape; ``None`` if it is not registered."""
        self._require_connected()
        version = _version(version)
        record = self._version_record(name, version)
        if record is None:
            self.logger.warning("Model %s:%s is not registered with Clipper.", name, version)
            return None
        model = self.connection.get_model(name) or {}
        return _records.model_record(
            record,
            is_current_version=model.get("current_version") == version,
            container_name=self._container_name(record),
        )

    @clipper_errors
    def get_all_model_replicas(self, verbose: bool = False) -> list[Any]:
        """``"name:version:index"`` of every connected replica, or with ``verbose``
        Clipper's records."""
        self._require_connected()
        records = _records.replica_records(self.connection.get_all_model_replicas(verbose=True))
        return records if verbose else [_records.replica_key(r) for r in records]

    @clipper_errors
    def get_model_replica_info(
        self, name: str, version: str | int, replica_id: int | str
    ) -> dict[str, Any] | None:
        """A connected replica in Clipper's shape; ``None`` if there is none such."""
        self._require_connected()
        version = _version(version)
        for record in self.get_all_model_replicas(verbose=True):
            if (
                record["model_name"] == name
                and record["model_version"] == version
                and str(record["model_replica_id"]) == str(replica_id)
            ):
                return dict(record)
        self.logger.warning(
            "No model replica with ID %s found for model %s:%s", replica_id, name, version
        )
        return None

    def _version_record(self, name: str, version: str) -> JSONObject | None:
        try:
            return self.connection.get_model_info(name, version)
        except (InvalidRequestError, NotFoundError):
            return None

    def _container_name(self, record: Mapping[str, Any]) -> str:
        """The image a version's replicas run; its bundle's digest where there is none."""
        digest = str(record.get("bundle_sha256") or "")
        if not digest:
            return CONTAINERLESS_MODEL_IMAGE
        images = getattr(self.cm, "images", None)
        if images is not None:
            return str(images.model_image_name(record["name"], record["version"], digest))
        return f"bundle@sha256:{digest}"

    # ------------------------------------------------------------------ stopping

    @clipper_errors
    def stop_models(self, model_names: str | Iterable[str]) -> None:
        """Stop every version of these models and unregister them, as Clipper did.

        A version an app depends on (linked to its model while current, or pinned) is
        stopped and stays registered, with a warning: Schooner keeps no link to a model
        that is not there, where Clipper left the app linked to nothing."""
        self._require_connected()
        names = {model_names} if isinstance(model_names, str) else set(model_names)
        self._stop_and_unregister(self._versions_where(lambda m: m["model_name"] in names))

    @clipper_errors
    def stop_versioned_models(self, model_versions_dict: Mapping[str, Sequence[Any]]) -> None:
        """Stop these versions (``{"model": ["1", "2"]}``) and unregister them."""
        self._require_connected()
        wanted = {
            name: [_version(v) for v in ([vs] if isinstance(vs, str | int) else vs)]
            for name, vs in model_versions_dict.items()
        }
        self._stop_and_unregister(wanted)

    @clipper_errors
    def stop_inactive_model_versions(self, model_names: str | Iterable[str]) -> None:
        """Stop and unregister every version of these models that is not current."""
        self._require_connected()
        names = {model_names} if isinstance(model_names, str) else set(model_names)
        self._stop_and_unregister(
            self._versions_where(lambda m: m["model_name"] in names and not m["is_current_version"])
        )

    @clipper_errors
    def stop_all_model_containers(self) -> None:
        """Stop and unregister every version of every model."""
        self._require_connected()
        self._stop_and_unregister(self._versions_where(lambda m: True))

    def _versions_where(self, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, list[str]]:
        chosen: dict[str, list[str]] = {}
        for model in self.get_all_models(verbose=True):
            if wanted(model):
                chosen.setdefault(model["model_name"], []).append(model["model_version"])
        return chosen

    def _stop_and_unregister(self, model_versions: Mapping[str, Sequence[str]]) -> None:
        for name, versions in model_versions.items():
            for version in versions:
                try:
                    self.connection.unregister_model_version(name, version)
                except ConflictError as exc:  # kept for the apps that link it: stopped
                    self.connection.stop_versioned_models({name: [version]})
                    self.logger.warning(
                        "%s:%s is stopped but stays registered: %s", name, version, exc
                    )
        self.logger.info(
            "Stopped all containers for these models and versions: %s", dict(model_versions)
        )

    # ------------------------------------------------------------------ testing a function

    def test_predict_function(
        self, query: Mapping[str, Any], func: Callable[[Any], Any], input_type: str
    ) -> Any:
        """Call ``func`` as a replica would, on the inputs of a query body
        (``{"input": x}`` or ``{"input_batch": [...]}``), after a round trip through
        cloudpickle; its outputs as it returns them.

        As in Clipper, a query of the wrong shape or types gives a message string
        (``"Invalid input type"``, ``"Invalid input type or JSON key"``), not an error.
        """
        if not self.connected:
            self.connect()
        keys = list(query.keys())
        if not keys or keys[0] not in ("input", "input_batch"):
            return "Invalid input type or JSON key"
        inputs = list(query[keys[0]]) if keys[0] == "input_batch" else [query[keys[0]]]
        try:
            batch = batch_of(inputs, input_type)
        except (TypeError, ValueError):
            return "Invalid input type"
        if batch is None:
            return "Invalid input type"
        reloaded = pickle.loads(cloudpickle.dumps(func))  # what was pickled just above
        return reloaded(batch)


def _version(version: object) -> str:
    """A version as Clipper took it: anything with a ``str()`` (``1`` is ``"1"``)."""
    return version if isinstance(version, str) else str(version)


def _note_registry(cm: ContainerManager, registry: str | None) -> None:
    own = getattr(cm, "registry", "")
    if registry and registry != own:
        logger.warning(
            "registry %r is not used: %r builds and pulls model images %s (set registry= "
            "on the container manager)",
            registry,
            cm,
            f"at {own}" if own else "on its own engine, pushing nowhere",
        )
