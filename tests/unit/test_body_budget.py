"""The budget of body bytes in flight (``query_frontend.http.budget``) and how parsed
items cross to and from a parsing worker (``query_frontend.http.offload``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from query_frontend.http.budget import BodyBudget, BudgetFullError, Hold, app_share
from query_frontend.http.offload import pack, unpack

MiB = 1024 * 1024


def test_an_app_holds_at_most_its_share_and_the_frontend_at_most_the_limit() -> None:
    budget = BodyBudget(32 * MiB, app_share(32 * MiB, 10 * MiB))
    assert budget.app_limit == 16 * MiB
    first = Hold(budget, "big")
    first.grow(10 * MiB)
    with pytest.raises(BudgetFullError, match="app 'big' has 10485760 bytes"):
        Hold(budget, "big").grow(10 * MiB)
    # The refused request holds nothing; another app still gets its share ...
    assert budget.held == 10 * MiB and budget.held_by("big") == 10 * MiB
    other = Hold(budget, "small")
    other.grow(16 * MiB)
    # ... and nobody gets past the frontend's limit.
    with pytest.raises(BudgetFullError, match="the query frontend holds"):
        Hold(budget, "third").grow(8 * MiB)
    for hold in (first, other):
        hold.release()
        hold.release()  # once only
    assert budget.held == 0 and budget.held_by("big") == budget.held_by("small") == 0


def test_a_share_never_shuts_out_the_largest_legal_body() -> None:
    assert app_share(64 * MiB, 10 * MiB) == 32 * MiB
    assert app_share(12 * MiB, 10 * MiB) == 10 * MiB
    budget = BodyBudget(12 * MiB, app_share(12 * MiB, 10 * MiB))
    Hold(budget, "big").grow(10 * MiB)


def test_a_hold_grows_chunk_by_chunk_and_gives_back_all_it_took() -> None:
    budget = BodyBudget(100, 60)
    hold = Hold(budget, "a")
    for _ in range(6):
        hold.grow(10)
    hold.grow(0)
    with pytest.raises(BudgetFullError):
        hold.grow(1)
    assert hold.size == 60
    hold.release()
    assert budget.held == 0 and budget.held_by("a") == 0


ARRAYS = st.lists(st.lists(st.floats(allow_nan=False), min_size=1, max_size=5), min_size=1,
                  max_size=6)  # fmt: skip


@given(ARRAYS)
def test_numeric_items_cross_as_one_array_and_come_back_equal(rows: list[list[float]]) -> None:
    items = [np.array(row, dtype=np.float64) for row in rows]
    back = unpack(pack(items))  # type: ignore[arg-type]
    assert len(back) == len(items)
    for got, sent in zip(back, items, strict=True):
        assert isinstance(got, np.ndarray) and got.dtype == sent.dtype
        assert got.flags.c_contiguous and got.tolist() == sent.tolist()


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=6))
def test_bytes_items_cross_as_they_are(items: list[bytes]) -> None:
    assert unpack(pack(items)) == items  # type: ignore[arg-type]
