"""``QueryClient`` and ``AsyncQueryClient`` against a real local cluster: predictions,
batches, feedback, defaults, API keys, errors with the frontend's own messages, and one
TCP connection for many calls.

One cluster serves the module; its apps are set up once (``apps``). What the clients
do when the frontend refuses or cannot be reached is in ``test_query_client_retries``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psutil
import pytest
from clusters import started

from admin import (
    APIKeyError,
    AsyncQueryClient,
    Connection,
    InvalidRequestError,
    LocalContainerManager,
    NotConnectedError,
    NotFoundError,
    Prediction,
    PredictionError,
    QueryClient,
    UpdateResult,
)
from admin.deployers.python import deploy_python_closure

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


class Apps:
    """The module's apps: ``sum`` (a model adding its inputs), ``lonely`` (no model),
    ``locked`` (the same model, behind an API key), ``fragile`` (a model that raises
    on a negative input), and ``other`` (no model) with a key of its own."""

    sum = "qc-sum"
    lonely = "qc-lonely"
    locked = "qc-locked"
    fragile = "qc-fragile"
    other = "qc-other"

    def __init__(self, conn: Connection) -> None:
        # Defined here, not at module level: cloudpickle then ships them by value.
        def total(xs: Any) -> list[float]:
            return [float(sum(x)) for x in xs]

        def fragile(xs: Any) -> list[float]:
            if any(x[0] < 0 for x in xs):
                raise ValueError("negative input")
            return [float(x[0]) for x in xs]

        conn.register_application(self.sum, "doubles", -1.0, 2_000_000)
        deploy_python_closure(conn, "qc-total", "1", "doubles", total)
        conn.link_model_to_app(self.sum, "qc-total")
        conn.register_application(self.lonely, "doubles", {"label": "unknown"}, 50_000)
        conn.register_application(self.locked, "doubles", -1.0, 2_000_000)
        conn.link_model_to_app(self.locked, "qc-total")
        self.key = conn.create_api_key(self.locked)
        conn.register_application(self.fragile, "doubles", -1.0, 2_000_000)
        deploy_python_closure(conn, "qc-fragile", "1", "doubles", fragile)
        conn.link_model_to_app(self.fragile, "qc-fragile")
        conn.register_application(self.other, "doubles", -1.0, 50_000)
        self.other_key = conn.create_api_key(self.other)


@pytest.fixture(scope="module")
def conn(
    tmp_path_factory: pytest.TempPathFactory, local_manager: Callable[..., LocalContainerManager]
) -> Iterator[Connection]:
    with started(local_manager(tmp_path_factory.mktemp("query-client"))) as c:
        yield c


@pytest.fixture(scope="module")
def apps(conn: Connection) -> Apps:
    return Apps(conn)


@pytest.fixture
def client(conn: Connection) -> Iterator[QueryClient]:
    with QueryClient.for_connection(conn) as c:
        yield c


def local_ports_to(port: int) -> set[int]:
    """The local ports of this process's TCP connections to ``port`` on 127.0.0.1."""
    return {
        c.laddr.port
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    }


def query_port(conn: Connection) -> int:
    return int(conn.get_query_addr().rsplit(":", 1)[1])


def test_predict_answers_with_the_models_output_and_who_answered(
    client: QueryClient, apps: Apps, conn: Connection
) -> None:
    p = client.predict(apps.sum, [1.0, 2.0])
    assert isinstance(p, Prediction)
    assert p.output == 3.0
    assert p.default is False and p.default_explanation is None
    assert p.models == ("qc-total:1",)
    assert isinstance(p.query_id, int)
    assert p.partial is False and p.missing == ()
    assert p.raw["output"] == 3.0 and p.raw["query_id"] == p.query_id
    # A numpy array, an address as conn.get_query_addr() gives it, a pinned version.
    with QueryClient(conn.get_query_addr()) as plain:
        assert plain.predict(apps.sum, np.array([0.5, 0.25])).output == 0.75
        assert plain.predict(apps.sum, [2.0, 2.0], version="1").output == 4.0
        assert plain.predict(apps.sum, [1.0], uid="alice").output == 1.0


def test_predict_batch_is_one_request_with_an_answer_per_input(
    client: QueryClient, apps: Apps
) -> None:
    rows = [[1.0, 1.0], [2.0, 3.0], [-1.0, 0.5]]
    answers = client.predict_batch(apps.sum, rows)
    assert [p.output for p in answers] == [2.0, 5.0, -0.5]
    assert all(p.models == ("qc-total:1",) and not p.default for p in answers)
    assert len({p.query_id for p in answers}) == 3
    # The rows of a 2-d numpy array are the inputs.
    assert [p.output for p in client.predict_batch(apps.sum, np.array(rows))] == [2.0, 5.0, -0.5]
    with pytest.raises(InvalidRequestError, match="no inputs"):
        client.predict_batch(apps.sum, [])
    with pytest.raises(InvalidRequestError, match="for one input call predict"):
        client.predict_batch(apps.sum, "not a list")


def test_an_app_without_a_model_answers_its_default_saying_why(
    client: QueryClient, apps: Apps
) -> None:
    p = client.predict(apps.lonely, [1.0])
    assert p.default is True
    assert p.output == {"label": "unknown"}
    assert p.default_explanation is not None
    assert "no model is linked to app 'qc-lonely'" in p.default_explanation
    assert p.models == ()
    batch = client.predict_batch(apps.lonely, [[1.0], [2.0]])
    assert [(b.default, b.output) for b in batch] == [(True, {"label": "unknown"})] * 2


def test_update_is_stored_and_a_feedback_id_counts_once(
    client: QueryClient, apps: Apps, conn: Connection
) -> None:
    before = conn.get_policy_state(apps.sum)["updates"]
    result = client.update(apps.sum, [1.0, 2.0], 3.0)
    assert isinstance(result, UpdateResult)
    assert result.models == ("qc-total:1",)
    assert result.losses == {"qc-total:1": 0.0}
    assert result.duplicate is False and isinstance(result.query_id, int)
    assert conn.get_policy_state(apps.sum)["updates"] == before + 1

    first = client.update(apps.sum, [1.0], 2.0, feedback_id="qc-order-1")
    again = client.update(apps.sum, [1.0], 2.0, feedback_id="qc-order-1")
    assert (first.duplicate, again.duplicate) == (False, True)
    assert conn.get_policy_state(apps.sum)["updates"] == before + 2


def test_errors_carry_the_frontends_status_code_and_message(
    client: QueryClient, apps: Apps
) -> None:
    with pytest.raises(NotFoundError) as missing:
        client.predict("qc-no-such-app", [1.0])
    assert missing.value.status_code == 404 and missing.value.code == "not_found"
    assert "no application named 'qc-no-such-app'" in str(missing.value)

    with pytest.raises(InvalidRequestError) as bad:
        client.predict(apps.sum, ["a", "b"])
    assert bad.value.status_code == 400 and "doubles" in str(bad.value)

    with pytest.raises(PredictionError) as failed:
        client.predict(apps.fragile, [-1.0])
    assert failed.value.status_code == 500 and failed.value.code == "model_error"
    assert "qc-fragile" in str(failed.value) and "raised ValueError" in str(failed.value)
    assert client.predict(apps.fragile, [2.0]).output == 2.0  # the model serves on

    with pytest.raises(InvalidRequestError, match="DNS-1123") as refused:
        client.predict("Not_An_App", [1.0])  # refused before anything is sent
    assert refused.value.status_code is None


def test_an_app_with_api_keys_needs_one_of_its_own(conn: Connection, apps: Apps) -> None:
    with QueryClient.for_connection(conn) as anonymous, pytest.raises(APIKeyError) as none:
        anonymous.predict(apps.locked, [1.0])
    assert none.value.status_code == 401
    assert "api_key=" in str(none.value) and "create_api_key('qc-locked')" in str(none.value)

    with QueryClient.for_connection(conn, api_key=apps.other_key) as wrong:
        with pytest.raises(APIKeyError) as foreign:
            wrong.predict(apps.locked, [1.0])
        assert foreign.value.status_code == 403
        assert apps.other_key not in str(foreign.value)
        assert apps.other_key not in repr(wrong)

    with QueryClient.for_connection(conn, api_key=apps.key) as keyed:
        assert keyed.predict(apps.locked, [1.0, 1.0]).output == 2.0
        assert [p.output for p in keyed.predict_batch(apps.locked, [[1.0], [4.0]])] == [1.0, 4.0]
        assert keyed.update(apps.locked, [1.0], 1.0).models == ("qc-total:1",)
        assert apps.key not in repr(keyed) and "api_key=***" in repr(keyed)


def test_many_calls_share_one_tcp_connection(conn: Connection, apps: Apps) -> None:
    port = query_port(conn)
    seen: set[int] = set()
    with QueryClient.for_connection(conn) as client:
        for i in range(20):
            client.predict(apps.sum, [float(i)])
            client.update(apps.sum, [float(i)], float(i))
            seen |= local_ports_to(port)
        client.predict_batch(apps.sum, [[1.0]] * 5)
        seen |= local_ports_to(port)
    assert len(seen) == 1, f"41 requests went over {len(seen)} connections"
    assert not local_ports_to(port) & seen  # close() closed it


def test_a_client_of_a_connection_that_is_not_connected_says_what_to_do(
    local_manager: Callable[..., LocalContainerManager], tmp_path: Any
) -> None:
    with pytest.raises(NotConnectedError, match="connect"):
        QueryClient.for_connection(Connection(local_manager(tmp_path)))


async def test_the_async_client_does_the_same_over_one_connection(
    conn: Connection, apps: Apps
) -> None:
    port = query_port(conn)
    seen: set[int] = set()
    async with AsyncQueryClient.for_connection(conn, api_key=apps.key) as client:
        p = await client.predict(apps.sum, [1.0, 2.0])
        assert (p.output, p.default, p.models) == (3.0, False, ("qc-total:1",))
        batch = await client.predict_batch(apps.sum, np.array([[1.0], [2.0]]))
        assert [b.output for b in batch] == [1.0, 2.0]
        lonely = await client.predict(apps.lonely, [1.0])
        assert lonely.default and "no model is linked" in (lonely.default_explanation or "")
        assert (await client.update(apps.sum, [2.0], 2.0)).losses == {"qc-total:1": 0.0}
        assert (await client.predict(apps.locked, [5.0])).output == 5.0
        with pytest.raises(NotFoundError):
            await client.predict("qc-no-such-app", [1.0])
        for i in range(10):
            await client.predict(apps.sum, [float(i)])
            seen |= local_ports_to(port)
    assert len(seen) == 1
    assert client.is_closed

    async with AsyncQueryClient.for_connection(conn) as anonymous:
        with pytest.raises(APIKeyError, match="sent no API key"):
            await anonymous.predict(apps.locked, [1.0])
