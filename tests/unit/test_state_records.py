"""Unit tests for the record encodings of ``management_frontend.state.records``: what goes into
a Redis hash comes back out, and records written by an older Schooner still read."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from management_frontend.state.policy import POLICIES
from management_frontend.state.records import App, decode_flag, encode_flag
from model_container.protocol import InputType

APPS = st.builds(
    App,
    name=st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True),
    input_type=st.sampled_from(InputType),
    default_output=st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    slo_micros=st.integers(1, 10**9),
    policy=st.sampled_from(POLICIES),
    policy_params=st.dictionaries(
        st.sampled_from(["weights", "eta", "gamma", "loss"]),
        st.none() | st.floats(0.01, 10) | st.text(max_size=10),
    ),
    created_at=st.floats(0, 2e9),
    cache_enabled=st.booleans(),
    expose_model_errors=st.booleans(),
)


@given(APPS)
def test_app_round_trips_through_its_hash(app: App) -> None:
    h = app.to_hash()
    assert all(isinstance(v, str) for v in h.values())
    assert App.from_hash(h) == app


@pytest.mark.parametrize(("enabled", "stored"), [(True, "1"), (False, "0")])
def test_cache_enabled_is_stored_as_1_or_0(enabled: bool, stored: str) -> None:
    app = App("a", InputType.DOUBLES, "-1", 100_000, cache_enabled=enabled)
    assert app.to_hash()["cache_enabled"] == stored
    assert App.from_hash(app.to_hash()).cache_enabled is enabled


def test_an_app_written_before_cache_enabled_reads_as_enabled() -> None:
    old = {
        "name": "a",
        "input_type": "doubles",
        "default_output": '"-1"',
        "slo_micros": "100000",
        "policy": "single",
        "created_at": "1700000000.0",
    }
    app = App.from_hash(old)
    assert app.cache_enabled is True
    assert app.expose_model_errors is False
    assert app == App("a", InputType.DOUBLES, "-1", 100_000, "single", 1700000000.0)


@pytest.mark.parametrize(
    ("stored", "exposed"), [("1", True), ("0", False), ("", False), ("x", False)]
)
def test_only_1_exposes_model_errors(stored: str, exposed: bool) -> None:
    """The flag that reveals more reads as off unless it is plainly on."""
    h = App("a", InputType.DOUBLES, "-1", 100_000).to_hash()
    assert h["expose_model_errors"] == "0"
    assert App.from_hash({**h, "expose_model_errors": stored}).expose_model_errors is exposed


def test_cache_enabled_is_in_the_json_record() -> None:
    off = App("a", InputType.DOUBLES, "-1", 100_000, cache_enabled=False)
    assert off.to_json()["cache_enabled"] is False
    assert App("a", InputType.DOUBLES, "-1", 100_000).to_json()["cache_enabled"] is True


@pytest.mark.parametrize(("stored", "enabled"), [("1", True), ("0", False), ("", True)])
def test_only_0_turns_a_flag_off(stored: str, enabled: bool) -> None:
    assert decode_flag(stored) is enabled
    assert decode_flag(encode_flag(enabled)) is enabled
