"""ONNX bundles: written with the model file, read back, loaded by onnxruntime, and fed
a batch the way a replica feeds it; every model Schooner cannot serve is refused with a
message saying what to do.

The small graphs are built with ``onnx.helper`` (an exact shape or dtype for each case);
the scikit-learn ones are converted with skl2onnx, as a user would.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from admin import LocalContainerManager
from model_container import protocol
from model_container.bundle import (
    BundleDigestError,
    BundleError,
    BundleKind,
    bundle_digest,
    load_predict_function,
    read_bundle_info,
    verify_bundle,
    write_onnx_bundle,
)
from model_container.onnx_model import ModelInputError, OnnxModelError, inspect_onnx_model
from model_container.protocol import ErrorKind, InputType, Predict
from model_container.worker import run_batch

Dim = int | str | None


def onnx_file(
    path: Path,
    shape: list[Dim],
    *,
    elem: int = TensorProto.FLOAT,
    op: str = "Identity",
    out_shape: list[Dim] | None = None,
    inputs: int = 1,
) -> Path:
    """A one-node model: ``op`` of input ``x`` (a second input ``x1`` when ``inputs=2``)."""
    names = ["x"] + [f"x{i}" for i in range(1, inputs)]
    node = (
        helper.make_node("ReduceSum", names[:1], ["y"], keepdims=0, axes=[1])
        if op == "ReduceSum"
        else helper.make_node(op, names[:1] if op == "Identity" else names, ["y"])
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, elem, shape) for n in names],
        [helper.make_tensor_value_info("y", elem, out_shape if out_shape is not None else shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


def sklearn_onnx(path: Path, model: Any, features: int) -> Path:
    from skl2onnx import to_onnx

    path.write_bytes(to_onnx(model, np.zeros((1, features), np.float32)).SerializeToString())
    return path


def served(tmp_path: Path, model: Path, input_type: str = "doubles", **kw: Any) -> Any:
    """The predict function a replica would load from a bundle of ``model``."""
    write_onnx_bundle(tmp_path / "bundle", model, input_type, **kw)
    return load_predict_function(tmp_path / "bundle")


def test_the_bundle_holds_the_model_file_and_a_manifest_and_no_pickle(tmp_path: Path) -> None:
    model = onnx_file(tmp_path / "m.onnx", [None, 3])
    info = write_onnx_bundle(tmp_path / "b", model, "doubles", "y", ["onnxruntime==1.20.0"])
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["model.json", "model.onnx"]
    assert (tmp_path / "b" / "model.onnx").read_bytes() == model.read_bytes()
    doc = json.loads((tmp_path / "b" / "model.json").read_text())
    assert doc["kind"] == "onnx"
    assert doc["model_file"] == "model.onnx"
    assert doc["output_name"] == "y"
    assert doc["engine"] == "onnxruntime"
    assert doc["pkgs"] == ["onnxruntime==1.20.0"]
    assert "onnxruntime" in doc["runtime"]
    back = read_bundle_info(tmp_path / "b")
    assert back == info
    assert back.kind is BundleKind.ONNX
    assert (back.model_file, back.output_name, back.engine) == ("model.onnx", "y", "onnxruntime")
    assert back.input_type is InputType.DOUBLES
    assert back.needs_same_python is False


def test_a_batch_of_rows_becomes_one_tensor_and_each_query_gets_its_row(tmp_path: Path) -> None:
    predict = served(tmp_path, onnx_file(tmp_path / "m.onnx", [None, 3]))
    xs = np.arange(6, dtype=np.float64).reshape(2, 3)
    out = predict(xs)
    assert [list(map(float, row)) for row in out] == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert predict(np.zeros((0, 0))) == []


def test_doubles_are_fed_as_the_float32_the_model_declares(tmp_path: Path) -> None:
    predict = served(tmp_path, onnx_file(tmp_path / "m.onnx", [None, 2]))
    (row,) = predict(np.array([[0.1, 0.2]]))
    assert row.dtype == np.float32
    assert protocol.dump_output(row) == b"[0.1,0.2]"  # float32's shortest text


def test_an_output_declared_n_by_1_serves_each_row_as_a_value(tmp_path: Path) -> None:
    from sklearn.linear_model import Ridge

    x = np.random.default_rng(0).random((20, 3))
    reg = Ridge().fit(x, x.sum(axis=1))
    predict = served(tmp_path, sklearn_onnx(tmp_path / "r.onnx", reg, 3))
    out = predict(x[:5])
    assert [protocol.dump_output(o)[:1] != b"[" for o in out] == [True] * 5
    np.testing.assert_allclose(np.asarray(out, dtype=np.float64), reg.predict(x[:5]), rtol=1e-5)


def test_a_classifier_serves_labels_first_and_probabilities_by_name(tmp_path: Path) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=500).fit(x, y)
    model = sklearn_onnx(tmp_path / "c.onnx", clf, 4)
    labels = served(tmp_path / "a", model)(x[::30])
    assert [int(v) for v in labels] == clf.predict(x[::30]).tolist()
    probs = served(tmp_path / "b", model, output_name="output_probability")(x[:2])
    assert [sorted(p) for p in probs] == [["0", "1", "2"]] * 2  # JSON object keys
    expected = clf.predict_proba(x[:2])
    for got, want in zip(probs, expected, strict=True):
        np.testing.assert_allclose([got[k] for k in "012"], want, rtol=1e-4, atol=1e-6)
    assert json.loads(protocol.dump_output(probs[0])) == probs[0]


def test_queries_of_different_lengths_run_in_groups_for_a_model_of_any_width(
    tmp_path: Path,
) -> None:
    predict = served(tmp_path, onnx_file(tmp_path / "m.onnx", [None, None]))
    out = predict([np.array([1.0, 2.0]), np.array([3.0]), np.array([4.0, 5.0])])
    assert [list(map(float, row)) for row in out] == [[1.0, 2.0], [3.0], [4.0, 5.0]]


def test_a_query_of_the_wrong_length_fails_its_batch_with_what_the_model_takes(
    tmp_path: Path,
) -> None:
    predict = served(tmp_path, onnx_file(tmp_path / "m.onnx", [None, 4]))
    with pytest.raises(ModelInputError, match=r"3 values but the model's input 'x' takes 4"):
        predict(np.zeros((2, 3)))
    with pytest.raises(ModelInputError, match="takes 4"):
        predict([np.zeros(4), np.zeros(5)])
    lengths, data = protocol.pack_arrays([np.zeros(3)], np.dtype("<f8"))
    answer = run_batch(predict, InputType.DOUBLES, Predict(1, InputType.DOUBLES, lengths, data))
    assert isinstance(answer, protocol.Error)
    assert answer.kind is ErrorKind.MODEL_RAISED
    assert answer.exc_type == "ModelInputError"


def test_a_batch_dimension_fixed_at_1_is_served_one_query_at_a_time(tmp_path: Path) -> None:
    model = onnx_file(tmp_path / "m.onnx", [1, 2])
    assert "one query at a time" in inspect_onnx_model(model, "doubles").describe()
    out = served(tmp_path, model)(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    assert [list(map(float, row)) for row in out] == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]


def test_an_input_of_more_dimensions_is_reshaped_from_the_flat_query(tmp_path: Path) -> None:
    model = onnx_file(tmp_path / "m.onnx", ["batch", 2, 2], op="ReduceSum", out_shape=["b", 2])
    out = served(tmp_path, model)(np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]]))
    assert [list(map(float, row)) for row in out] == [[4.0, 6.0], [2.0, 2.0]]


def test_integer_inputs_take_ints_in_range(tmp_path: Path) -> None:
    model = onnx_file(tmp_path / "m.onnx", [None, 2], elem=TensorProto.INT32)
    predict = served(tmp_path, model, "ints")
    assert [list(map(int, row)) for row in predict(np.array([[1, -2]], np.int64))] == [[1, -2]]
    with pytest.raises(ModelInputError, match=r"outside int32's range"):
        predict(np.array([[1, 2**40]], np.int64))
    with pytest.raises(OnnxModelError, match="input_type='ints'"):
        inspect_onnx_model(model, "doubles")


@pytest.mark.parametrize(
    ("build", "input_type", "message"),
    [
        (lambda p: onnx_file(p, [4, 3]), "doubles", r"fixed batch size of 4.*dynamic"),
        (
            lambda p: onnx_file(p, [None, 3], op="Add", inputs=2),
            "doubles",
            r"2 inputs \('x', 'x1'\)",
        ),
        (lambda p: onnx_file(p, [None, 3]), "strings", r"input_type='doubles', 'floats' or 'ints'"),
        (lambda p: onnx_file(p, [None, 1], elem=TensorProto.STRING), "strings", "cannot feed"),
        (lambda p: onnx_file(p, [None, None, 3]), "doubles", "every dimension but the batch"),
        (lambda p: onnx_file(p, []), "doubles", "scalar"),
    ],
    ids=["fixed-batch", "two-inputs", "strings", "string-tensor", "dynamic-dims", "scalar"],
)
def test_models_that_cannot_be_served_are_refused_with_what_to_do(
    tmp_path: Path, build: Any, input_type: str, message: str
) -> None:
    with pytest.raises(OnnxModelError, match=message):
        inspect_onnx_model(build(tmp_path / "m.onnx"), input_type)


def test_an_unknown_output_name_lists_the_outputs(tmp_path: Path) -> None:
    model = onnx_file(tmp_path / "m.onnx", [None, 3])
    with pytest.raises(OnnxModelError, match=r"no output 'probabilities'; its outputs are 'y'"):
        inspect_onnx_model(model, "doubles", "probabilities")


def test_files_that_are_not_onnx_models_are_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.onnx").write_bytes(b"this is not a protobuf")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(OnnxModelError, match=r"is not an ONNX model.*skl2onnx"):
        inspect_onnx_model(tmp_path / "junk.onnx", "doubles")
    with pytest.raises(OnnxModelError, match="is empty"):
        inspect_onnx_model(tmp_path / "empty.onnx", "doubles")
    with pytest.raises(OnnxModelError, match="no file at"):
        inspect_onnx_model(tmp_path / "missing.onnx", "doubles")
    with pytest.raises(OnnxModelError, match="is a directory"):
        inspect_onnx_model(tmp_path, "doubles")
    with pytest.raises(BundleError, match="no file at"):
        write_onnx_bundle(tmp_path / "b", tmp_path / "missing.onnx", "doubles")


def test_a_replica_refuses_a_bundle_whose_model_file_was_changed(tmp_path: Path) -> None:
    write_onnx_bundle(tmp_path / "b", onnx_file(tmp_path / "m.onnx", [None, 3]), "doubles")
    digest = bundle_digest(tmp_path / "b")
    onnx_file(tmp_path / "b" / "model.onnx", [None, 4])
    with pytest.raises(BundleDigestError):
        verify_bundle(tmp_path / "b", digest)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_file": "../m.onnx"}, "must name a file in the bundle"),
        ({"model_file": None}, "must name a file in the bundle"),
        ({"output_name": 3}, "'output_name' must be a string or null"),
        ({"engine": "tensorrt"}, "engine 'tensorrt' is not one this container runs"),
    ],
)
def test_a_manifest_that_points_outside_or_elsewhere_is_refused(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    write_onnx_bundle(tmp_path / "b", onnx_file(tmp_path / "m.onnx", [None, 3]), "doubles")
    doc = json.loads((tmp_path / "b" / "model.json").read_text())
    (tmp_path / "b" / "model.json").write_text(json.dumps({**doc, **change}))
    with pytest.raises(BundleError, match=message):
        read_bundle_info(tmp_path / "b")


def test_a_bundle_whose_model_no_longer_fits_fails_to_load_with_the_reason(
    tmp_path: Path,
) -> None:
    write_onnx_bundle(tmp_path / "b", onnx_file(tmp_path / "m.onnx", [None, 3]), "doubles", "z")
    with pytest.raises(BundleError, match=r"cannot serve the ONNX model.*no output 'z'"):
        load_predict_function(tmp_path / "b")


def test_a_model_file_written_under_another_python_is_not_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    info = write_onnx_bundle(bundle, onnx_file(tmp_path / "m.onnx", [None, 3]), "doubles")
    text = (bundle / "model.json").read_text().replace(info.runtime["python"], "3.10.13")
    (bundle / "model.json").write_text(text)
    assert read_bundle_info(bundle).runtime["python"] == "3.10.13" != platform.python_version()
    cm = LocalContainerManager(data_dir=tmp_path / "data")
    assert cm.build_model("m", "1", bundle) == bundle_digest(bundle)


def test_a_model_whose_weights_live_in_another_file_is_refused(tmp_path: Path) -> None:
    from onnx import numpy_helper

    weights = numpy_helper.from_array(np.ones((3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    onnx.save_model(
        model,
        str(tmp_path / "m.onnx"),
        save_as_external_data=True,
        location="m.bin",
        size_threshold=0,
    )
    assert inspect_onnx_model(tmp_path / "m.onnx", "doubles").output_name == "y"  # beside it
    write_onnx_bundle(tmp_path / "b", tmp_path / "m.onnx", "doubles")
    with pytest.raises(OnnxModelError, match=r"external data.*save the model as a single file"):
        inspect_onnx_model(tmp_path / "b" / "model.onnx", "doubles")
