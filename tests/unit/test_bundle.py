"""The model bundle format: writing, reading, loading and the runtime compatibility check."""

from __future__ import annotations

import json
import platform
import sys
import textwrap
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest

from model_container import (
    BundleError,
    BundleKind,
    IncompatibleRuntimeError,
    InputType,
    check_compatible,
    load_predict_function,
    read_bundle_info,
    runtime_versions,
    write_closure_bundle,
    write_entry_point_bundle,
)


@pytest.fixture(autouse=True)
def _isolated_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entry points put their bundle on sys.path and import modules: undo both."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))


def _rewrite_runtime(bundle: Path, **versions: str) -> None:
    doc = json.loads((bundle / "model.json").read_text())
    doc["runtime"].update(versions)
    (bundle / "model.json").write_text(json.dumps(doc))


def test_runtime_versions_describe_this_interpreter() -> None:
    versions = runtime_versions()
    assert versions["python"] == platform.python_version()
    assert versions["cloudpickle"] == cloudpickle.__version__
    assert versions["numpy"] == np.__version__


# --------------------------------------------------------------------------- closures


def test_closure_round_trip(tmp_path: Path) -> None:
    offset = 10  # captured by value

    def predict(xs: Any) -> list[float]:
        return [float(np.sum(x)) + offset for x in xs]

    info = write_closure_bundle(tmp_path / "b", predict, "doubles", ["numpy"])
    assert info.kind is BundleKind.CLOSURE
    assert read_bundle_info(tmp_path / "b") == info
    doc = json.loads((tmp_path / "b" / "model.json").read_text())
    assert doc == {
        "format": 1,
        "kind": "closure",
        "input_type": "doubles",
        "runtime": runtime_versions(),
        "pkgs": ["numpy"],
    }
    loaded = load_predict_function(tmp_path / "b")
    assert loaded(np.array([[1.0, 2.0], [3.0, 4.0]])) == [13.0, 17.0]


def test_closure_bundle_refuses_unknown_input_type(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="unknown input type 'tensors'"):
        write_closure_bundle(tmp_path / "b", len, "tensors")


# ------------------------------------------------------------------------ entry points


def _module(bundle: Path, name: str, source: str) -> None:
    path = bundle / Path(*name.split(".")).with_suffix(".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in path.relative_to(bundle).parents:
        if parent != Path("."):
            (bundle / parent / "__init__.py").touch()
    path.write_text(textwrap.dedent(source))


def test_entry_point_class_is_instantiated_and_its_predict_used(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    _module(
        bundle,
        "ep_class_model",
        """
        class Doubler:
            def __init__(self):
                self.factor = 2

            def predict(self, xs):
                return [x * self.factor for x in xs]
        """,
    )
    info = write_entry_point_bundle(bundle, "ep_class_model:Doubler", InputType.INTS)
    assert info.kind is BundleKind.ENTRY_POINT
    assert read_bundle_info(bundle).entry_point == "ep_class_model:Doubler"
    assert load_predict_function(bundle)([1, 2, 3]) == [2, 4, 6]


def test_entry_point_function_in_a_package(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    _module(bundle, "ep_pkg.models.text", "def shout(xs):\n    return [x.upper() for x in xs]\n")
    write_entry_point_bundle(bundle, "ep_pkg.models.text:shout", "strings", ["requests"])
    assert load_predict_function(bundle)(["a", "b"]) == ["A", "B"]


def test_entry_point_bundles_skip_the_pickle_check(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    _module(bundle, "ep_old_python", "def f(xs):\n    return list(xs)\n")
    write_entry_point_bundle(bundle, "ep_old_python:f", "bytes")
    _rewrite_runtime(bundle, python="3.10.13", cloudpickle="2.2.1")
    assert load_predict_function(bundle)([b"x"]) == [b"x"]


@pytest.mark.parametrize(
    ("entry_point", "message"),
    [
        ("ep_missing_module:f", "cannot import module 'ep_missing_module'"),
        ("ep_present:nope", "has no attribute 'nope'"),
        ("ep_present:CONSTANT", "is a int"),
        ("ep_present:Broken", r"Broken\(\) raised RuntimeError: no GPU"),
        ("ep_present:NoPredict", "has no predict method"),
    ],
)
def test_entry_point_failures_explain_themselves(
    tmp_path: Path, entry_point: str, message: str
) -> None:
    bundle = tmp_path / "b"
    _module(
        bundle,
        "ep_present",
        """
        CONSTANT = 3

        class Broken:
            def __init__(self):
                raise RuntimeError("no GPU")

        class NoPredict:
            pass
        """,
    )
    write_entry_point_bundle(bundle, entry_point, "ints")
    with pytest.raises(BundleError, match=message):
        load_predict_function(bundle)


@pytest.mark.parametrize("bad", ["module", "module:", ":attr", "a b:c", "mod:attr:more"])
def test_malformed_entry_point_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(BundleError, match=r"package\.module:attribute"):
        write_entry_point_bundle(tmp_path / "b", bad, "ints")


# -------------------------------------------------------------- compatibility check

HERE = {"python": "3.11.7", "cloudpickle": "3.1.2", "numpy": "2.4.6"}


def test_python_minor_mismatch_is_refused_naming_both_versions() -> None:
    with pytest.raises(IncompatibleRuntimeError) as caught:
        check_compatible({**HERE, "python": "3.10.13"}, HERE)
    assert str(caught.value) == (
        "model was pickled under Python 3.10.13 / cloudpickle 3.1.2 but this container "
        "runs Python 3.11.7 / cloudpickle 3.1.2: re-deploy from a Python 3.11 environment "
        "(or use a base image with Python 3.10)"
    )


def test_cloudpickle_major_mismatch_is_refused_naming_both_versions() -> None:
    with pytest.raises(IncompatibleRuntimeError) as caught:
        check_compatible({**HERE, "cloudpickle": "2.2.1"}, HERE)
    message = str(caught.value)
    assert "cloudpickle 2.2.1" in message
    assert "cloudpickle 3.1.2" in message
    assert "cloudpickle 3.x environment" in message
    assert "base image with cloudpickle 2.x" in message


def test_both_mismatched() -> None:
    with pytest.raises(IncompatibleRuntimeError) as caught:
        check_compatible({"python": "3.12.1", "cloudpickle": "2.0.0"}, HERE)
    assert "re-deploy from a Python 3.11 / cloudpickle 3.x environment" in str(caught.value)
    assert "base image with Python 3.12 and cloudpickle 2.x" in str(caught.value)


@pytest.mark.parametrize(
    "pickled",
    [
        {"python": "3.11.0", "cloudpickle": "3.0.0"},
        {"python": "3.11.9", "cloudpickle": "3.1.0", "numpy": "1.26.4"},
        {"python": "3.11.7+", "cloudpickle": "3.2.0"},
    ],
)
def test_patch_level_differences_are_accepted(pickled: dict[str, str]) -> None:
    check_compatible(pickled, HERE)


@pytest.mark.parametrize(
    "pickled", [{}, {"python": "3.11.7"}, {"python": "three", "cloudpickle": "3.1.2"}]
)
def test_unknown_pickling_runtime_is_refused(pickled: dict[str, str]) -> None:
    with pytest.raises(IncompatibleRuntimeError, match=r"but this container runs Python 3\.11\.7"):
        check_compatible(pickled, HERE)


def test_incompatible_error_is_a_value_error() -> None:
    assert issubclass(IncompatibleRuntimeError, ValueError)


@pytest.mark.parametrize(
    "versions", [{"python": "3.10.13"}, {"cloudpickle": "2.2.1"}, {"python": "2.7.18"}]
)
def test_load_refuses_incompatible_pickle_before_unpickling(
    tmp_path: Path, versions: dict[str, str]
) -> None:
    bundle = tmp_path / "b"
    write_closure_bundle(bundle, len, "bytes")
    _rewrite_runtime(bundle, **versions)
    # Were it unpickled, this would fail with an UnpicklingError instead.
    (bundle / "func.pkl").write_bytes(b"not a pickle")
    with pytest.raises(IncompatibleRuntimeError) as caught:
        load_predict_function(bundle)
    assert next(iter(versions.values())) in str(caught.value)
    assert runtime_versions()["python"] in str(caught.value)


def test_load_accepts_patch_level_difference(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    write_closure_bundle(bundle, len, "bytes")
    major, minor, _ = platform.python_version_tuple()
    _rewrite_runtime(bundle, python=f"{major}.{minor}.99", cloudpickle="3.99.0")
    result: Any = load_predict_function(bundle)(b"abc")
    assert result == 3


# --------------------------------------------------------------------- broken bundles


def test_missing_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"no model bundle at .*model\.json is missing"):
        read_bundle_info(tmp_path / "nowhere")


def test_missing_pickle(tmp_path: Path) -> None:
    write_closure_bundle(tmp_path, len, "bytes")
    (tmp_path / "func.pkl").unlink()
    with pytest.raises(BundleError, match="cannot read the pickled model"):
        load_predict_function(tmp_path)


def test_corrupt_pickle(tmp_path: Path) -> None:
    write_closure_bundle(tmp_path, len, "bytes")
    (tmp_path / "func.pkl").write_bytes(b"garbage")
    with pytest.raises(BundleError, match="cannot unpickle the model"):
        load_predict_function(tmp_path)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("{", "cannot read"),
        ("[]", "not a JSON object"),
        ('{"format": 2}', "has format 2"),
        ('{"format": 1, "kind": "docker"}', "unknown kind 'docker'"),
        ('{"format": 1, "kind": "closure", "input_type": "x"}', "unknown input type 'x'"),
        ('{"format": 1, "kind": "closure", "input_type": "ints", "pkgs": "a"}', "'pkgs'"),
        ('{"format": 1, "kind": "entry_point", "input_type": "ints"}', "entry point None"),
    ],
)
def test_malformed_model_json(tmp_path: Path, doc: str, message: str) -> None:
    (tmp_path / "model.json").write_text(doc)
    with pytest.raises(BundleError, match=message):
        read_bundle_info(tmp_path)
