"""The Clipper drop-in's pure parts: record shapes, the JSON-output rule, image names.

Clipper's management API answered with its own keys (``model_name``, ``model_version``,
``latency_slo_micros``, ``is_current_version``, ...); code written for it reads them.
These tests pin the mapping from Schooner's records, and that the output wrapper runs
where ``admin`` is not installed (a model container).
"""

from __future__ import annotations

import subprocess
import sys

import cloudpickle
import numpy as np
import pytest

from admin import SchoonerError
from admin.clipper import ClipperException, UnconnectedException
from admin.clipper._images import is_clipper_image
from admin.clipper._outputs import default_value, json_outputs, json_value
from admin.clipper._records import (
    app_record,
    clipper_input_type,
    default_text,
    model_record,
    replica_key,
    replica_records,
)
from admin.clipper.exceptions import clipper_errors
from admin.exceptions import ConflictError, NotConnectedError

SCHOONER_APP = {
    "name": "hello-world",
    "input_type": "ints",
    "default_output": -1.0,
    "slo_micros": 100000,
    "policy": "single",
    "policy_params": {},
    "cache_enabled": True,
    "linked_models": ["sum-model"],
    "api_keys": 0,
}

SCHOONER_VERSION = {
    "name": "sum-model",
    "version": "1",
    "input_type": "doubles",
    "bundle_sha256": "ab" * 32,
    "labels": ["a"],
    "batch_size": -1,
    "num_replicas": 1,
}


def test_an_app_has_clippers_keys_and_types() -> None:
    assert app_record(SCHOONER_APP) == {
        "name": "hello-world",
        "input_type": "integers",
        "default_output": "-1.0",
        "latency_slo_micros": 100000,
        "linked_models": ["sum-model"],
    }


def test_a_model_version_has_clippers_keys() -> None:
    record = model_record(SCHOONER_VERSION, is_current_version=True, container_name="img:1")
    assert record == {
        "model_name": "sum-model",
        "model_version": "1",
        "input_type": "doubles",
        "labels": ["a"],
        "container_name": "img:1",
        "model_data_path": "DEPRECATED",
        "is_current_version": True,
    }


def test_a_version_without_a_bundle_is_clippers_containerless_model() -> None:
    registered = {**SCHOONER_VERSION, "bundle_sha256": ""}
    record = model_record(registered, is_current_version=False, container_name="img:1")
    assert record["container_name"] == "NO_CONTAINER"
    assert record["is_current_version"] is False


def test_replicas_are_numbered_and_listed_once_however_many_frontends() -> None:
    def replica(rid: str, frontend: str, version: str = "1") -> dict[str, object]:
        return {
            "replica_id": rid,
            "model_name": "m",
            "model_version": version,
            "input_type": "ints",
            "frontend": frontend,
        }

    records = replica_records(
        [
            replica("m-1-r1", "qf-0"),
            replica("m-1-r0", "qf-0"),
            replica("m-1-r0", "qf-1"),  # the same replica, connected to a second frontend
            replica("m-2-7d9f-abcde", "qf-0", version="2"),  # a pod's name
        ]
    )
    assert records == [
        {
            "model_id": "m:1",
            "model_name": "m",
            "model_version": "1",
            "model_replica_id": 0,
            "input_type": "integers",
        },
        {
            "model_id": "m:1",
            "model_name": "m",
            "model_version": "1",
            "model_replica_id": 1,
            "input_type": "integers",
        },
        {
            "model_id": "m:2",
            "model_name": "m",
            "model_version": "2",
            "model_replica_id": 0,
            "input_type": "integers",
        },
    ]
    assert [replica_key(r) for r in records] == ["m:1:0", "m:1:1", "m:2:0"]


@pytest.mark.parametrize(
    ("ours", "clippers"),
    [("ints", "integers"), ("doubles", "doubles"), ("strings", "strings"), ("json", "json")],
)
def test_input_types_are_spelt_as_clipper_did(ours: str, clippers: str) -> None:
    assert clipper_input_type(ours) == clippers


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1),
        ("-1.0", -1.0),
        ('{"a": [1, 2]}', {"a": [1, 2]}),
        ('"quoted"', "quoted"),
        ("DEFAULT", "DEFAULT"),
        ("None", "None"),
        ("NaN", "NaN"),  # not JSON: an answer cannot carry it
        ("Infinity", "Infinity"),
        ("[1, NaN]", "[1, NaN]"),
        ("[1, 2", "[1, 2"),
        ("[" * 100_000, "[" * 100_000),  # too deep for the parser: stays text
    ],
)
def test_a_string_that_is_json_is_its_value(text: str, value: object) -> None:
    assert json_value(text) == value
    assert default_value(text) == value


def test_a_default_that_is_not_a_string_is_kept_and_shown_as_clipper_stored_it() -> None:
    assert default_value(3) == 3
    assert default_text(-1.0) == "-1.0"
    assert default_text({"a": 1}) == '{"a": 1}'
    assert default_text("DEFAULT") == "DEFAULT"


def test_the_closure_wrapper_turns_json_strings_into_values_only() -> None:
    predict = json_outputs(lambda xs: ["1", "x", 2.5, "[1]", None][: len(xs)])
    assert predict([0] * 5) == [1, "x", 2.5, [1], None]
    strings = json_outputs(lambda xs: np.array(["1", "a"]))
    assert strings([0, 0]) == [1, "a"]  # numpy strings are strings too
    numbers = json_outputs(lambda xs: np.array([1.5, 2.5]))
    assert isinstance(numbers([0, 0]), np.ndarray)  # left to the container as it is


def test_the_wrapped_closure_loads_where_admin_is_not_installed() -> None:
    """A model container has model_container and the user's packages, not ``admin``."""
    offset = 10

    def model(xs: list[int]) -> list[str]:
        return [str(x + offset) for x in xs]

    blob = cloudpickle.dumps(json_outputs(model))
    script = (
        "import sys, pickle\n"
        "sys.modules['admin'] = None  # importing admin now fails\n"
        "f = pickle.loads(sys.stdin.buffer.read())\n"
        "print(f([1, 2]))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], input=blob, capture_output=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr.decode()
    assert run.stdout.decode().strip() == "[11, 12]"


@pytest.mark.parametrize(
    "image",
    [
        "default",
        "clipper/noop-container:0.4.1",
        "clipper/python37-closure-container:0.4.1",
        "clipper/query_frontend:develop",
        "localhost:5000/clipper/python36-closure-container:0.4.1",
    ],
)
def test_clippers_images_are_recognised(image: str) -> None:
    assert is_clipper_image(image)


@pytest.mark.parametrize("image", ["python:3.11-slim", "me/noop-container:1", "schooner/x:1"])
def test_other_images_are_not_clippers(image: str) -> None:
    assert not is_clipper_image(image)


def test_errors_leave_as_clipper_exceptions_keeping_the_cause() -> None:
    @clipper_errors
    def conflict() -> None:
        raise ConflictError("app 'a' already exists", status_code=409)

    @clipper_errors
    def unconnected() -> None:
        raise NotConnectedError("call start()")

    with pytest.raises(ClipperException) as caught:
        conflict()
    assert caught.value.msg == "app 'a' already exists"
    assert isinstance(caught.value, SchoonerError)
    assert isinstance(caught.value.__cause__, ConflictError)
    with pytest.raises(UnconnectedException):
        unconnected()
