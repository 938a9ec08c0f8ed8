"""Replica counts: recorded in Redis first, enacted by the container manager second.

Redis holds each model version's desired ``num_replicas``; the container manager runs
them. Scaling records the new count before it starts or stops anything, and stopping
(``stop_models`` and its variants) records zero before it stops anything, so that what
a restart brings back is what the user last asked for, even when the manager failed
half-way. Restoring is that restart: after ``start()``, every version's recorded
replicas are started again (after a ``stop_all()``, a reboot or a crash), all at once,
then waited for together. The manager finds each version's bundle by the sha256 recorded
with it, and its replicas refuse a bundle changed since; a version recorded without a
digest (by ``register_model``, or by a Schooner that recorded a path or image) is never
started: restoring says to deploy it again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from admin._http import ManagementClient
from admin._names import check_version
from admin._progress import ProgressCallback
from admin.container_managers.base import ContainerManager
from admin.exceptions import DeployError, InvalidRequestError, ModelStartError


class Replicas:
    """The replica counts of a ``Connection``'s cluster: ``api`` records, ``cm`` runs.

    ``wait_for_replicas(name, version, n)`` is the connection's wait (``_wait``), with
    its deploy timeout.
    """

    def __init__(
        self,
        api: ManagementClient,
        cm: ContainerManager,
        report: ProgressCallback,
        *,
        wait_for_replicas: Callable[[str, str, int], None],
    ) -> None:
        self.api = api
        self.cm = cm
        self.report = report
        self.wait_for_replicas = wait_for_replicas

    def scale(self, name: str, num_replicas: int, version: str | None = None) -> None:
        """Run ``num_replicas`` replicas of a version (the current one by default), and
        wait until they are connected."""
        if version is None:
            version = self.api.get_model(name).get("current_version")
            if not version:
                raise InvalidRequestError(
                    f"model {name!r} has no current version: pass version=..."
                )
        version = check_version(version)
        mv = self.api.get_model_version(name, version)
        digest = str(mv.get("bundle_sha256", ""))
        if num_replicas > 0 and not digest:  # refused before anything is recorded
            raise DeployError(
                f"cannot start replicas of {name}:{version}: no bundle is recorded for it (it "
                "was registered with register_model, whose replicas run elsewhere): deploy "
                "the model under a new version to have this cluster run it"
            )
        self.api.set_num_replicas(name, version, num_replicas)
        self.report(f"scaling {name}:{version} to {num_replicas} replica(s)")
        self.cm.set_num_replicas(
            name,
            version,
            mv["input_type"],
            digest,
            num_replicas,
            memory_limit=int(mv.get("memory_limit_bytes", 0)),
        )
        self.wait_for_replicas(name, version, num_replicas)

    def stop(self, name: str, versions: Sequence[str]) -> None:
        """Stop the replicas of some versions of a model (they stay registered)."""
        for version in versions:  # record first: a restart must not bring them back
            self.api.set_num_replicas(name, version, 0)
        self.cm.stop_models(name, list(versions))
        self.report(f"stopped the replicas of {name} ({', '.join(versions) or 'no versions'})")

    def stop_models(self, names: Sequence[str]) -> None:
        """Stop the replicas of every version of these models."""
        for name in names:
            self.stop(name, self.api.get_model(name).get("versions", []))

    def stop_versions(self, model_versions: Mapping[str, Sequence[str]]) -> None:
        """Stop the replicas of some versions: ``{"model": ["1", "2"]}``."""
        for name, versions in model_versions.items():
            self.stop(name, versions)

    def stop_inactive(self, names: Sequence[str]) -> None:
        """Stop the replicas of every version of these models that is not current."""
        for name in names:
            model = self.api.get_model(name)
            current = model.get("current_version")
            self.stop(name, [v for v in model.get("versions", []) if v != current])

    def stop_all(self) -> None:
        """Stop the replicas of every version of every model."""
        self.stop_models([m["name"] for m in self.api.list_models()])

    def restore(self) -> None:
        """Relaunch the desired replicas recorded in Redis (after a stop or a crash)."""
        started = []
        failed = []
        for model in self.api.list_models():
            for version in model.get("versions", []):
                mv = self.api.get_model_version(model["name"], version)
                num = int(mv.get("num_replicas", 0))
                if num <= 0:
                    continue
                digest = str(mv.get("bundle_sha256", ""))
                if not digest:
                    failed.append(
                        f"{mv['name']}:{version} is recorded without a bundle digest (by an "
                        "older Schooner, which recorded a path or image, or by register_model): "
                        "it is not started; deploy it again under a new version"
                    )
                    continue
                self.report(f"restarting {num} replica(s) of {mv['name']}:{version}")
                try:
                    self.cm.set_num_replicas(
                        mv["name"],
                        version,
                        mv["input_type"],
                        digest,
                        num,
                        memory_limit=int(mv.get("memory_limit_bytes", 0)),
                    )
                except DeployError as exc:  # e.g. its bundle is not in the store
                    failed.append(str(exc))
                    continue
                started.append((str(mv["name"]), str(version), num))
        for name, version, num in started:
            try:
                self.wait_for_replicas(name, version, num)
            except ModelStartError as exc:
                failed.append(str(exc))
        if failed:
            raise ModelStartError(
                "Schooner is running and this Connection is connected, but some model "
                "replicas did not come back; fix them, or stop them with stop_models():\n"
                + "\n".join(failed)
            )
