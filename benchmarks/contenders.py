"""The contenders: each group starts its servers, yields the endpoints to drive, stops them.

A group is a context manager yielding ``Target`` s; leaving it (normally, on an error or
on Ctrl-C) stops every process the group started.

- ``schooner``: one local Schooner cluster (the public admin API, LocalContainerManager)
  with four models' worth of apps: a no-op and the sklearn model with adaptive batching,
  the sklearn model with batch size 1, the cache-hit path (a constant body), the
  sklearn model behind an app with a 20 ms SLO, and three copies of the sklearn model
  behind an exp3 app (one model per query) and an exp4 app (all three, combined).
- ``schooner-plain-rpc``: a second local cluster serving only the sklearn app, its RPC
  without CURVE (``SCHOONER_INSECURE_RPC=1``, which the local manager passes to every
  process it starts): beside ``schooner-sklearn`` in the same run, what CURVE costs.
- ``schooner-2qf``: the sklearn app on a cluster with 2 query frontend processes
  (``query_frontends=2``), if the local manager takes it: beside ``schooner-sklearn``,
  what a second frontend buys on this machine.
- ``schooner-ipc``: the sklearn app on a cluster whose replicas reach the query frontend
  over ``ipc://`` (``rpc_ipc=True``; CURVE kept): beside ``schooner-tcp``, TCP
  against a unix socket on one host.
- ``schooner-tcp``: the sklearn app with its replicas on ZeroMQ over TCP + CURVE
  (``rpc_unix=False``; the ``schooner`` group runs the local default, the direct
  unix-socket transport): what the transport costs, and how Docker and Kubernetes run.
- ``schooner-pipeline`` (issue 17): a featuriser (``strings`` -> doubles) and a
  scikit-learn classifier as one app with a two-stage pipeline (``schooner-pipeline``)
  and as two apps the client chains (``schooner-chained``), on one cluster, both driven
  by ``benchmarks.pyload`` (wrk cannot chain two calls).
- ``raw-asgi``: a bare ASGI app under uvicorn answering a constant: the HTTP ceiling.
- ``starlette-sklearn``: Starlette with the model in-process, one predict per request.
- ``minimal``: the floor (issue 14), ``baselines/minimal_pipeline.py``: uvicorn, a greedy
  asyncio batcher (<= 64 rows), one ZeroMQ DEALER to a model process answering on a
  blocking ROUTER, float64 rows as raw bytes; no cache, SLO, selection or metrics. The
  sklearn model (``minimal-sklearn``) and a no-op model (``minimal-noop``), each its own
  pair of processes.
- ``minimal-pipeline``: the floor of ``schooner-pipeline``,
  ``baselines/minimal_two_stage.py``: the minimal pipeline with two stages (a batcher
  and a model process each: the featuriser, then the classifier), driven by pyload.
- ``ray-serve``: Ray Serve with ``@serve.batch(64, 2 ms)``, in its own venv, if present,
  behind Serve's default proxy.
- ``ray-serve-direct``: the same, in Ray's best configuration for one ingress
  deployment: direct ingress (``RAY_SERVE_ENABLE_DIRECT_INGRESS=1``, wrk calls the
  replica's own port) with ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.baselines.model import NUM_FEATURES, train_model
from benchmarks.procs import (
    Server,
    free_port,
    free_port_run,
    free_ports,
    running,
    wait_http_ok,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RAY_PYTHON = REPO_ROOT / "benchmarks" / ".venv-ray" / "bin" / "python"
RAY_SETUP = (
    "python3.11 -m venv benchmarks/.venv-ray && "
    "benchmarks/.venv-ray/bin/pip install 'ray[serve]' scikit-learn orjson"
)
PROBE_BODY = b'{"input":[' + b",".join([b"0.5"] * NUM_FEATURES) + b"]}"


@dataclass(frozen=True)
class Target:
    """One endpoint to drive with wrk."""

    name: str
    description: str
    url: str
    mode: str  # "random" (a fresh input per request), "constant" (cache hits), "v2" (OIP)
    concurrencies: tuple[int, ...]
    pids: Callable[[], list[int]]  # the server processes, for pinning
    profile_pid: int | None = None  # the process py-spy should look at
    # Sent as "Authorization: Bearer" by wrk (through its environment, never its argv).
    api_key: str | None = None
    # "wrk", or "pyload" (benchmarks.pyload: a Python client that can chain calls).
    driver: str = "wrk"
    # pyload only: the calls after ``url``, each posted the previous answer's output.
    then: tuple[str, ...] = ()

    @property
    def urls(self) -> tuple[str, ...]:
        return (self.url, *self.then)


@dataclass
class Settings:
    out_dir: Path
    concurrencies: tuple[int, ...]
    slo_ms: float = 100.0
    tight_slo_ms: float = 20.0
    tight_slo_concurrency: int = 64
    ray_python: Path = DEFAULT_RAY_PYTHON
    start_timeout: float = 120.0
    notes: list[str] = field(default_factory=list)

    @property
    def log_dir(self) -> Path:
        return self.out_dir / "logs"


Group = Callable[[Settings], contextlib.AbstractContextManager[list[Target]]]


# ---------------------------------------------------------------------------- Schooner


def accepts_query_frontends() -> bool:
    """Whether this checkout's LocalContainerManager runs several query frontends."""
    from admin import LocalContainerManager

    return "query_frontends" in inspect.signature(LocalContainerManager).parameters


@contextlib.contextmanager
def _local_cluster(name: str, settings: Settings, **options: Any) -> Iterator[tuple[Any, Any]]:
    """A local Schooner cluster on free ports in a temporary data dir: its manager and a
    Connection to ``start()``; it is stopped after, its logs in ``settings.log_dir / name``.
    ``options`` go to LocalContainerManager as they are."""
    from admin import Connection, LocalContainerManager

    query_port, management_port, redis_port = free_ports(3)
    frontends = int(options.get("query_frontends", 1))
    rpc_port = free_port_run(frontends, avoid=(query_port, management_port, redis_port))
    with tempfile.TemporaryDirectory(prefix=f"{name}-") as tmp:
        manager = LocalContainerManager(
            data_dir=tmp,
            cluster_name=name,
            query_port=query_port,
            management_port=management_port,
            rpc_port=rpc_port,
            redis_port=redis_port,
            **options,
        )
        conn = Connection(manager, progress=lambda line: print(f"  [{name}] {line}"))
        try:
            yield manager, conn
        finally:
            with contextlib.suppress(Exception):
                conn.get_logs(settings.log_dir / name)
            conn.stop_all()


def _processes(manager: Any) -> tuple[Callable[[], list[int]], int | None]:
    """What a target of this cluster samples: its running pids, and the query frontend's."""

    def pids() -> list[int]:
        return [int(p["pid"]) for p in manager.processes() if p["running"]]

    query_pid = next((int(p["pid"]) for p in manager.processes() if p["role"] == "query"), None)
    return pids, query_pid


@contextlib.contextmanager
def schooner(settings: Settings) -> Iterator[list[Target]]:
    from admin.deployers.python import deploy_python_closure

    with _local_cluster("schooner", settings) as (manager, conn):
        conn.start()
        model = train_model()

        # Nested, so cloudpickle ships them by value, not as a reference to this module.
        def noop(xs: Any) -> list[int]:
            return [0] * len(xs)

        def predict(xs: Any) -> list[Any]:
            return list(model.predict(xs).tolist())

        slo = round(settings.slo_ms * 1000)
        tight = round(settings.tight_slo_ms * 1000)
        deploy_python_closure(conn, "noop", "1", "doubles", noop)
        deploy_python_closure(conn, "sklearn", "1", "doubles", predict)
        deploy_python_closure(conn, "sklearn-b1", "1", "doubles", predict, batch_size=1)
        for copy in ("sklearn-2", "sklearn-3"):
            deploy_python_closure(conn, copy, "1", "doubles", predict)
        apps = [
            ("noop", "noop", slo),
            ("sklearn", "sklearn", slo),
            ("sklearn-b1", "sklearn-b1", slo),
            ("sklearn-cache", "sklearn", slo),
            ("sklearn-slo20", "sklearn", tight),
        ]
        for app, model_name, app_slo in apps:
            # The model path is what is measured: the cache only where its hits are.
            cached = app == "sklearn-cache"
            conn.register_application(app, "doubles", -1.0, app_slo, cache_enabled=cached)
            conn.link_model_to_app(app, model_name)
        for policy in ("exp3", "exp4"):
            app = f"sklearn-{policy}"
            # Class labels: the ensemble votes (weighted), as it would for a classifier.
            conn.register_application(app, "doubles", -1.0, slo, policy=policy, cache_enabled=False)
            for model_name in ("sklearn", "sklearn-2", "sklearn-3"):
                conn.link_model_to_app(app, model_name)
            apps.append((app, "", slo))

        base = f"http://{conn.get_query_addr()}"
        for app, _, _ in apps:
            wait_http_ok(f"{base}/{app}/predict", PROBE_BODY, settings.start_timeout, None)
        # The same model behind an app with an API key: what the key check costs.
        conn.register_application("sklearn-keyed", "doubles", -1.0, slo, cache_enabled=False)
        conn.link_model_to_app("sklearn-keyed", "sklearn")
        api_key = conn.create_api_key("sklearn-keyed")
        wait_http_ok(
            f"{base}/sklearn-keyed/predict",
            PROBE_BODY,
            settings.start_timeout,
            None,
            headers={"Authorization": f"Bearer {api_key}"},
        )

        pids, query_pid = _processes(manager)
        cs = settings.concurrencies
        slo_note = f"SLO {settings.slo_ms:g} ms"
        yield [
            Target(
                "schooner-noop",
                f"no-op model, adaptive, {slo_note}",
                f"{base}/noop/predict",
                "random",
                cs,
                pids,
                query_pid,
            ),
            Target(
                "schooner-sklearn",
                f"sklearn, adaptive, {slo_note}",
                f"{base}/sklearn/predict",
                "random",
                cs,
                pids,
                query_pid,
            ),
            Target(
                "schooner-v2-sklearn",
                f"sklearn, adaptive, {slo_note}, Open Inference Protocol (JSON tensors)",
                f"{base}/v2/models/sklearn/infer",
                "v2",
                cs,
                pids,
                query_pid,
            ),
            Target(
                "schooner-sklearn-keyed",
                f"sklearn, adaptive, {slo_note}, app with an API key",
                f"{base}/sklearn-keyed/predict",
                "random",
                cs,
                pids,
                query_pid,
                api_key=api_key,
            ),
            Target(
                "schooner-sklearn-b1",
                f"sklearn, batch size 1, {slo_note}",
                f"{base}/sklearn-b1/predict",
                "random",
                cs,
                pids,
                query_pid,
            ),
            Target(
                "schooner-cache",
                "sklearn, constant body: cache hits",
                f"{base}/sklearn-cache/predict",
                "constant",
                cs,
                pids,
                query_pid,
            ),
            Target(
                "schooner-exp3",
                f"exp3 over 3 sklearn models (1 per query), {slo_note}",
                f"{base}/sklearn-exp3/predict",
                "random",
                cs,
                pids,
                query_pid,
            ),
            Target(
                "schooner-exp4",
                f"exp4 ensemble of 3 sklearn models, {slo_note}",
                f"{base}/sklearn-exp4/predict",
                "random",
                cs,
                pids,
                query_pid,
            ),
            Target(
                "schooner-slo20",
                f"sklearn, adaptive, SLO {settings.tight_slo_ms:g} ms",
                f"{base}/sklearn-slo20/predict",
                "random",
                (settings.tight_slo_concurrency,),
                pids,
                query_pid,
            ),
        ]


TEXT_PROBE_BODY = b'{"input":"market price of the match"}'


def _post_json(url: str, doc: Any) -> Any:
    """POST ``doc`` as JSON to ``url``; the decoded answer (raises on a non-2xx)."""
    req = urllib.request.Request(
        url,
        data=json.dumps(doc).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _wait_answers(
    urls: tuple[str, ...], texts: list[str], expected: list[Any], timeout: float
) -> str | None:
    """Until ``timeout``: send each text through the chain ``urls`` (each answer's output
    the next call's input) until every chain answers ``expected`` and no default; None
    then, else what was last wrong."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            got = []
            for text in texts:
                value: Any = text
                for url in urls:
                    answer = _post_json(url, {"input": value})
                    if answer.get("default"):
                        raise ValueError(f"{url} answered its default: {answer}")
                    value = answer["output"]
                got.append(value)
            if got == expected:
                return None
            last = f"answered {got}, not {expected}"
        except (OSError, ValueError, KeyError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    return last


def _set_pipeline(conn: Any, app: str, stages: list[str]) -> str | None:
    """Make ``app`` the pipeline ``stages``; None, or why this checkout cannot."""
    if not hasattr(conn, "set_app_pipeline"):
        return "this checkout's Connection has no set_app_pipeline"
    try:
        conn.set_app_pipeline(app, stages)
    except Exception as exc:  # an admin API without pipelines: 404, 405, ...
        return f"set_app_pipeline failed: {type(exc).__name__}: {exc}"
    return None


@contextlib.contextmanager
def schooner_pipeline(settings: Settings) -> Iterator[list[Target]]:
    """Issue 17: a featuriser (``strings`` -> 64 doubles) then a scikit-learn classifier
    (``doubles``), the same two models (one replica each) served two ways on one cluster:
    ``schooner-pipeline``, one app whose pipeline is ``feat -> clf``; and
    ``schooner-chained``, two apps (``feat``, ``clf``) that the client chains, posting
    the first answer's output to the second. Both driven by ``benchmarks.pyload`` (one
    call against two, from the same client). Before measuring, both must answer exactly
    what calling the two functions in sequence gives. Without ``set_app_pipeline`` in
    this checkout only the chained contender runs."""
    from admin.deployers.python import deploy_python_closure
    from benchmarks.baselines.text_model import corpus, make_featuriser, train_text_model

    with _local_cluster("schooner-pipeline", settings) as (manager, conn):
        conn.start()
        featurise = make_featuriser()
        clf = train_text_model()

        def classify(xs: Any) -> list[Any]:
            return list(clf.predict(xs).tolist())

        typed = "output_type" in inspect.signature(deploy_python_closure).parameters
        extra: dict[str, Any] = {"output_type": "doubles"} if typed else {}
        deploy_python_closure(conn, "feat", "1", "strings", featurise, **extra)
        deploy_python_closure(conn, "clf", "1", "doubles", classify)
        slo = round(settings.slo_ms * 1000)
        # The model path is what is measured: no cache (the load's texts repeat).
        conn.register_application("feat", "strings", -1.0, slo, cache_enabled=False)
        conn.link_model_to_app("feat", "feat")
        conn.register_application("clf", "doubles", -1.0, slo, cache_enabled=False)
        conn.link_model_to_app("clf", "clf")
        base = f"http://{conn.get_query_addr()}"
        chained = (f"{base}/feat/predict", f"{base}/clf/predict")
        texts = [text for text, _ in corpus(8, seed=99)]
        expected = list(clf.predict(featurise(texts)).tolist())
        wrong = _wait_answers(chained, texts, expected, settings.start_timeout)
        if wrong is not None:
            raise RuntimeError(f"the chained apps feat -> clf {wrong}")

        slo_note = f"SLO {settings.slo_ms:g} ms"
        pids, query_pid = _processes(manager)
        targets = []
        conn.register_application("text", "strings", -1.0, slo, cache_enabled=False)
        refused = _set_pipeline(conn, "text", ["feat", "clf"])
        if refused is None:
            pipeline = (f"{base}/text/predict",)
            wrong = _wait_answers(pipeline, texts, expected, settings.start_timeout)
            if wrong is not None:
                raise RuntimeError(f"the pipeline app text (feat -> clf) {wrong}")
            pids, query_pid = _processes(manager)
            targets.append(
                Target(
                    "schooner-pipeline",
                    f"featuriser -> sklearn, one app with a 2-stage pipeline, {slo_note}",
                    pipeline[0],
                    "text",
                    settings.concurrencies,
                    pids,
                    query_pid,
                    driver="pyload",
                )
            )
        else:
            settings.notes.append(f"schooner-pipeline skipped: {refused}")
            print(f"  {settings.notes[-1]}")
        targets.append(
            Target(
                "schooner-chained",
                f"featuriser, then sklearn: two apps chained by the client, {slo_note} each",
                chained[0],
                "text",
                settings.concurrencies,
                pids,
                query_pid,
                driver="pyload",
                then=chained[1:],
            )
        )
        yield targets


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Set environment variables for what runs inside (processes started meanwhile
    inherit them), restoring the previous values after."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _sklearn_only(
    settings: Settings, group: str, target: str, description: str, **options: Any
) -> Iterator[list[Target]]:
    """A cluster serving only the sklearn app of ``schooner`` (1 replica), as the
    ``options`` to LocalContainerManager and the environment around make it."""
    from admin.deployers.python import deploy_python_closure

    with _local_cluster(group, settings, **options) as (manager, conn):
        conn.start()
        model = train_model()

        def predict(xs: Any) -> list[Any]:
            return list(model.predict(xs).tolist())

        deploy_python_closure(conn, "sklearn", "1", "doubles", predict)
        slo = round(settings.slo_ms * 1000)
        conn.register_application("sklearn", "doubles", -1.0, slo, cache_enabled=False)
        conn.link_model_to_app("sklearn", "sklearn")
        url = f"http://{conn.get_query_addr()}/sklearn/predict"
        wait_http_ok(url, PROBE_BODY, settings.start_timeout, None)
        pids, query_pid = _processes(manager)
        yield [
            Target(
                target,
                f"sklearn, adaptive, SLO {settings.slo_ms:g} ms, {description}",
                url,
                "random",
                settings.concurrencies,
                pids,
                query_pid,
            )
        ]


@contextlib.contextmanager
def schooner_plain_rpc(settings: Settings) -> Iterator[list[Target]]:
    """The sklearn app of ``schooner``, on a cluster whose RPC runs without CURVE."""
    # Only for measuring: never run a cluster like this (rpc_keys.INSECURE_RPC_ENV). The
    # frontend started and the replica deployed inside both inherit it; the load after
    # does not need it.
    with (
        _environ(SCHOONER_INSECURE_RPC="1"),
        _sklearn_only(
            settings,
            "schooner-plain-rpc",
            "schooner-sklearn-plain-rpc",
            "RPC without CURVE",
            rpc_unix=False,  # CURVE's cost on TCP: beside schooner-tcp
        ) as targets,
    ):
        yield targets


@contextlib.contextmanager
def schooner_no_access_log(settings: Settings) -> Iterator[list[Target]]:
    """The sklearn app of ``schooner`` with the query frontend's access log off
    (``SCHOONER_ACCESS_LOG_SAMPLE=0``): the access log's cost is ``schooner-sklearn``
    against this."""
    with (
        _environ(SCHOONER_ACCESS_LOG_SAMPLE="0"),
        _sklearn_only(
            settings,
            "schooner-no-access-log",
            "schooner-sklearn-no-access-log",
            "access log off",
        ) as targets,
    ):
        yield targets


@contextlib.contextmanager
def schooner_access_log_uncapped(settings: Settings) -> Iterator[list[Target]]:
    """The sklearn app of ``schooner`` with a line for every request: the access log's
    cap lifted (``SCHOONER_ACCESS_LOG_MAX_PER_S=0``), what logging everything costs."""
    with (
        _environ(SCHOONER_ACCESS_LOG_SAMPLE="1", SCHOONER_ACCESS_LOG_MAX_PER_S="0"),
        _sklearn_only(
            settings,
            "schooner-access-log-uncapped",
            "schooner-sklearn-access-log-uncapped",
            "access log of every request (no cap)",
        ) as targets,
    ):
        yield targets


@contextlib.contextmanager
def schooner_2qf(settings: Settings) -> Iterator[list[Target]]:
    """The sklearn app of ``schooner`` behind 2 query frontend processes sharing the
    query port (``query_frontends=2``), if this checkout's local manager has them."""
    if not accepts_query_frontends():
        settings.notes.append(
            "schooner-2qf skipped: LocalContainerManager takes no query_frontends= here"
        )
        print(f"  {settings.notes[-1]}")
        yield []
        return
    with _sklearn_only(
        settings, "schooner-2qf", "schooner-2qf", "2 query frontends", query_frontends=2
    ) as targets:
        yield targets


@contextlib.contextmanager
def schooner_ipc(settings: Settings) -> Iterator[list[Target]]:
    """The sklearn app of ``schooner`` with its replicas reaching the query frontend over
    ``ipc://`` (a unix socket, CURVE kept) instead of TCP on 127.0.0.1 (``rpc_ipc=True``)."""
    with _sklearn_only(
        settings, "schooner-ipc", "schooner-ipc", "RPC over ipc://", rpc_unix=False, rpc_ipc=True
    ) as targets:
        yield targets


@contextlib.contextmanager
def schooner_tcp(settings: Settings) -> Iterator[list[Target]]:
    """The sklearn app of ``schooner`` with its replicas on ZeroMQ over TCP (CURVE), as
    before the direct unix-socket transport became the local default (``rpc_unix=False``),
    and as Docker and Kubernetes run."""
    with _sklearn_only(
        settings, "schooner-tcp", "schooner-tcp", "RPC over ZeroMQ TCP + CURVE", rpc_unix=False
    ) as targets:
        yield targets


# ---------------------------------------------------------------------------- baselines


def _uvicorn_baseline(
    settings: Settings, name: str, module: str, description: str, mode: str
) -> contextlib.AbstractContextManager[list[Target]]:
    @contextlib.contextmanager
    def group() -> Iterator[list[Target]]:
        port = free_port()
        server = Server(
            [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port)],
            settings.log_dir / f"{name}.log",
        )
        with running(server, REPO_ROOT):
            url = f"http://127.0.0.1:{port}/predict"
            try:
                wait_http_ok(url, PROBE_BODY, settings.start_timeout, server.proc)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}\n{server.log_tail()}") from exc
            pid = server.proc.pid if server.proc else None
            yield [
                Target(
                    name,
                    description,
                    url,
                    mode,
                    settings.concurrencies,
                    lambda: server.pids,
                    pid,
                )
            ]

    return group()


def _pids_of(server: Server) -> Callable[[], list[int]]:
    return lambda: server.pids


@contextlib.contextmanager
def minimal(settings: Settings) -> Iterator[list[Target]]:
    """The minimal pipeline of Schooner's architecture, with the sklearn and no-op models."""
    module = "benchmarks.baselines.minimal_pipeline"
    variants = [
        ("minimal-sklearn", "sklearn", "sklearn"),
        ("minimal-noop", "noop", "no-op model"),
    ]
    with contextlib.ExitStack() as stack:
        targets = []
        for name, model, what in variants:
            port = free_port()
            server = Server(
                [sys.executable, "-m", module, "--port", str(port), "--model", model],
                settings.log_dir / f"{name}.log",
            )
            stack.enter_context(running(server, REPO_ROOT))
            url = f"http://127.0.0.1:{port}/predict"
            try:
                wait_http_ok(url, PROBE_BODY, settings.start_timeout, server.proc)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}\n{server.log_tail()}") from exc
            targets.append(
                Target(
                    name,
                    f"minimal HTTP -> ZeroMQ -> model pipeline, {what}",
                    url,
                    "random",
                    settings.concurrencies,
                    _pids_of(server),
                    server.proc.pid if server.proc else None,
                )
            )
        yield targets


@contextlib.contextmanager
def minimal_pipeline(settings: Settings) -> Iterator[list[Target]]:
    """The floor of the two-stage contenders: ``baselines/minimal_two_stage.py``, the
    minimal pipeline with a featuriser process and a classifier process, driven by
    ``benchmarks.pyload`` as ``schooner-pipeline`` is."""
    from benchmarks.baselines.text_model import corpus, make_featuriser, train_text_model

    name = "minimal-pipeline"
    port = free_port()
    server = Server(
        [sys.executable, "-m", "benchmarks.baselines.minimal_two_stage", "--port", str(port)],
        settings.log_dir / f"{name}.log",
    )
    with running(server, REPO_ROOT):
        url = f"http://127.0.0.1:{port}/predict"
        texts = [text for text, _ in corpus(8, seed=99)]
        expected = list(train_text_model().predict(make_featuriser()(texts)).tolist())
        try:
            wait_http_ok(url, TEXT_PROBE_BODY, settings.start_timeout, server.proc)
            wrong = _wait_answers((url,), texts, expected, settings.start_timeout)
            if wrong is not None:
                raise RuntimeError(f"{name} {wrong}")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{server.log_tail()}") from exc
        yield [
            Target(
                name,
                "minimal HTTP -> featuriser process -> sklearn process, 2 batchers",
                url,
                "text",
                settings.concurrencies,
                _pids_of(server),
                server.proc.pid if server.proc else None,
                driver="pyload",
            )
        ]


def raw_asgi(settings: Settings) -> contextlib.AbstractContextManager[list[Target]]:
    return _uvicorn_baseline(
        settings,
        "raw-asgi",
        "benchmarks.baselines.raw_asgi",
        "bare ASGI constant, uvicorn+uvloop+httptools",
        "constant",
    )


def starlette_sklearn(settings: Settings) -> contextlib.AbstractContextManager[list[Target]]:
    return _uvicorn_baseline(
        settings,
        "starlette-sklearn",
        "benchmarks.baselines.starlette_sklearn",
        "Starlette + sklearn in-process, 1 predict/request",
        "random",
    )


def _ray_serve(
    settings: Settings, name: str, description: str, extra_env: dict[str, str]
) -> contextlib.AbstractContextManager[list[Target]]:
    """Ray Serve in its own venv; with ``RAY_SERVE_ENABLE_DIRECT_INGRESS=1`` in
    ``extra_env``, wrk calls the replica's own HTTP port instead of the proxy."""

    @contextlib.contextmanager
    def group() -> Iterator[list[Target]]:
        python = settings.ray_python
        if not python.exists():
            settings.notes.append(
                f"{name} skipped: no Ray venv at {python}. Create it with: {RAY_SETUP}"
            )
            print(f"  {settings.notes[-1]}")
            yield []
            return
        port = free_port()
        url_file = settings.log_dir / f"{name}.urls"
        url_file.parent.mkdir(parents=True, exist_ok=True)
        url_file.unlink(missing_ok=True)
        env = dict(os.environ)
        env.update(
            PYTHONPATH=str(REPO_ROOT),
            RAY_USAGE_STATS_ENABLED="0",
            VIRTUAL_ENV=str(python.parent.parent),
            PATH=f"{python.parent}{os.pathsep}{env.get('PATH', '')}",
            **extra_env,
        )
        env.pop("RAY_ADDRESS", None)  # never attach to a Ray cluster that happens to run here
        server = Server(
            [
                *(str(python), "-m", "benchmarks.baselines.ray_serve_app"),
                *("--port", str(port), "--url-file", str(url_file)),
            ],
            settings.log_dir / f"{name}.log",
            env,
        )
        with running(server, REPO_ROOT):
            try:
                url = _wait_url_file(url_file, settings.start_timeout, server)
                wait_http_ok(url, PROBE_BODY, settings.start_timeout, server.proc)
            except RuntimeError as exc:
                settings.notes.append(f"{name} skipped: it did not start ({exc})")
                print(f"  {settings.notes[-1]}\n{server.log_tail()}")
                yield []
                return
            yield [
                Target(
                    name,
                    description,
                    url,
                    "random",
                    settings.concurrencies,
                    lambda: server.pids,
                    server.proc.pid if server.proc else None,
                )
            ]

    return group()


def _wait_url_file(path: Path, timeout: float, server: Server) -> str:
    """The first URL the Ray app wrote to ``path`` once Serve is up (see ray_serve_app)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc is None or server.proc.poll() is not None:
            raise RuntimeError("the Ray app exited before serving")
        with contextlib.suppress(OSError):
            urls = path.read_text(encoding="utf-8").split()
            if urls:
                return urls[0]
        time.sleep(0.5)
    raise RuntimeError(f"no URL from the Ray app within {timeout:g} s")


def ray_serve(settings: Settings) -> contextlib.AbstractContextManager[list[Target]]:
    settings.notes.append(
        "ray-serve uses Serve's default proxy; its HAProxy ingress (RAY_SERVE_ENABLE_HA_PROXY=1) "
        "binds every interface, and this benchmark keeps all traffic on 127.0.0.1: "
        "ray-serve-direct is the proxy-less configuration instead"
    )
    return _ray_serve(settings, "ray-serve", "Ray Serve, @serve.batch(64, 2 ms), proxy", {})


def ray_serve_direct(settings: Settings) -> contextlib.AbstractContextManager[list[Target]]:
    """Ray Serve's best configuration for one ingress deployment: no proxy hop. Direct
    ingress (the replica serves HTTP on its own port, bound to 127.0.0.1 like the proxy)
    and the throughput-optimized settings (``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``)."""
    return _ray_serve(
        settings,
        "ray-serve-direct",
        "Ray Serve, @serve.batch(64, 2 ms), direct ingress (replica port)",
        {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
    )


# The groups whose targets are all driven by benchmarks.pyload: they need no wrk.
PYLOAD_GROUPS = {"schooner-pipeline", "minimal-pipeline"}

GROUPS: dict[str, Group] = {
    "raw-asgi": raw_asgi,
    "starlette-sklearn": starlette_sklearn,
    "minimal": minimal,
    "minimal-pipeline": minimal_pipeline,
    "schooner": schooner,
    "schooner-plain-rpc": schooner_plain_rpc,
    "schooner-no-access-log": schooner_no_access_log,
    "schooner-access-log-uncapped": schooner_access_log_uncapped,
    "schooner-2qf": schooner_2qf,
    "schooner-ipc": schooner_ipc,
    "schooner-tcp": schooner_tcp,
    "schooner-pipeline": schooner_pipeline,
    "ray-serve": ray_serve,
    "ray-serve-direct": ray_serve_direct,
}
