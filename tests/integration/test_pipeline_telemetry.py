"""A pipeline's live numbers per stage on a real local cluster: predictions sent over
HTTP show, in ``GET /admin/apps/{app}/activity``, which stage takes the time and which
causes the defaults, from the query frontend's own ticks (``{p}:telemetry``).

Real redis-server, both frontends and every replica as local processes. Models: a fast
``strings`` featuriser answering lists of doubles, a ``doubles`` model that takes 200 ms
a batch, and one that takes 1.5 s. Apps: ``st-chain`` (featuriser -> the 200 ms model,
SLO 5 s: stage 2 is the slow one), ``st-late`` (featuriser -> the 1.5 s model, SLO
300 ms: stage 2 is late, so its queries get the default), and ``st-one`` (the
featuriser alone: an app of one stage has no per-stage numbers).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from clusters import started
from polling import eventually

from admin import Connection, LocalContainerManager
from admin.deployers.python import deploy_python_closure

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

WAIT_S = 60.0  # for a few ticks of a busy machine


def make_models() -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """The three models, made in a function so that cloudpickle takes them by value."""

    def featurise(texts: list[str]) -> list[list[float]]:
        return [[float(len(t)), 1.0] for t in texts]

    def slow(xs: list[list[float]]) -> list[float]:
        time.sleep(0.2)
        return [float(sum(x)) for x in xs]

    def late(xs: list[list[float]]) -> list[float]:
        time.sleep(1.5)
        return [float(sum(x)) for x in xs]

    return featurise, slow, late


@pytest.fixture(scope="module")
def conn(
    tmp_path_factory: pytest.TempPathFactory, local_manager: Callable[..., LocalContainerManager]
) -> Iterator[Connection]:
    featurise, slow, late = make_models()
    with started(local_manager(tmp_path_factory.mktemp("cluster"))) as c:
        deploy_python_closure(c, "st-feat", "1", "strings", featurise, output_type="doubles")
        deploy_python_closure(c, "st-slow", "1", "doubles", slow)
        deploy_python_closure(c, "st-late", "1", "doubles", late)
        c.register_application("st-chain", "strings", -1.0, 5_000_000, cache_enabled=False)
        c.set_app_pipeline("st-chain", ["st-feat", "st-slow"])
        c.register_application("st-late", "strings", -1.0, 300_000, cache_enabled=False)
        c.set_app_pipeline("st-late", ["st-feat", "st-late"])
        c.register_application("st-one", "strings", -1.0, 5_000_000)
        c.link_model_to_app("st-one", "st-feat")
        yield c


@pytest.fixture(scope="module")
def admin(conn: Connection) -> Iterator[httpx.Client]:
    token = conn.cm.admin_token()
    with httpx.Client(
        base_url=f"http://{conn.get_management_addr()}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ) as client:
        yield client


@pytest.fixture(scope="module")
def query(conn: Connection) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{conn.get_query_addr()}", timeout=10) as client:
        yield client


def predict(query: httpx.Client, app: str, n: int) -> list[dict[str, Any]]:
    answers = []
    for i in range(n):
        r = query.post(f"/{app}/predict", json={"input": f"text number {i}"})
        assert r.status_code == 200, r.text
        answers.append(r.json())
    return answers


def stages(admin: httpx.Client, app: str) -> list[dict[str, Any]]:
    r = admin.get(f"/admin/apps/{app}/activity", params={"window": 60})
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["stages"]
    return found


def test_the_slow_stage_shows_the_bigger_p99(admin: httpx.Client, query: httpx.Client) -> None:
    seen: list[dict[str, Any]] = []

    def timed() -> bool:
        assert not any(a["default"] for a in predict(query, "st-chain", 3))
        seen[:] = stages(admin, "st-chain")
        first, second = (s["now"] for s in seen)
        return (
            first["rps"] > 0
            and second["rps"] > 0
            and first["p99_ms"] is not None
            and second["p99_ms"] is not None
            and second["p99_ms"] > first["p99_ms"]
        )

    eventually(timed, lambda: f"stage 2 of st-chain to be the slow one: {seen}", WAIT_S)
    assert [s["stage"] for s in seen] == [1, 2]
    slow = seen[1]
    assert slow["now"]["p99_ms"] >= 100  # its model sleeps 200 ms a batch
    assert slow["now"]["defaults_per_s"] == 0 and slow["now"]["errors_per_s"] == 0
    assert any(v is not None and v > 0 for v in slow["series"]["p99_ms"])
    assert len(slow["series"]["t"]) == len(slow["series"]["p99_ms"])


def test_the_stage_that_is_late_shows_the_defaults(
    admin: httpx.Client, query: httpx.Client
) -> None:
    seen: list[dict[str, Any]] = []

    def late() -> bool:
        answers = predict(query, "st-late", 2)
        assert all(a["default"] for a in answers), answers
        seen[:] = stages(admin, "st-late")
        first, second = (s["now"] for s in seen)
        return second["defaults_per_s"] > 0 and first["defaults_per_s"] == 0

    eventually(late, lambda: f"stage 2 of st-late to show the defaults: {seen}", WAIT_S)
    first, second = seen
    assert first["now"]["errors_per_s"] == 0 and second["now"]["errors_per_s"] == 0
    assert any(v is not None and v > 0 for v in second["series"]["defaults_per_s"])
    assert all(v in (None, 0) for v in first["series"]["defaults_per_s"])


def test_an_app_of_one_stage_has_no_stage_numbers(admin: httpx.Client, query: httpx.Client) -> None:
    predict(query, "st-one", 3)
    assert stages(admin, "st-one") == []
