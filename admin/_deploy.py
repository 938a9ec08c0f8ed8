"""Deploying a model version: the steps behind ``Connection``'s deploy methods.

Deploying a model version, in order: the manager stores the bundle (a content-addressed
directory, an image) and refuses a pickle the replicas could not load, before anything
is registered; the version is recorded with the bundle's sha256, never a path or image,
and the manager derives where the bundle is from that digest; the version is
registered (not current); its replicas start; the client waits until they are
connected, failing fast if one exits; only then does the version become current, so
no query is routed to a version without replicas. A version whose replicas did not
start, or that the cluster refused to make current (a pipeline stage after it could not
take what it declares it answers), is forgotten again (``undo``), so that it can be
deployed again under the same name.

Anything registration would refuse after a long build -- a version that exists, an
input type that differs from the model's other versions, a bundle that does not match
the arguments -- is refused first (``check_new_version``, ``build_and_deploy``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

from admin import _status
from admin._http import BatchSettings, ManagementClient
from admin._progress import ProgressCallback
from admin._wait import RoutesDone
from admin.container_managers.base import ContainerManager
from admin.exceptions import ConflictError, InvalidRequestError, NotFoundError, SchoonerError
from management_frontend.state.keys import arm_name

logger = logging.getLogger(__name__)


class Deployer:
    """The deploy steps of a ``Connection`` on its cluster: ``api`` records, ``cm`` runs.

    ``wait_for_replicas(name, version, n)`` and ``await_routes(done, what)`` are the
    connection's waits (``_wait``), with its timeouts.
    """

    def __init__(
        self,
        api: ManagementClient,
        cm: ContainerManager,
        report: ProgressCallback,
        *,
        wait_for_replicas: Callable[[str, str, int], None],
        await_routes: Callable[[RoutesDone, str], None],
    ) -> None:
        self.api = api
        self.cm = cm
        self.report = report
        self.wait_for_replicas = wait_for_replicas
        self.await_routes = await_routes

    def build_and_deploy(
        self,
        name: str,
        version: str,
        input_type: str,
        model_data_path: str | os.PathLike[str],
        *,
        labels: Sequence[str] | None,
        num_replicas: int,
        batch: BatchSettings,
        memory_limit: int = 0,
        output_type: str = "",
    ) -> None:
        """Check a bundle directory against the arguments, build it, deploy it.

        The bundle's ``pkgs`` are installed for the replicas when missing (by the
        manager's build); its runtime versions are recorded with the version.
        """
        from model_container.bundle import BundleError, read_bundle_info

        try:
            info = read_bundle_info(model_data_path)
        except BundleError as exc:
            raise InvalidRequestError(f"cannot deploy {name}:{version}: {exc}") from exc
        if str(info.input_type) != input_type:
            raise InvalidRequestError(
                f"the bundle at {model_data_path} takes {info.input_type!s} but "
                f"input_type={input_type!r} was given: make them the same"
            )
        self.check_new_version(name, version, input_type)
        self.report(f"building {name}:{version}")
        bundle_sha256 = self.cm.build_model(name, version, model_data_path)
        self.deploy(
            name,
            version,
            input_type,
            bundle_sha256,
            labels=labels,
            num_replicas=num_replicas,
            batch=batch,
            runtime=info.runtime,
            pkgs=info.pkgs,
            memory_limit=memory_limit,
            output_type=output_type,
        )

    def check_new_version(self, name: str, version: str, input_type: str) -> None:
        """Refuse early what registration would refuse after a long build."""
        try:
            model = self.api.get_model(name)
        except NotFoundError:
            return
        if version in model.get("versions", []):
            raise ConflictError(
                f"{name}:{version} is already registered: deploy under a new version, or "
                f"switch between existing ones with set_model_version({name!r}, ...)",
                status_code=409,
                code="conflict",
            )
        if model.get("input_type") not in (None, input_type):
            raise ConflictError(
                f"model {name!r} takes {model['input_type']}, not {input_type}: every version "
                "of a model has the same input type; use another model name",
                status_code=409,
                code="conflict",
            )

    def deploy(
        self,
        name: str,
        version: str,
        input_type: str,
        bundle_sha256: str,
        *,
        labels: Sequence[str] | None,
        num_replicas: int,
        batch: BatchSettings,
        runtime: dict[str, str] | None = None,
        pkgs: Sequence[str] = (),
        memory_limit: int = 0,
        output_type: str = "",
    ) -> None:
        """Register the version (not current) with its bundle's digest, start and wait
        for its replicas, then make it current; undo the registration if its replicas do
        not start. ``memory_limit``: bytes one replica may use (0: no limit);
        ``output_type``: what its outputs are ("": not declared)."""
        self.api.add_model_version(
            name,
            version,
            input_type,
            bundle_sha256=bundle_sha256,
            labels=labels or (),
            batch=batch,
            num_replicas=num_replicas,
            runtime=runtime,
            pkgs=pkgs,
            set_current=False,
            memory_limit=memory_limit,
            output_type=output_type,
        )
        try:
            if num_replicas > 0:
                self.report(f"starting {num_replicas} replica(s) of {name}:{version}")
                self.cm.set_num_replicas(
                    name,
                    version,
                    input_type,
                    bundle_sha256,
                    num_replicas,
                    memory_limit=memory_limit,
                )
                self.wait_for_replicas(name, version, num_replicas)
        except BaseException:
            self.undo(name, version)
            raise
        try:
            self.make_current(name, version)
        except ConflictError as exc:
            # E.g. a pipeline stage following the model could not take what this version
            # declares it answers: nothing may route to it, so it is not kept either.
            self.undo(name, version)
            raise ConflictError(
                f"{exc}. {name}:{version} was not made current, so it is not kept (its "
                "replicas are stopped and its record deleted): deploy it again once that "
                "is fixed",
                status_code=exc.status_code,
                code=exc.code,
            ) from exc
        self.report(f"{name}:{version} is deployed and current ({num_replicas} replica(s))")

    def undo(self, name: str, version: str) -> None:
        """Forget a version whose replicas did not start, so it can be deployed again."""
        try:
            self.cm.stop_models(name, [version])
            self.api.delete_model_version(name, version)
        except SchoonerError as exc:
            logger.warning("cleaning up the failed deploy of %s:%s: %s", name, version, exc)

    def make_current(self, name: str, version: str) -> None:
        """Make ``version`` current, and wait until the links that follow the model's
        current version route to it."""
        self.api.set_current_version(name, version)
        route = arm_name(name, version)
        self.await_routes(
            lambda apps: _status.follows_current(apps, name, route),
            f"{route} as current version",
        )
