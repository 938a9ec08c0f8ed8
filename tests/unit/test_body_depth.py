"""The management API's depth check on raw bodies (``state.nesting.depth_over``) agrees with
the depth of the JSON value they encode, whatever the strings hold."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from management_frontend.state.nesting import depth_over

TRICKY_TEXT = st.text(alphabet='[]{}"\\ ax', max_size=8)
VALUES = st.recursive(
    st.none() | st.integers() | TRICKY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TRICKY_TEXT, inner, max_size=3),
    max_leaves=30,
)


def depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


@given(VALUES, st.integers(min_value=0, max_value=6), st.booleans())
def test_the_depth_of_the_encoded_value_is_found(value: object, limit: int, ascii: bool) -> None:
    body = json.dumps(value, ensure_ascii=ascii).encode()
    assert depth_over(body, limit) == (depth(value) > limit)


def test_a_deep_body_is_found_at_once_and_an_unbalanced_one_is_left_to_the_parser() -> None:
    assert depth_over(b"[" * 1_000_000, 32)
    assert not depth_over(b'{"name": "a",', 32)
    assert not depth_over(b'{"a": "' + b"[" * 100 + b'"}', 32)
