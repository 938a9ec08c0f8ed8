"""Image builds without an engine: build contexts, content hashes, the Dockerfiles'
arguments, and how the engine's build output becomes progress lines and errors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from admin.container_managers import _docker_images as images
from admin.container_managers._docker_images import BuildFailedError, BuildLog, ImageBuilder

DOCKERFILES = ("redis", "model-container", "frontend", "model")


def builder(**kw: Any) -> ImageBuilder:
    """A builder that never reaches an engine (no client): naming and arguments only."""
    defaults: dict[str, Any] = {
        "base_image": "b",
        "network_mode": None,
        "wheelhouse": None,
        "timeout": 1,
        "push": False,
        "report": print,
    }
    return ImageBuilder(None, **{**defaults, **kw})  # type: ignore[arg-type]


def test_the_dockerfiles_live_in_deploy_docker() -> None:
    root = images.dockerfiles_dir()
    assert root == Path(__file__).resolve().parents[2] / "deploy" / "docker"
    for name in DOCKERFILES:
        assert (root / f"{name}.Dockerfile").is_file()


def test_other_dockerfiles_may_be_given(tmp_path: Path) -> None:
    assert images.dockerfiles_dir(tmp_path) == images.dockerfiles_dir()  # not a Dockerfile dir
    (tmp_path / "model.Dockerfile").write_text("FROM x\n")
    assert images.dockerfiles_dir(tmp_path) == tmp_path


@pytest.mark.parametrize(
    ("dockerfile", "args"),
    [
        ("redis", {"BASE_IMAGE"}),
        ("model-container", {"BASE_IMAGE", "PIP_ARGS"}),
        ("frontend", {"MODEL_CONTAINER_IMAGE", "PIP_ARGS"}),
        ("model", {"MODEL_CONTAINER_IMAGE", "PIP_ARGS"}),
    ],
)
def test_each_dockerfile_declares_the_build_arguments_the_builder_passes(
    dockerfile: str, args: set[str]
) -> None:
    text = (images.dockerfiles_dir() / f"{dockerfile}.Dockerfile").read_text()
    declared = set(re.findall(r"^ARG (\w+)", text, flags=re.MULTILINE))
    assert declared == args


def test_the_base_defaults_to_python_slim_for_real_users() -> None:
    text = (images.dockerfiles_dir() / "model-container.Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim" in text


def test_requirements_come_from_the_project() -> None:
    base = images.requirements()
    assert any(r.startswith("numpy") for r in base)
    assert any(r.startswith("cloudpickle") for r in base)
    assert not any(r.startswith("fastapi") for r in base)
    frontend = images.requirements("frontend")
    assert any(r.startswith("fastapi") for r in frontend)
    assert any(r.startswith("redis") for r in frontend)
    # An extra that names Schooner's other extras is expanded.
    assert set(images.requirements("frontend")) <= set(images.requirements("local"))


def test_numpy_and_cloudpickle_are_pinned_to_this_clients_versions() -> None:
    pinned = images.pin_to_client(["numpy>=1.24", "cloudpickle>=3.0", "pyzmq>=25", "not valid!"])
    assert pinned == [
        f"numpy=={metadata.version('numpy')}",
        f"cloudpickle=={metadata.version('cloudpickle')}",
        "pyzmq>=25",
        "not valid!",
    ]


def test_the_content_digest_follows_every_file_and_argument(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("one")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_text("two")
    first = images.context_digest(tmp_path, {"X": "1"})
    assert images.context_digest(tmp_path, {"X": "1"}) == first
    assert images.context_digest(tmp_path, {"X": "2"}) != first
    (tmp_path / "sub" / "b").write_text("three")
    assert images.context_digest(tmp_path, {"X": "1"}) != first
    (tmp_path / "sub" / "b").write_text("two")
    (tmp_path / "sub" / "b").rename(tmp_path / "sub" / "c")
    assert images.context_digest(tmp_path, {"X": "1"}) != first


def test_sources_are_copied_without_bytecode(tmp_path: Path) -> None:
    images.copy_packages(tmp_path, ["model_container"])
    copied = {p.name for p in (tmp_path / "model_container").rglob("*")}
    assert "cli.py" in copied and "__init__.py" in copied
    assert "__pycache__" not in copied and not any(n.endswith(".pyc") for n in copied)


def test_a_wheelhouse_is_copied_and_makes_pip_offline(tmp_path: Path) -> None:
    house = tmp_path / "house"
    house.mkdir()
    (house / "x-1.0-py3-none-any.whl").write_bytes(b"w")
    (house / "notes.txt").write_text("not a package")
    images.copy_wheelhouse(tmp_path / "ctx", house)
    assert [p.name for p in (tmp_path / "ctx").iterdir()] == ["x-1.0-py3-none-any.whl"]
    images.copy_wheelhouse(tmp_path / "empty", None)
    assert (tmp_path / "empty").is_dir()
    offline, online = builder(wheelhouse=house), builder()
    assert "--no-index" in offline.pip_args and "--no-index" not in online.pip_args
    assert "--find-links /opt/schooner/wheels" in online.pip_args


def test_a_registry_prefixes_every_image_name() -> None:
    local, shared = builder(), builder(registry="reg.example.com/team/")
    assert local.name("frontend", "abc") == "schooner/frontend:abc"
    assert shared.name("frontend", "abc") == "reg.example.com/team/schooner/frontend:abc"


# --------------------------------------------------------------------------- build output


def test_build_output_is_reported_line_by_line_without_the_engines_bookkeeping() -> None:
    lines: list[str] = []
    log = BuildLog(lines.append, "m:1")
    log.feed({"stream": "Step 1/3 : FROM base\n"})
    log.feed({"stream": " ---> 0123456789ab\n"})
    log.feed({"stream": "Step 2/3 : RUN pip install x\n ---> Running in fedcba987654\n"})
    log.feed({"stream": "\x1b[91mERROR: No matching distribution found for x\n\x1b[0m"})
    log.feed({"stream": "Removing intermediate container fedcba987654\n"})
    log.feed({"aux": {"ID": "sha256:feed"}})
    assert lines == [
        "[m:1] Step 1/3 : FROM base",
        "[m:1] Step 2/3 : RUN pip install x",
        "[m:1] ERROR: No matching distribution found for x",
    ]
    assert log.step_images == ["0123456789ab"]
    assert log.image_id == "sha256:feed"
    log.feed({"error": "\x1b[91mThe command returned a non-zero code: 1\x1b[0m"})
    failure = log.failure()
    assert failure.startswith("The command returned a non-zero code: 1\n")
    assert "No matching distribution found for x" in failure and "\x1b" not in failure


class FakeAPI:
    """Stands in for ``docker.APIClient.build``: replays chunks, records the arguments."""

    def __init__(self, chunks: list[dict[str, Any]], raises: Exception | None = None) -> None:
        self.chunks = chunks
        self.raises = raises
        self.kwargs: dict[str, Any] = {}

    def build(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.kwargs = kwargs
        yield from self.chunks
        if self.raises is not None:
            raise self.raises


def test_a_build_error_raises_with_the_output_tail(tmp_path: Path) -> None:
    api = FakeAPI([{"stream": "Collecting nope\n"}, {"error": "returned a non-zero code: 1"}])
    log = BuildLog(lambda _: None, "m:1")
    with pytest.raises(BuildFailedError, match=r"(?s)non-zero code: 1.*Collecting nope"):
        images.stream_build(
            api,  # type: ignore[arg-type]
            context=tmp_path,
            tag="t",
            buildargs={"A": "1"},
            labels={},
            network_mode="host",
            timeout=5,
            log=log,
        )
    assert api.kwargs["network_mode"] == "host" and api.kwargs["decode"] is True
    assert api.kwargs["buildargs"] == {"A": "1"} and api.kwargs["forcerm"] is True


def test_a_broken_connection_to_the_engine_is_a_build_failure(tmp_path: Path) -> None:
    from docker.errors import APIError

    api = FakeAPI([{"stream": "Step 1/2 : FROM x\n"}], raises=APIError("engine went away"))
    with pytest.raises(BuildFailedError, match="the build stopped: engine went away"):
        images.stream_build(
            api,  # type: ignore[arg-type]
            context=tmp_path,
            tag="t",
            buildargs={},
            labels={},
            network_mode=None,
            timeout=5,
            log=BuildLog(lambda _: None, "x"),
        )
    assert "network_mode" not in api.kwargs


# --------------------------------------------------------------------------- model images

DIGEST = "9" * 64


def test_a_model_image_is_named_by_its_version_and_bundle_digest() -> None:
    assert builder().model_image_name("iris", "1", DIGEST) == "schooner/model-iris:1-999999999999"
    assert images.model_image_name("reg:5000/team", "iris", "1", DIGEST) == (
        "reg:5000/team/schooner/model-iris:1-999999999999"
    )


class FakeImage:
    def __init__(self, labels: dict[str, str] | None) -> None:
        self.labels = labels
        self.tags: list[str] = []

    def tag(self, repository: str, tag: str) -> bool:
        self.tags.append(f"{repository}:{tag}")
        return True


class FakeImages:
    def __init__(self, known: dict[str, FakeImage]) -> None:
        self.known = known

    def get(self, name: str) -> FakeImage:
        from docker.errors import ImageNotFound

        if name not in self.known:
            raise ImageNotFound(f"no such image: {name}")
        return self.known[name]


class FakeClient:
    def __init__(self, known: dict[str, FakeImage]) -> None:
        self.images = FakeImages(known)


def test_a_prebuilt_image_is_taken_by_the_bundle_digest_its_label_carries() -> None:
    prebuilt = FakeImage({"schooner.bundle-sha256": DIGEST, "schooner.image.model": "iris"})
    b = builder()
    b.client = FakeClient({"mine/iris:v1": prebuilt})  # type: ignore[assignment]
    assert b.adopt_model_image("mine/iris:v1", "iris", "1") == DIGEST
    # Tagged under the name the manager derives again from what Redis records.
    assert prebuilt.tags == [b.model_image_name("iris", "1", DIGEST)]


@pytest.mark.parametrize(
    "labels",
    [None, {}, {"schooner.bundle-sha256": ""}, {"schooner.bundle-sha256": "../../etc/passwd"}],
)
def test_an_image_without_a_bundle_digest_label_is_refused(labels: dict[str, str] | None) -> None:
    from admin import DeployError

    unlabelled = FakeImage(labels)
    b = builder()
    b.client = FakeClient({"attacker/evil:latest": unlabelled})  # type: ignore[assignment]
    with pytest.raises(DeployError, match=r"carries no valid schooner\.bundle-sha256 label"):
        b.adopt_model_image("attacker/evil:latest", "iris", "1")
    assert unlabelled.tags == []


def test_an_image_that_is_not_there_is_refused() -> None:
    from admin import DeployError

    b = builder()
    b.client = FakeClient({})  # type: ignore[assignment]
    with pytest.raises(DeployError, match="the image nowhere:1 is not in this Docker engine"):
        b.adopt_model_image("nowhere:1", "iris", "1")


class FakeNetworks:
    def __init__(self, names: list[str]) -> None:
        self.names = names

    def list(self, names: list[str]) -> list[str]:
        return [n for n in self.names if n in names]


class NetworkClient:
    def __init__(self, names: list[str]) -> None:
        self.networks = FakeNetworks(names)


@pytest.mark.parametrize(
    ("networks", "given", "used"),
    [
        (["bridge", "host", "none"], None, None),  # the engine's default bridge
        (["host", "none"], None, "host"),  # dockerd --bridge=none: no network but the host's
        (["host", "none"], "custom", "custom"),  # what the user names is kept
    ],
)
def test_builds_use_the_hosts_network_on_an_engine_without_a_bridge(
    networks: list[str], given: str | None, used: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the process already said (once per process): nothing yet, whatever ran before.
    monkeypatch.setattr(images, "_SAID", set())
    reports: list[str] = []
    b = builder(network_mode=given, report=reports.append)
    b.client = NetworkClient(networks)  # type: ignore[assignment]
    assert b._build_network() == used
    assert bool(reports) == (used == "host" and given is None)


@pytest.mark.parametrize(
    ("here", "given", "used"),
    [
        (["python:3.11-slim", "schooner/base-python:3.11"], None, "python:3.11-slim"),
        (["schooner/base-python:3.11"], None, "schooner/base-python:3.11"),  # no registry
        ([], None, "python:3.11-slim"),  # neither: the build pulls the default
        (["schooner/base-python:3.11"], "me/python:3.11", "me/python:3.11"),  # given: kept
    ],
)
def test_the_default_base_falls_back_to_the_one_built_without_a_registry(
    here: list[str], given: str | None, used: str
) -> None:
    b = builder(base_image=given or images.DEFAULT_BASE_IMAGE, report=lambda _: None)
    b.client = FakeClient({name: FakeImage({}) for name in here})  # type: ignore[assignment]
    assert b._base() == used
