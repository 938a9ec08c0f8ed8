"""Unit tests for ``management_frontend.state.rules``: what is accepted, what is refused,
and that every refusal names the field, shows the value and says what to use."""

from __future__ import annotations

import re
import string

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from management_frontend.state import rules
from management_frontend.state.errors import InvalidValue
from model_container.protocol import InputType

LABELS = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
VERSIONS = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?", fullmatch=True)


@given(LABELS)
def test_every_dns1123_label_is_accepted(name: str) -> None:
    assert rules.app_name(name) == name
    assert rules.model_name(name) == name


@given(st.text(max_size=70), st.sampled_from(string.ascii_uppercase), st.integers(0, 70))
def test_any_name_with_an_uppercase_letter_is_rejected(text: str, upper: str, at: int) -> None:
    name = text[:at] + upper + text[at:]
    with pytest.raises(InvalidValue, match="is not a DNS-1123 label"):
        rules.app_name(name)


@given(st.text(alphabet=string.ascii_lowercase + string.digits, min_size=64, max_size=200))
def test_names_over_63_characters_are_rejected(name: str) -> None:
    with pytest.raises(InvalidValue, match=rf"it has {len(name)} characters"):
        rules.model_name(name)


def test_the_message_says_what_to_fix() -> None:
    with pytest.raises(InvalidValue) as info:
        rules.app_name("My_App")
    assert str(info.value) == (
        "app name 'My_App' is not a DNS-1123 label (it contains the uppercase letter 'M'): "
        "use lowercase letters, digits and '-', starting and ending with a letter or digit, "
        "at most 63 characters"
    )


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "it is empty"),
        ("-a", "starts or ends with '-'"),
        ("a-", "starts or ends with '-'"),
        ("a_b", "it contains '_'"),
        ("a.b", "it contains '.'"),
        ("a:b", "it contains ':'"),
        ("caf\u00e9", "it contains '\u00e9'"),
        ("abc\n", "it contains '\\n'"),
    ],
)
def test_bad_names_say_why(name: str, reason: str) -> None:
    with pytest.raises(InvalidValue, match="model name") as info:
        rules.model_name(name)
    assert reason in str(info.value)


@pytest.mark.parametrize("value", [None, 5, True, ["a"], {"a": 1}])
def test_names_must_be_strings(value: object) -> None:
    with pytest.raises(InvalidValue, match="app name must be a string"):
        rules.app_name(value)


@given(VERSIONS)
def test_every_well_formed_version_is_accepted(ver: str) -> None:
    assert rules.version(ver) == ver


@pytest.mark.parametrize("ver", ["", "1 0", "v1:x", ".1", "1.", "-a", "a" * 64, "1\n", "é"])
def test_malformed_versions_are_rejected(ver: str) -> None:
    with pytest.raises(InvalidValue, match=r"model version .* is not valid: use letters"):
        rules.version(ver)


@pytest.mark.parametrize("kind", list(InputType))
def test_every_input_type_is_accepted(kind: InputType) -> None:
    assert rules.input_type(kind.value) is kind


def test_integers_is_clippers_name_for_ints() -> None:
    assert rules.input_type("integers") is InputType.INTS


@pytest.mark.parametrize("value", ["tensor", "Ints", "Integers", "", None, 3, ["ints"]])
def test_unknown_input_types_list_the_known_ones(value: object) -> None:
    with pytest.raises(InvalidValue) as info:
        rules.input_type(value)
    message = str(info.value)
    assert message.startswith("input_type ")
    assert "ints, floats, doubles, bytes, strings, json" in message


@given(st.integers(min_value=1, max_value=rules.MAX_INT64))
def test_positive_slos_are_accepted(slo: int) -> None:
    assert rules.slo_micros(slo) == slo


@given(st.integers(max_value=0))
def test_zero_and_negative_slos_are_rejected(slo: int) -> None:
    with pytest.raises(InvalidValue, match=rf"slo_micros must be > 0, got {slo}"):
        rules.slo_micros(slo)


@pytest.mark.parametrize("value", [True, False, 1.0, 1.5, "100", None, [1]])
def test_slo_must_be_an_integer_and_not_a_bool(value: object) -> None:
    with pytest.raises(InvalidValue, match="slo_micros must be an integer number of microseconds"):
        rules.slo_micros(value)


def test_huge_integers_are_rejected() -> None:
    with pytest.raises(InvalidValue, match="too large"):
        rules.slo_micros(2**63)


@given(st.integers(min_value=0, max_value=rules.DEFAULT_MAX_REPLICAS))
def test_replica_counts_from_zero_are_accepted(count: int) -> None:
    assert rules.num_replicas(count) == count


def test_replica_counts_over_the_bound_say_how_to_raise_it() -> None:
    with pytest.raises(InvalidValue) as info:
        rules.num_replicas(1_000_000_000)
    assert "num_replicas must be at most 64, got 1000000000" in str(info.value)
    assert "--max-replicas (env SCHOONER_MAX_REPLICAS)" in str(info.value)
    assert rules.num_replicas(1000, maximum=1000) == 1000
    assert rules.num_replicas(10**6, maximum=None) == 10**6


@pytest.mark.parametrize("value", [-1, True, 1.0, "2", None])
def test_bad_replica_counts_are_rejected(value: object) -> None:
    with pytest.raises(InvalidValue, match="num_replicas must be"):
        rules.num_replicas(value)


@pytest.mark.parametrize(("value", "accepted"), [(-1, True), (1, True), (64, True), (0, False)])
def test_batch_size_is_adaptive_or_positive(value: int, accepted: bool) -> None:
    if accepted:
        assert rules.batch_size(value) == value
    else:
        with pytest.raises(InvalidValue, match="batch_size must be >= 1, or -1"):
            rules.batch_size(value)


@given(st.integers(max_value=-2))
def test_batch_sizes_below_minus_one_are_rejected(value: int) -> None:
    with pytest.raises(InvalidValue, match="batch_size"):
        rules.batch_size(value)


@pytest.mark.parametrize("mode", [*rules.BATCH_MODES, ""])
def test_known_batch_modes_and_the_empty_default_are_accepted(mode: str) -> None:
    assert rules.batch_mode(mode) == mode


@pytest.mark.parametrize("value", ["AIMD", "greedy", " fixed", None, 1, True, ["aimd"]])
def test_unknown_batch_modes_are_rejected_with_the_allowed_values(value: object) -> None:
    with pytest.raises(InvalidValue) as info:
        rules.batch_mode(value)
    message = str(info.value)
    assert message.startswith("batch_mode ")
    assert "use one of 'aimd', 'latency_model', 'fixed', ''" in message


@given(st.integers(min_value=0, max_value=rules.MAX_BATCH_WAIT_MICROS))
def test_batch_waits_from_zero_to_the_cap_are_accepted(wait: int) -> None:
    assert rules.batch_wait_micros(wait) == wait


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (-1, "batch_wait_micros must be >= 0, got -1"),
        (True, "must be an integer number of microseconds >= 0, got true (a boolean)"),
        (1.5, "got 1.5 (a number)"),
        ("100", "got '100' (a string)"),
        (None, "got null (null)"),
        (1_000_001, "batch_wait_micros must be at most 1000000 (1 s), got 1000001"),
        (2**70, "which is too large"),
    ],
)
def test_bad_batch_waits_are_rejected(value: object, expected: str) -> None:
    with pytest.raises(InvalidValue, match="batch_wait_micros") as info:
        rules.batch_wait_micros(value)
    assert expected in str(info.value)


@pytest.mark.parametrize("name", rules.POLICIES)
def test_known_policies_are_accepted(name: str) -> None:
    assert rules.policy(name) == name


def test_unknown_policy_lists_the_known_ones() -> None:
    with pytest.raises(InvalidValue) as info:
        rules.policy("random")
    assert str(info.value) == "policy 'random' is not known: use one of single, split, exp3, exp4"


@pytest.mark.parametrize(("old", "successor"), [("weighted", "'split'"), ("straggler", "'exp4'")])
def test_policies_of_earlier_releases_name_their_successor(old: str, successor: str) -> None:
    with pytest.raises(InvalidValue, match=f"policy '{old}' is no longer offered: use {successor}"):
        rules.policy(old)


def test_optional_passes_null_and_checks_the_rest() -> None:
    check = rules.optional(rules.version)
    assert check(None) is None
    assert check("1") == "1"
    with pytest.raises(InvalidValue, match="model version '1 0' is not valid"):
        check("1 0")


@pytest.mark.parametrize(("value", "shown"), [([1], "[1] (a list)"), ("x", "'x' (a string)")])
def test_json_object_refuses_anything_else(value: object, shown: str) -> None:
    with pytest.raises(InvalidValue, match=re.escape(f"params must be a JSON object, got {shown}")):
        rules.json_object(value, "params")
    assert rules.json_object({"eta": 1}, "params") == {"eta": 1}


@pytest.mark.parametrize("value", [True, False])
def test_cache_enabled_accepts_json_booleans(value: bool) -> None:
    assert rules.cache_enabled(value) is value


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("false", "got 'false' (a string)"),
        ("true", "got 'true' (a string)"),
        (0, "got 0 (a number)"),
        (1, "got 1 (a number)"),
        (None, "got null (null)"),
        ([True], "got [true] (a list)"),
    ],
)
def test_cache_enabled_refuses_anything_but_a_boolean(value: object, shown: str) -> None:
    with pytest.raises(InvalidValue) as info:
        rules.cache_enabled(value)
    assert str(info.value) == f"cache_enabled must be a JSON boolean (true or false), {shown}"


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=rules.MIN_JSON_INT, max_value=rules.MAX_JSON_INT)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_small_default_outputs_are_returned_unchanged(value: object) -> None:
    assert rules.default_output(value) == value


@given(JSON_VALUES)
def test_an_accepted_default_output_can_be_answered(value: object) -> None:
    """What the rule lets through, the query frontend (orjson) can write into an answer."""
    rules.default_output(value)
    assert orjson.loads(orjson.dumps({"output": value, "default": True}))["output"] == value


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (_nested(500), "default_output is nested deeper than 31 levels"),
        (_nested(32), "default_output is nested deeper than 31 levels"),
        (10**399, "default_output is an integer of about 400 digits"),
        ({"a": [2**64]}, 'default_output["a"][0] is an integer of about 20 digits'),
        ([1, -(2**63) - 1], "default_output[1] is an integer"),
        ({"x": float("nan")}, 'default_output["x"] is NaN: use a finite number'),
        ([float("inf")], "default_output[0] is Infinity"),
        ({"a": "\ud800"}, 'default_output["a"] holds a lone UTF-16 surrogate'),
        ({1: "one"}, "default_output has the key 1: JSON object keys are strings"),
        ({"s": {1, 2}}, 'default_output["s"] is a Python set: use JSON values only'),
    ],
)
def test_default_outputs_no_answer_could_carry_are_refused(value: object, message: str) -> None:
    with pytest.raises(InvalidValue) as info:
        rules.default_output(value)
    assert message in str(info.value)


def test_default_output_at_the_depth_limit_is_accepted() -> None:
    deepest = _nested(rules.MAX_DEFAULT_OUTPUT_DEPTH)
    assert rules.default_output(deepest) == deepest
    orjson.dumps({"output": deepest})


@pytest.mark.parametrize("bad", ["\udc80", "ok\ud800"])
def test_strings_with_lone_surrogates_are_refused(bad: str) -> None:
    with pytest.raises(InvalidValue, match="lone UTF-16 surrogate"):
        rules.text(bad, "artifact")
    with pytest.raises(InvalidValue, match="a key of runtime holds a lone"):
        rules.string_map({bad: "1"}, "runtime")
    with pytest.raises(InvalidValue, match="a key of params holds a lone"):
        rules.json_object({bad: 1}, "params")


def test_large_default_outputs_are_rejected() -> None:
    with pytest.raises(InvalidValue, match=r"default_output is .* bytes of JSON"):
        rules.default_output("x" * rules.MAX_DEFAULT_OUTPUT_BYTES)


def test_string_lists_and_maps() -> None:
    assert rules.string_list(["a", "b"], "labels") == ["a", "b"]
    assert rules.string_map({"python": "3.11.7"}, "runtime") == {"python": "3.11.7"}
    with pytest.raises(InvalidValue, match="labels must be a list of strings, got 'a'"):
        rules.string_list("a", "labels")
    with pytest.raises(InvalidValue, match="pkgs must be a list of strings, but it holds 1"):
        rules.string_list(["x", 1], "pkgs")
    with pytest.raises(InvalidValue, match="runtime must map names to strings, but 'python' is 3"):
        rules.string_map({"python": 3}, "runtime")
    with pytest.raises(InvalidValue, match="artifact has 5000 characters"):
        rules.text("x" * 5000, "artifact")


def test_invalid_is_a_value_error_so_pydantic_reports_it() -> None:
    assert issubclass(InvalidValue, ValueError)


@given(st.text())
def test_show_never_fails_and_stays_short(value: str) -> None:
    assert len(rules.show(value)) <= 60


@given(st.binary())
def test_every_sha256_is_a_bundle_digest(data: bytes) -> None:
    import hashlib

    digest = hashlib.sha256(data).hexdigest()
    assert rules.bundle_sha256(digest) == digest


@pytest.mark.parametrize(
    "value",
    ["a" * 63, "a" * 65, "A" * 64, "g" * 64, "a" * 64 + "\n", "/tmp/evil-bundle", "../" + "a" * 61],
)
def test_anything_else_is_not_a_bundle_digest_and_the_message_says_what_to_send(
    value: str,
) -> None:
    with pytest.raises(InvalidValue, match="is not a sha256: send the 64 lowercase hex digits"):
        rules.bundle_sha256(value)


def test_no_digest_means_no_bundle_and_a_digest_must_be_a_string() -> None:
    assert rules.bundle_sha256("") == ""
    with pytest.raises(InvalidValue, match="bundle_sha256 must be a string"):
        rules.bundle_sha256(None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1Gi", 2**30),
        ("512Mi", 512 * 2**20),
        ("2G", 2 * 10**9),
        ("100M", 100 * 10**6),
        (2**30, 2**30),
        (0, 0),
        ("", 0),
        ("0", 0),
    ],
)
def test_memory_limits_read_as_bytes(value: object, expected: int) -> None:
    assert rules.memory_limit(value) == expected


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("1GB", "not a size"),
        (" 1Gi", "not a size"),
        ("1.5Gi", "not a size"),
        ("-1Gi", "not a size"),
        ("lots", "not a size"),
        ("1Mi", "at least 64Mi"),
        (1000, "at least 64Mi"),
        (-5, "at least 64Mi"),
        (True, "must be an integer"),
        (1.5, "must be an integer"),
        ("9" * 30, "too large"),
    ],
)
def test_bad_memory_limits_say_what_to_write(value: object, says: str) -> None:
    with pytest.raises(InvalidValue, match=says):
        rules.memory_limit(value)


@pytest.mark.parametrize("value", [0, 1, 2_000_000, rules.MAX_BATCH_TIMEOUT_MICROS])
def test_batch_timeouts_from_zero_to_an_hour_are_accepted(value: int) -> None:
    assert rules.batch_timeout_micros(value) == value


@pytest.mark.parametrize("value", [-1, rules.MAX_BATCH_TIMEOUT_MICROS + 1, "1s", 1.0, False])
def test_bad_batch_timeouts_are_refused(value: object) -> None:
    with pytest.raises(InvalidValue, match="batch_timeout_micros"):
        rules.batch_timeout_micros(value)
