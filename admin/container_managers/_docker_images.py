"""The images of a Docker cluster: build contexts from ``deploy/docker/``, tags by content
hash, and builds whose output is streamed as progress.

    BASE_IMAGE (python:3.11-slim, or     the OS and Python; a build argument, never built here
      schooner/base-python:3.11)
    schooner/redis:<hash>                redis-server (Debian's) on BASE_IMAGE
    schooner/model-container:<hash>      a venv with Schooner's base dependencies, numpy and
                                         cloudpickle pinned to this client's versions, and the
                                         model_container package copied from this client
    schooner/frontend:<hash>             model-container + the frontends' dependencies and
                                         both frontend packages
    schooner/model-<name>:<version>-<sha>    model-container + pkgs_to_install + the bundle

Names get the ``registry`` prefix when one is given. ``<hash>`` is 12 hex digits of a
sha256 over everything in the build context and the build arguments, so an image is built
exactly when what goes into it changed, and reused otherwise. A model image is named by
its version and bundle digest instead (``<sha>``: its first 12 hex digits), so that the
manager finds it again from what Redis records (name, version, digest) and from nothing a
client says; it carries the full digest in the label ``schooner.bundle-sha256``, which
its replicas are also given and check the bundle in the image against. Its content hash
(label ``schooner.image.content``) still decides whether it is rebuilt. The Schooner code in the
images is copied from the packages this client imports, so images always run the same
code as the client that built them.

Third-party packages come from the package index, inside the build; with a
``wheelhouse`` (a directory of wheels, e.g. filled by ``pip download``) they come from it
alone (``--no-index``), for machines without access to an index.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import re
import shutil
import site
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from admin._files import os_errors
from admin.container_managers._bundles import IMAGE_BUNDLE_SHA256, image_bundle_digest
from admin.container_managers._docker_engine import engine_errors
from admin.exceptions import ContainerManagerError, DeployError, SchoonerError

if TYPE_CHECKING:
    import docker

SOURCE_ROOT: Final = Path(__file__).resolve().parents[2]  # holds admin/, model_container/...
# What the images are built FROM unless a manager is given base_image=.
DEFAULT_BASE_IMAGE: Final = "python:3.11-slim"
# Its equivalent built without a registry by deploy/docker/build-base-image.sh: used
# instead when the engine has it and not the default (which it may be unable to pull).
LOCAL_BASE_IMAGE: Final = "schooner/base-python:3.11"
# What this process has told the user of its builds (a manager makes a builder per build).
_SAID: set[str] = set()
WHEELS_DIR: Final = "/opt/schooner/wheels"
# Packages whose versions a pickle depends on: the model image gets this client's.
PINNED_TO_CLIENT: Final = ("numpy", "cloudpickle")
_TAIL_LINES: Final = 40
# The engine colours a build step's stderr with terminal escapes.
_ANSI: Final = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# The classic builder's line naming the image a step made.
_STEP_IMAGE: Final = re.compile(r"^ ---> ([0-9a-f]{12,64})$")
# Image labels. Containers inherit their image's labels, so these keys differ from the
# containers' own (``schooner.cluster``...): a container run by hand from a model image
# must not look like a member of the cluster.
IMAGE_CONTENT: Final = "schooner.image.content"  # the full content hash
IMAGE_CLUSTER: Final = "schooner.image.cluster"  # model images: the cluster they were built for
IMAGE_MODEL: Final = "schooner.image.model"
IMAGE_VERSION: Final = "schooner.image.version"


def image_name(registry: str, repository: str, tag: str) -> str:
    """``[registry/]schooner/<repository>:<tag>``."""
    prefix = f"{registry.rstrip('/')}/" if registry else ""
    return f"{prefix}schooner/{repository}:{tag}"


def model_image_name(registry: str, name: str, version: str, bundle_sha256: str) -> str:
    """The image of a model version whose bundle has this digest: derived by the manager
    from what Redis records, never named by a client."""
    return image_name(registry, f"model-{name}", f"{version}-{bundle_sha256[:12]}")


def dockerfiles_dir(override: Path | None = None) -> Path:
    """``override``, else ``deploy/docker`` of a checkout, else the copy installed with the
    package (under ``sys.prefix`` or the user base)."""
    candidates = [override] if override is not None else []
    candidates += [
        SOURCE_ROOT / "deploy" / "docker",
        Path(sys.prefix) / "share" / "schooner" / "docker",
        Path(site.getuserbase()) / "share" / "schooner" / "docker",
    ]
    for candidate in candidates:
        if candidate is not None and (candidate / "model.Dockerfile").is_file():
            return candidate
    raise ContainerManagerError(
        f"the Dockerfiles of Schooner were not found in {', '.join(map(str, candidates))}: "
        "reinstall schooner, or pass DockerContainerManager(dockerfiles=...) the "
        "deploy/docker folder of a Schooner checkout"
    )


# --------------------------------------------------------------------------- requirements


def requirements(extra: str | None = None) -> list[str]:
    """Schooner's own requirements: the base install, or those an extra adds.

    Read from the checkout's ``pyproject.toml`` when there is one (it may be newer than
    the installed metadata), else from the installed distribution's metadata.
    """
    pyproject = SOURCE_ROOT / "pyproject.toml"
    if pyproject.is_file():
        try:
            project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        except (OSError, ValueError, KeyError) as exc:
            raise ContainerManagerError(
                f"cannot read Schooner's requirements from {pyproject} ({exc!r}): restore "
                "that file from the Schooner checkout"
            ) from exc
        if extra is None:
            return list(project.get("dependencies", []))
        found: list[str] = []
        for text in project.get("optional-dependencies", {}).get(extra, []):
            req = Requirement(text)
            if canonicalize_name(req.name) == "schooner":
                for sub in sorted(req.extras):
                    found += requirements(sub)
            else:
                found.append(text)
        return found
    try:
        listed = metadata.requires("schooner") or []
    except metadata.PackageNotFoundError:
        raise ContainerManagerError(
            "cannot tell Schooner's requirements: it is neither a checkout nor installed"
        ) from None
    out = []
    for text in listed:
        req = Requirement(text)
        marker = str(req.marker or "")
        in_extra = f'extra == "{extra}"' in marker
        if (extra is None and "extra ==" not in marker) or in_extra:
            req.marker = None
            out.append(str(req))
    return out


def pin_to_client(reqs: Iterable[str]) -> list[str]:
    """``reqs`` with numpy and cloudpickle pinned to the versions this client runs."""
    out = []
    for text in reqs:
        try:
            name = canonicalize_name(Requirement(text).name)
        except InvalidRequirement:
            out.append(text)
            continue
        if name in PINNED_TO_CLIENT:
            try:
                out.append(f"{name}=={metadata.version(name)}")
                continue
            except metadata.PackageNotFoundError:
                pass
        out.append(text)
    return out


# --------------------------------------------------------------------------- contexts


def copy_packages(dest: Path, packages: Sequence[str]) -> None:
    """Copy Schooner's import packages (sources only) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for package in packages:
        shutil.copytree(
            SOURCE_ROOT / package,
            dest / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"),
        )


def copy_wheelhouse(dest: Path, wheelhouse: Path | None) -> None:
    """The wheels (and sdists) of ``wheelhouse`` into ``dest``, which always exists."""
    dest.mkdir(parents=True, exist_ok=True)
    if wheelhouse is None:
        return
    if not wheelhouse.is_dir():
        raise ContainerManagerError(f"wheelhouse {wheelhouse} is not a directory")
    for item in sorted(wheelhouse.iterdir()):
        if item.is_file() and item.name.endswith((".whl", ".tar.gz", ".zip")):
            shutil.copy2(item, dest / item.name)


def context_digest(root: Path, buildargs: Mapping[str, str]) -> str:
    """sha256 of every file's path and bytes under ``root``, and of the build arguments."""
    digest = hashlib.sha256()
    for key in sorted(buildargs):
        digest.update(f"arg {key}={buildargs[key]}\0".encode())
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"file {path.relative_to(root).as_posix()}\0".encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@contextmanager
def new_context(dockerfile: Path) -> Iterator[Path]:
    """A temporary build context holding ``dockerfile`` as ``Dockerfile``."""
    with tempfile.TemporaryDirectory(prefix="schooner-build-") as tmp:
        root = Path(tmp)
        shutil.copyfile(dockerfile, root / "Dockerfile")
        yield root


# --------------------------------------------------------------------------- builds


class BuildLog:
    """Follows the engine's build output: progress lines, the tail, the error, the id."""

    def __init__(self, report: Callable[[str], None], what: str) -> None:
        self.report = report
        self.what = what
        self.tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self.error = ""
        self.image_id = ""
        self.step_images: list[str] = []  # what each step made, for cleaning up a failure

    def feed(self, chunk: Mapping[str, Any]) -> None:
        if "error" in chunk:
            self.error = _ANSI.sub("", str(chunk.get("error") or "")).strip() or "unknown error"
            return
        aux = chunk.get("aux")
        if isinstance(aux, Mapping) and aux.get("ID"):
            self.image_id = str(aux["ID"])
        text = chunk.get("stream") or chunk.get("status") or ""
        for raw in _ANSI.sub("", str(text)).splitlines():
            line = raw.rstrip()
            if match := _STEP_IMAGE.match(line):
                self.step_images.append(match.group(1))
            # The engine's own bookkeeping lines say nothing to a user.
            if not line.strip() or line.startswith((" ---> ", "Removing intermediate")):
                continue
            self.tail.append(line)
            self.report(f"[{self.what}] {line}")

    def failure(self, error: str | None = None) -> str:
        """What went wrong, with the end of the output (where pip says why)."""
        tail = "\n".join(self.tail)
        return f"{error or self.error}\nThe end of the build output:\n{tail}"


def stream_build(
    api: docker.APIClient,
    *,
    context: Path,
    tag: str,
    buildargs: Mapping[str, str],
    labels: Mapping[str, str],
    network_mode: str | None,
    timeout: float,
    log: BuildLog,
) -> None:
    """Build ``context`` as ``tag``; the output goes to ``log``. Raises ``BuildFailedError``."""

    kwargs: dict[str, Any] = {
        "path": str(context),
        "tag": tag,
        "buildargs": dict(buildargs),
        "labels": dict(labels),
        "rm": True,
        "forcerm": True,
        "pull": False,
        "decode": True,
        "timeout": int(timeout),
    }
    if network_mode:
        kwargs["network_mode"] = network_mode
    failures: tuple[type[Exception], ...] = (*engine_errors(), OSError)
    try:
        for chunk in api.build(**kwargs):
            log.feed(chunk)
    except failures as exc:
        raise BuildFailedError(log.failure(f"the build stopped: {exc}")) from exc
    if log.error:
        raise BuildFailedError(log.failure())


def _has_default_bridge(client: docker.DockerClient) -> bool:
    """Whether the engine has its default ``bridge`` network (``True`` if it cannot say:
    the build then runs as the engine's default would)."""
    failures: tuple[type[Exception], ...] = (*engine_errors(), OSError)
    try:
        return bool(client.networks.list(names=["bridge"]))
    except failures:
        return True


def _content_of(image: Any) -> str:
    """The content hash an image was built from (its label), ``""`` if it has none."""
    return str((image.labels or {}).get(IMAGE_CONTENT, ""))


class BuildFailedError(SchoonerError):
    """An image build failed; the message holds the error and the end of the output.

    Private: ``ImageBuilder`` raises it again as the error of what it was building
    (``ContainerManagerError`` for the cluster's images, ``DeployError`` for a model's).
    """


class ImageBuilder:
    """Finds or builds (and optionally pushes) the images of a cluster."""

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        registry: str = "",
        base_image: str,
        network_mode: str | None,
        wheelhouse: Path | None,
        timeout: float,
        push: bool,
        report: Callable[[str], None],
        dockerfiles: Path | None = None,
    ) -> None:
        self.client = client
        self.dockerfiles = dockerfiles
        self.registry = registry.rstrip("/")
        self.base_image = base_image
        self.network_mode = network_mode
        self.wheelhouse = wheelhouse
        self.timeout = timeout
        self.push = push
        self.report = report

    def _build_network(self) -> str | None:
        """The network a build runs in: the one given, else the engine's default bridge;
        on an engine without one (``dockerd --bridge=none``) a build there would have no
        network and could not reach the package index, so it runs in the host's."""
        if self.network_mode is None and not _has_default_bridge(self.client):
            self.network_mode = "host"
            self._say_once(
                "the engine has no default bridge network: builds use the host's network"
            )
        return self.network_mode

    @contextmanager
    def _context(
        self, dockerfile: str, what: str, error: type[SchoonerError] = ContainerManagerError
    ) -> Iterator[Path]:
        """A build context for ``what``; an ``OSError`` while it is filled or read (a
        full disk, an unreadable file) is raised as ``error``."""
        with (
            os_errors(f"prepare the build context of {what}", error),
            new_context(dockerfiles_dir(self.dockerfiles) / dockerfile) as ctx,
        ):
            yield ctx

    def name(self, repository: str, tag: str) -> str:
        return image_name(self.registry, repository, tag)

    @property
    def pip_args(self) -> str:
        offline = " --no-index" if self.wheelhouse is not None else ""
        return f"--find-links {WHEELS_DIR}{offline}"

    # ------------------------------------------------------------------ cluster images

    def redis_image(self) -> str:
        what = "the Redis image"
        with self._context("redis.Dockerfile", what) as ctx:
            args = {"BASE_IMAGE": self._base()}
            return self._ensure(ctx, "redis", args, what, also=self._base_id())

    def model_container_image(self) -> str:
        what = "the model-container base image"
        with self._context("model-container.Dockerfile", what) as ctx:
            copy_packages(ctx / "src", ["model_container"])
            copy_wheelhouse(ctx / "wheels", self.wheelhouse)
            reqs = pin_to_client(requirements())
            (ctx / "requirements.txt").write_text("\n".join(reqs) + "\n", encoding="utf-8")
            args = {"BASE_IMAGE": self._base(), "PIP_ARGS": self.pip_args}
            return self._ensure(ctx, "model-container", args, what, also=self._base_id())

    def frontend_image(self, model_container: str) -> str:
        with self._context("frontend.Dockerfile", "the frontend image") as ctx:
            copy_packages(ctx / "src", ["query_frontend", "management_frontend"])
            reqs = requirements("frontend")
            (ctx / "requirements.txt").write_text("\n".join(reqs) + "\n", encoding="utf-8")
            args = {"MODEL_CONTAINER_IMAGE": model_container, "PIP_ARGS": self.pip_args}
            return self._ensure(ctx, "frontend", args, "the frontend image")

    # ------------------------------------------------------------------ model images

    def model_image_name(self, name: str, version: str, bundle_sha256: str) -> str:
        return model_image_name(self.registry, name, version, bundle_sha256)

    def model_image(
        self,
        model_container: str,
        name: str,
        version: str,
        bundle_dir: Path,
        bundle_sha256: str,
        pkgs: Sequence[str],
        labels: Mapping[str, str],
    ) -> str:
        labels = {**labels, IMAGE_BUNDLE_SHA256: bundle_sha256}
        with self._context("model.Dockerfile", f"{name}:{version}", DeployError) as ctx:
            shutil.copytree(bundle_dir, ctx / "bundle", symlinks=True)
            text = "".join(f"{p}\n" for p in pkgs)
            (ctx / "requirements.txt").write_text(text, encoding="utf-8")
            args = {"MODEL_CONTAINER_IMAGE": model_container, "PIP_ARGS": self.pip_args}
            return self._ensure(
                ctx,
                f"model-{name}",
                args,
                f"{name}:{version}",
                fixed_tag=self.model_image_name(name, version, bundle_sha256),
                labels=labels,
                error=DeployError,
                also=labels,  # the cluster's own image: destroy() removes it
            )

    def adopt_model_image(self, image: str, name: str, version: str) -> str:
        """Tag a prebuilt model image as the image of ``name:version``, and return the
        bundle digest its label carries; refused (``DeployError``) without that label."""
        try:
            found = self.client.images.get(image)
        except engine_errors():
            if not (self.registry and self._pulled(image)):
                raise DeployError(
                    f"cannot deploy {name}:{version}: the image {image} is not in this Docker "
                    "engine" + (" nor pullable" if self.registry else "")
                ) from None
            found = self.client.images.get(image)
        labels = {str(k): str(v) for k, v in (found.labels or {}).items()}
        digest = image_bundle_digest(name, version, image, labels)
        repository, _, tag = self.model_image_name(name, version, digest).rpartition(":")
        try:
            found.tag(repository, tag)
        except engine_errors() as exc:
            raise DeployError(f"cannot tag {image} as {repository}:{tag}: {exc}") from exc
        if self.push:
            self.push_image(f"{repository}:{tag}", DeployError)
        return digest

    # ------------------------------------------------------------------ the work

    def _base(self) -> str:
        """The image builds start ``FROM``: the one given; for the default
        (``python:3.11-slim``) when the engine lacks it, ``schooner/base-python:3.11`` if
        ``deploy/docker/build-base-image.sh`` built it here (no registry needed)."""
        if (
            self.base_image == DEFAULT_BASE_IMAGE
            and not self._has(DEFAULT_BASE_IMAGE)
            and self._has(LOCAL_BASE_IMAGE)
        ):
            self._say_once(
                f"{DEFAULT_BASE_IMAGE} is not in this engine: building from "
                f"{LOCAL_BASE_IMAGE}, its equivalent built by deploy/docker/build-base-image.sh"
            )
            self.base_image = LOCAL_BASE_IMAGE
        return self.base_image

    def _say_once(self, line: str) -> None:
        if line not in _SAID:
            _SAID.add(line)
            self.report(line)

    def _has(self, image: str) -> bool:
        try:
            self.client.images.get(image)
        except engine_errors():
            return False
        return True

    def _base_id(self) -> dict[str, str]:
        """The base image's id when it is here, so that a rebuilt base makes new tags."""

        try:
            return {"base image id": str(self.client.images.get(self._base()).id)}
        except engine_errors():
            return {}

    def _ensure(
        self,
        ctx: Path,
        repository: str,
        buildargs: dict[str, str],
        what: str,
        *,
        fixed_tag: str = "",
        labels: Mapping[str, str] | None = None,
        error: type[SchoonerError] = ContainerManagerError,
        also: Mapping[str, str] | None = None,
    ) -> str:
        """``tag`` if that image exists (or, with a registry, can be pulled); else build it.

        ``also`` is hashed with the context: what the image depends on besides it. A
        ``fixed_tag`` names the image instead of the hash; an image found under it is
        reused only if it was built from the same content, and rebuilt otherwise.
        """
        from docker.errors import ImageNotFound

        digest = context_digest(ctx, {**buildargs, **(also or {})})
        tag = fixed_tag or self.name(repository, digest[:12])
        try:
            found = self.client.images.get(tag)
        except ImageNotFound:
            found = None
        except engine_errors() as exc:
            raise error(f"cannot inspect image {tag}: {exc}") from exc
        if found is not None and (not fixed_tag or _content_of(found) == digest):
            self.report(f"{what}: image {tag} is up to date")
            return tag
        if found is None and self.registry and self._pulled(tag):
            pulled = self.client.images.get(tag) if fixed_tag else None
            if pulled is None or _content_of(pulled) == digest:
                return tag
        self.report(f"building {what} as {tag}")
        log = BuildLog(self.report, what)
        try:
            stream_build(
                self.client.api,
                context=ctx,
                tag=tag,
                buildargs=buildargs,
                labels={IMAGE_CONTENT: digest, **(labels or {})},
                network_mode=self._build_network(),
                timeout=self.timeout,
                log=log,
            )
        except BuildFailedError as exc:
            self._forget(log.step_images)
            hint = ""
            if self.base_image.partition(":")[0] in str(exc).partition("\n")[0]:
                hint = (
                    f"\nIf the base image {self.base_image} is missing, build it (see "
                    "deploy/README.md) or pass DockerContainerManager(base_image=...)"
                )
            raise error(f"building {what} failed: {exc}{hint}") from exc
        if self.push:
            self.push_image(tag, error)
        self.report(f"built {what}: {tag}")
        return tag

    def _forget(self, step_images: Sequence[str]) -> None:
        """Remove the untagged image a failed build left (its last good step), unless
        another image is built on it; the engine then removes its untagged parents."""

        if not step_images:
            return
        with contextlib.suppress(*engine_errors()):
            if not self.client.images.get(step_images[-1]).tags:  # never the FROM image
                self.client.images.remove(step_images[-1])

    def _pulled(self, tag: str) -> bool:
        self.report(f"pulling {tag}")
        try:
            self.client.images.pull(tag)
        except engine_errors():
            return False
        return True

    def push_image(self, tag: str, error: type[SchoonerError] = ContainerManagerError) -> None:
        """Push ``tag`` to its registry (layers it holds already are skipped)."""
        self.report(f"pushing {tag}")
        try:
            for chunk in self.client.api.push(tag, stream=True, decode=True):
                if "error" in chunk:
                    raise error(f"pushing {tag} failed: {chunk['error']}")
        except engine_errors() as exc:
            raise error(f"pushing {tag} failed: {exc}") from exc
