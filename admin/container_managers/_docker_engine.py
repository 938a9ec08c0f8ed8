"""One cluster's share of a Docker engine: its containers, network, volumes and images.

``ClusterEngine`` is the only place the Docker manager calls the docker SDK for
containers; it selects by the ``schooner.cluster`` label, so nothing here ever touches
another cluster's (or anybody else's) containers, and it translates the SDK's errors --
``docker.errors`` and the ``requests`` errors it lets through -- into Schooner's.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import tarfile
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final

from admin.container_managers import _docker_specs as specs
from admin.exceptions import ContainerManagerError, DeployError

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

_DEFAULT_SOCKET: Final = "unix:///var/run/docker.sock"
# Redis gets longer to stop: it flushes its append-only file on SIGTERM.
_STOP_ORDER: Final = (
    specs.REPLICA,
    specs.QUERY,
    specs.QUERY_NET,  # after the frontends, whose network stack it holds
    specs.MANAGEMENT,
    specs.REDIS,
)
REDIS_STOP_TIMEOUT: Final = 30.0
_PROBE: Final = (
    "import json; from model_container.bundle import runtime_versions; "
    "print(json.dumps(runtime_versions()))"
)


def engine_errors() -> tuple[type[Exception], ...]:
    """What the docker SDK raises when the engine refuses or cannot be reached: its own
    errors, and those of ``requests`` underneath, which it lets through."""
    from docker.errors import DockerException
    from requests.exceptions import RequestException

    return (DockerException, RequestException)


def connect_to_engine(timeout: float = 60.0) -> docker.DockerClient:
    """A client of the engine that ``DOCKER_HOST`` (or the default socket) points at."""
    try:
        import docker
        from docker.constants import MINIMUM_DOCKER_API_VERSION
    except ImportError:
        raise ContainerManagerError(
            "DockerContainerManager needs the docker SDK: pip install 'schooner[docker]'"
        ) from None
    # docker-py leaves its socket open when a unix socket refuses the connection, and a
    # client negotiating its API version connects in its constructor: check the socket
    # first, then ping with a fixed version, then make the negotiating client.
    refused = _unix_socket_refuses(os.environ.get("DOCKER_HOST") or _DEFAULT_SOCKET)
    if refused:
        raise ContainerManagerError(
            f"cannot reach the Docker engine ({refused}): start Docker (dockerd), or point "
            "DOCKER_HOST at a running engine"
        )
    try:
        # A DOCKER_HOST or TLS setting the SDK cannot use fails here already.
        probe = docker.from_env(version=MINIMUM_DOCKER_API_VERSION, timeout=int(timeout))
        try:
            probe.ping()
            return docker.from_env(timeout=int(timeout))
        finally:
            probe.close()
    except engine_errors() as exc:
        raise ContainerManagerError(
            f"cannot reach the Docker engine ({exc}): start Docker (dockerd), or point "
            "DOCKER_HOST at a running engine"
        ) from exc


def _unix_socket_refuses(docker_host: str) -> str:
    """Why the engine's unix socket refuses connections; "" if it accepts (or is not one)."""
    if not docker_host.startswith("unix://"):
        return ""
    path = docker_host.removeprefix("unix://")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5.0)
            sock.connect(path)
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    return ""


class ClusterEngine:
    """The containers, network, volume and images of one cluster in one engine."""

    def __init__(
        self,
        client: docker.DockerClient,
        cluster_name: str,
        *,
        stop_timeout: float,
        extra_run_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.cluster_name = cluster_name
        self.stop_timeout = stop_timeout
        self.extra_run_kwargs = dict(extra_run_kwargs or {})
        self._runtimes: dict[str, dict[str, str]] = {}  # image id -> runtime versions

    # ------------------------------------------------------------------ containers

    def containers(self, role: str | None = None, **labels: str) -> list[Container]:
        """This cluster's containers (running or not), optionally of one role."""
        wanted = {specs.CLUSTER: self.cluster_name, **labels}
        if role is not None:
            wanted[specs.ROLE] = role
        try:
            return list(
                self.client.containers.list(
                    all=True,
                    filters={"label": [f"{k}={v}" for k, v in wanted.items()]},
                    ignore_removed=True,
                )
            )
        except engine_errors() as exc:
            raise ContainerManagerError(f"cannot list the containers of Docker: {exc}") from exc

    def replicas(self, name: str, version: str | None = None) -> list[Container]:
        labels = (
            {specs.MODEL: name} if version is None else {specs.MODEL: name, specs.VERSION: version}
        )
        return self.containers(role=specs.REPLICA, **labels)

    def run(self, spec: Mapping[str, Any]) -> Container:
        """``containers.run(**spec)``; a leftover container of the same name is replaced."""
        from docker.errors import APIError

        kwargs = {**spec, **self.extra_run_kwargs}
        try:
            return self._run(kwargs)
        except ContainerManagerError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, APIError) and cause.status_code == 409):
                raise
        # A container of that name was left behind (another process, a crash).
        with contextlib.suppress(*engine_errors()):
            self.client.containers.get(str(kwargs["name"])).remove(force=True)
        return self._run(kwargs)

    def _run(self, kwargs: Mapping[str, Any]) -> Container:
        from docker.errors import APIError

        try:
            container: Container = self.client.containers.run(**kwargs)
        except APIError as exc:
            raise ContainerManagerError(
                f"cannot start container {kwargs['name']} from {kwargs['image']}: "
                f"{exc.explanation or exc}"
            ) from exc
        except engine_errors() as exc:
            raise ContainerManagerError(f"cannot start container {kwargs['name']}: {exc}") from exc
        return container

    def last_exit_code(self, container: Container) -> int | None:
        """The exit status of the container's last run, from the engine's ``die`` events
        since it was created (a running container's attributes no longer carry it);
        ``None`` when there is none (the engine keeps only its latest events)."""
        created = str(container.attrs.get("Created") or "")
        try:
            since = int(specs.parse_timestamp(created).timestamp())
        except ValueError:
            return None
        code: int | None = None
        try:
            events = self.client.events(  # type: ignore[call-overload]  # str until: see below
                since=since,
                # Fractional: a whole-second ``until`` leaves out the die events of the
                # current second, the ones a just-restarted replica's status needs.
                until=f"{time.time():.9f}",
                filters={"container": str(container.id), "event": "die"},
                decode=True,
            )
            try:
                for event in events:
                    attributes = (event.get("Actor") or {}).get("Attributes") or {}
                    with contextlib.suppress(TypeError, ValueError):
                        code = int(str(attributes.get("exitCode")))
            finally:
                events.close()
        except engine_errors():
            return None
        return code

    def remove(self, containers: Iterable[Container]) -> list[str]:
        """Stop (gracefully: replicas, then frontends, then Redis) and remove containers;
        the names of those that could not be removed."""
        by_role: dict[str, list[Container]] = {}
        for c in containers:
            by_role.setdefault(container_role(c), []).append(c)
        left: list[str] = []
        for group_role in (*_STOP_ORDER, *(r for r in by_role if r not in _STOP_ORDER)):
            group = by_role.get(group_role, [])
            if not group:
                continue
            timeout = REDIS_STOP_TIMEOUT if group_role == specs.REDIS else self.stop_timeout
            with ThreadPoolExecutor(min(8, len(group))) as pool:
                names = list(pool.map(self._stop_one, group, [timeout] * len(group)))
            left += [n for n in names if n]
        return left

    def _stop_one(self, container: Container, timeout: float) -> str:
        """Stop and remove one container; its name if that failed, else ""."""
        from docker.errors import NotFound

        # A query frontend drains for longer: its label says how long.
        with contextlib.suppress(ValueError):
            timeout = max(timeout, float(container.labels.get(specs.STOP_TIMEOUT, "0")))
        try:
            if container.status in ("running", "restarting", "paused"):
                container.stop(timeout=int(timeout))
            container.remove(force=True)
        except NotFound:
            return ""
        except engine_errors():
            return container_name(container)
        return ""

    # ------------------------------------------------------------------ network, volume

    def ensure_network(self, network: str) -> bool:
        """Create the user-defined network unless it exists; whether it was created."""
        from docker.errors import NotFound

        try:
            self.client.networks.get(network)
            return False
        except NotFound:
            pass
        except engine_errors() as exc:
            raise ContainerManagerError(f"cannot inspect network {network}: {exc}") from exc
        try:
            self.client.networks.create(
                network, driver="bridge", labels={specs.CLUSTER: self.cluster_name}
            )
        except engine_errors() as exc:
            raise ContainerManagerError(f"cannot create network {network}: {exc}") from exc
        return True

    def remove_network(self, network: str) -> None:
        """Remove the network if this cluster created it (its label says so)."""
        with contextlib.suppress(*engine_errors()):
            found = self.client.networks.get(network)
            if (found.attrs.get("Labels") or {}).get(specs.CLUSTER) == self.cluster_name:
                found.remove()

    def ensure_volume(self, volume: str) -> None:
        from docker.errors import NotFound

        try:
            self.client.volumes.get(volume)
        except NotFound:
            try:
                self.client.volumes.create(volume, labels={specs.CLUSTER: self.cluster_name})
            except engine_errors() as exc:
                raise ContainerManagerError(f"cannot create volume {volume}: {exc}") from exc
        except engine_errors() as exc:
            raise ContainerManagerError(f"cannot inspect volume {volume}: {exc}") from exc

    def remove_volume(self, volume: str) -> None:
        with contextlib.suppress(*engine_errors()):
            self.client.volumes.get(volume).remove(force=True)

    def volume_exists(self, volume: str) -> bool:
        from docker.errors import NotFound

        try:
            self.client.volumes.get(volume)
        except NotFound:
            return False
        except engine_errors() as exc:
            raise ContainerManagerError(f"cannot inspect volume {volume}: {exc}") from exc
        return True

    def write_files(
        self, volume: str, image: str, files: Mapping[str, str], *, owner: int, mode: int
    ) -> None:
        """Write ``files`` (name -> text) into ``volume``, each owned by uid and gid
        ``owner`` with ``mode``, replacing what was there under those names. The engine
        does it (a container created from ``image`` and never started, with the volume
        mounted, and ``put_archive``): nothing touches the host's disk or a command line."""
        archive = _tar(files, owner=owner, mode=mode)
        with self._volume_container(volume, image, read_only=False) as container:
            if not container.put_archive(_VOLUME_MOUNT, archive):
                raise ContainerManagerError(f"cannot write into volume {volume}")

    def read_files(self, volume: str, image: str) -> dict[str, str]:
        """The files at the top of ``volume`` (name -> text); {} if there is no volume."""
        if not self.volume_exists(volume):
            return {}
        with self._volume_container(volume, image, read_only=True) as container:
            stream, _ = container.get_archive(f"{_VOLUME_MOUNT}/.")
            data = b"".join(stream)
        out: dict[str, str] = {}
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                name = member.name.removeprefix("./")
                extracted = tar.extractfile(member) if member.isfile() else None
                if extracted is not None and "/" not in name:
                    out[name] = extracted.read().decode("utf-8")
        return out

    @contextlib.contextmanager
    def _volume_container(self, volume: str, image: str, *, read_only: bool) -> Iterator[Container]:
        from docker.errors import APIError

        self.ensure_volume(volume)
        try:
            container: Container = self.client.containers.create(
                image,
                command=["true"],
                volumes={volume: {"bind": _VOLUME_MOUNT, "mode": "ro" if read_only else "rw"}},
                network_mode="none",
                labels={specs.CLUSTER: self.cluster_name, specs.ROLE: "credentials"},
            )
        except APIError as exc:
            raise ContainerManagerError(
                f"cannot reach volume {volume} through image {image}: {exc.explanation or exc}"
            ) from exc
        except engine_errors() as exc:
            raise ContainerManagerError(f"cannot reach volume {volume}: {exc}") from exc
        try:
            yield container
        except engine_errors() as exc:
            raise ContainerManagerError(f"cannot copy files of volume {volume}: {exc}") from exc
        finally:
            with contextlib.suppress(*engine_errors()):
                container.remove(force=True)

    # ------------------------------------------------------------------ images

    def remove_images(self, label: str) -> None:
        """Untag the images labelled ``label`` (``key=value``); in-use ones are kept."""
        with contextlib.suppress(*engine_errors()):
            images = self.client.images.list(filters={"label": label})
            for tag in (tag for image in images for tag in image.tags):
                with contextlib.suppress(*engine_errors()):
                    self.client.images.remove(tag)

    def require_image(self, image: str, what: str, *, pull: bool) -> None:
        """Raise ``DeployError`` unless ``image`` is here (or, with ``pull``, pullable)."""
        from docker.errors import ImageNotFound

        try:
            self.client.images.get(image)
            return
        except ImageNotFound:
            pass
        except engine_errors() as exc:
            raise ContainerManagerError(f"cannot inspect image {image}: {exc}") from exc
        if pull:
            with contextlib.suppress(*engine_errors()):
                self.client.images.pull(image)
                return
        raise DeployError(
            f"the image {image} of {what} is not in this Docker engine (removed?): deploy the "
            "model again under a new version"
        )

    def image_runtime(self, image: str) -> dict[str, str]:
        """Python, cloudpickle and numpy versions of an image (asked once per image id)."""
        failures: tuple[type[Exception], ...] = (*engine_errors(), ValueError, AttributeError)
        try:
            image_id = str(self.client.images.get(image).id)
            if image_id not in self._runtimes:
                out = self.client.containers.run(
                    image, ["python", "-c", _PROBE], remove=True, network_mode="none"
                )
                doc = json.loads(out.decode() if isinstance(out, bytes) else str(out))
                self._runtimes[image_id] = {str(k): str(v) for k, v in doc.items()}
        except failures as exc:
            raise DeployError(f"cannot read the Python runtime of image {image}: {exc}") from exc
        return self._runtimes[image_id]


# --------------------------------------------------------------------------- helpers


# Where a credentials helper container mounts the volume it reads or writes.
_VOLUME_MOUNT: Final = "/schooner-volume"


def _tar(files: Mapping[str, str], *, owner: int, mode: int) -> bytes:
    buf = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in files.items():
            data = (text.strip() + "\n").encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, now
            info.uid = info.gid = owner
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def container_role(container: Container) -> str:
    return str(container.labels.get(specs.ROLE, ""))


def container_name(container: Container) -> str:
    return str(container.name or container.id or "?")


def log_tail(container: Container, lines: int = 30) -> str:
    """The end of a container's log (stdout and stderr, over all its restarts)."""
    try:
        data = bytes(container.logs(stdout=True, stderr=True, tail=lines))
    except engine_errors() as exc:
        return f"(cannot read its log: {exc})"
    return data.decode("utf-8", errors="replace").rstrip()
