"""Serving a model file: an ONNX graph run by onnxruntime, with no code from the user.

An ONNX bundle (``model_container.bundle``, kind ``"onnx"``) holds the model file and
names the output to serve; nothing in it is unpickled or imported. The same checks run
twice: in the admin client before anything is deployed (``inspect_onnx_model``, so that a
wrong file or input type is refused at once), and in the replica when it loads the
bundle (``load_onnx_model``).

What a model file must look like to be served:

- **One input**, a numeric tensor whose first dimension is the batch. A batch of N
  queries (each a 1-d list of numbers) becomes one ``[N, ...]`` tensor of the dtype the
  model declares: a query's values are converted (doubles to float32 for most
  skl2onnx models, at float32's precision) and, for inputs of more than two dimensions
  (an image ``[N, 3, 224, 224]``), reshaped row-major from the flat list. Float inputs
  take any numeric input type; integer inputs take ``ints`` only (values outside the
  dtype's range are refused, never wrapped).
- **The batch dimension** is dynamic (``None`` or a name: any N), or fixed at 1 (each
  query then runs alone: correct, but without batching's speed-up -- export with a
  dynamic batch axis). Any other fixed batch size is refused.
- **The output** served is the first one, unless ``output_name`` chooses another. Each
  query gets its row: a tensor's ``[i]`` (a value, for outputs declared ``[N, 1]`` as
  scikit-learn regressors are), a sequence's i-th element (skl2onnx's ZipMap
  probabilities: a ``{label: probability}`` object, keys as strings).

Errors::

    ValueError
     ├── OnnxModelError    a file that cannot be served (refused at deploy or load)
     └── ModelInputError   a query that does not fit the model (its batch fails, the
                           replica stays up; clients see the type's name)

onnxruntime is imported only when a model is loaded: ``model_container`` itself stays
importable without it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_container.protocol import InputType

logger = logging.getLogger(__name__)

ENGINE = "onnxruntime"
# Execution providers tried in this order, when the installed onnxruntime has them
# (onnxruntime-gpu has CUDA); others (TensorRT, Azure...) need settings of their own.
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")

_FLOATS: dict[str, np.dtype[Any]] = {
    "tensor(float16)": np.dtype("float16"),
    "tensor(float)": np.dtype("float32"),
    "tensor(double)": np.dtype("float64"),
}
_INTEGERS: dict[str, np.dtype[Any]] = {
    f"tensor({name})": np.dtype(name)
    for name in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
}
NUMERIC_INPUT_TYPES = (InputType.INTS, InputType.FLOATS, InputType.DOUBLES)


class OnnxModelError(ValueError):
    """A model file that cannot be served: not ONNX, or not of a shape Schooner feeds."""


class ModelInputError(ValueError):
    """A query that does not fit the model (its length, its values)."""


@dataclass(frozen=True, slots=True)
class OnnxSignature:
    """What a replica feeds the model and what it serves of its answer."""

    input_name: str
    input_type: str  # the ONNX type, e.g. "tensor(float)"
    dtype: np.dtype[Any]
    item_shape: tuple[int | None, ...]  # one query's dimensions; None: any length
    one_at_a_time: bool  # the batch dimension is fixed at 1
    output_name: str
    outputs: tuple[str, ...]  # every output the model has
    scalar_rows: bool  # the output is declared [N, 1]: serve each row's value

    @property
    def item_size(self) -> int | None:
        """How many values a query must have; None: any (the same within a batch)."""
        if any(d is None for d in self.item_shape):
            return None
        return math.prod(d for d in self.item_shape if d is not None)

    def describe(self) -> str:
        """``input 'X' float32 [N, 4], output 'label' (of label, probabilities)``."""
        dims = ", ".join(["N", *(str(d) if d else "?" for d in self.item_shape)])
        batch = " (one query at a time: its batch dimension is fixed at 1)" * self.one_at_a_time
        others = f" (of {', '.join(self.outputs)})" if len(self.outputs) > 1 else ""
        return (
            f"input {self.input_name!r} {self.dtype} [{dims}]{batch}, "
            f"output {self.output_name!r}{others}"
        )


# --------------------------------------------------------------------------- loading


def _runtime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise OnnxModelError(
            f"onnxruntime is not installed here ({exc}): pip install onnxruntime "
            "(the schooner[onnx] extra)"
        ) from exc
    return onnxruntime


def onnxruntime_version() -> str | None:
    """The installed onnxruntime's version, None if it is not installed."""
    from importlib import metadata

    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def model_file(path: str | os.PathLike[str]) -> Path:
    """``path``, if it is a file that could be a model; else ``OnnxModelError`` saying why."""
    file = Path(path)
    if file.is_dir():
        raise OnnxModelError(f"{file} is a directory, not an ONNX model file: pass the .onnx file")
    try:
        size = file.stat().st_size
    except FileNotFoundError:
        raise OnnxModelError(
            f"there is no file at {file}: pass the path of an .onnx file"
        ) from None
    except OSError as exc:
        raise OnnxModelError(f"cannot read the model file {file}: {exc}") from exc
    if not file.is_file():
        raise OnnxModelError(f"{file} is not a regular file: pass the path of an .onnx file")
    if size == 0:
        raise OnnxModelError(f"{file} is empty, not an ONNX model")
    return file


def read_model_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of the model file at ``path``, or ``OnnxModelError`` saying why not."""
    file = model_file(path)
    try:
        return file.read_bytes()
    except OSError as exc:
        raise OnnxModelError(f"cannot read the model file {file}: {exc}") from exc


def open_session(path: str | os.PathLike[str], what: str | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` of the model file at ``path`` (``what``: how
    messages name it, default the path).

    onnxruntime looks for weights stored in other files ("external data", for models over
    2 GB) next to the model file, refusing paths that leave its directory. A bundle holds
    the model file alone, so such a model fails to load: refused at deploy, where the
    admin client opens the bundle's copy as a replica will.
    """
    what = what or str(path)
    file = model_file(path)
    ort = _runtime()
    available = ort.get_available_providers()
    providers = [p for p in PREFERRED_PROVIDERS if p in available] or list(available)
    try:
        return ort.InferenceSession(str(file), providers=providers)
    except Exception as exc:
        text = " ".join(str(exc).split())
        lowered = text.lower()
        if type(exc).__name__ == "InvalidProtobuf" or "protobuf parsing failed" in lowered:
            raise OnnxModelError(
                f"{what} is not an ONNX model (onnxruntime cannot parse it). Export "
                "the model to ONNX first: skl2onnx for scikit-learn, torch.onnx.export for "
                "PyTorch, tf2onnx for TensorFlow/Keras"
            ) from exc
        if "external" in lowered:
            raise OnnxModelError(
                f"onnxruntime {ort.__version__} cannot load {what}: {text}. Its weights "
                "are stored outside the file (external data), which Schooner does not "
                "serve: save the model as a single file"
            ) from exc
        raise OnnxModelError(
            f"onnxruntime {ort.__version__} cannot load {what}: {text} (a model exported "
            "with a newer opset needs a newer onnxruntime)"
        ) from exc


def signature(session: Any, input_type: InputType | str, output_name: str | None) -> OnnxSignature:
    """Check that ``session``'s model can be fed ``input_type`` queries and has the
    output to serve; ``OnnxModelError`` says what does not fit and what to do."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        listed = ", ".join(repr(i.name) for i in inputs) or "none"
        raise OnnxModelError(
            f"the model has {len(inputs)} inputs ({listed}); Schooner feeds a model one input "
            "tensor [N, features]: export it with a single input (skl2onnx: one "
            "initial_types entry covering every feature, e.g. FloatTensorType([None, n]))"
        )
    given = InputType(input_type)
    first = inputs[0]
    dtype = _input_dtype(first.name, str(first.type), given)
    shape = list(first.shape)
    if not shape:
        raise OnnxModelError(
            f"the model's input {first.name!r} is a scalar: it needs a batch dimension first"
        )
    batch = _dim(shape[0])
    if batch is not None and batch != 1:
        raise OnnxModelError(
            f"the model's input {first.name!r} has a fixed batch size of {batch} (shape "
            f"{shape}): export it with a dynamic batch axis (torch.onnx.export(..., "
            "dynamic_axes={'input': {0: 'batch'}}); skl2onnx: FloatTensorType([None, n]))"
        )
    item_shape = tuple(_dim(d) for d in shape[1:])
    if len(item_shape) > 1 and None in item_shape:
        raise OnnxModelError(
            f"the model's input {first.name!r} has shape {shape}: a query arrives as a flat "
            "list, which Schooner can reshape only when every dimension but the batch is fixed"
        )
    names = tuple(str(o.name) for o in outputs)
    if not names:
        raise OnnxModelError("the model has no outputs")
    chosen = names[0] if output_name is None else output_name
    if chosen not in names:
        raise OnnxModelError(
            f"the model has no output {chosen!r}; its outputs are {', '.join(map(repr, names))}"
        )
    out = outputs[names.index(chosen)]
    out_kind = str(out.type)
    if not out_kind.startswith(("tensor(", "seq(")):
        raise OnnxModelError(
            f"the model's output {chosen!r} is a {out_kind}, not one row per input: choose "
            f"another with output_name= (its outputs are {', '.join(map(repr, names))})"
        )
    out_shape = list(out.shape) if out_kind.startswith("tensor(") else []
    return OnnxSignature(
        input_name=str(first.name),
        input_type=str(first.type),
        dtype=dtype,
        item_shape=item_shape,
        one_at_a_time=batch == 1,
        output_name=chosen,
        outputs=names,
        scalar_rows=len(out_shape) == 2 and _dim(out_shape[1]) == 1,
    )


def _dim(value: object) -> int | None:
    """A declared dimension: its size, or None for a dynamic one (a name, None, <= 0)."""
    return value if isinstance(value, int) and value > 0 else None


def _input_dtype(name: str, onnx_type: str, given: InputType) -> np.dtype[Any]:
    if onnx_type in _FLOATS and given in NUMERIC_INPUT_TYPES:
        return _FLOATS[onnx_type]
    if onnx_type in _INTEGERS and given is InputType.INTS:
        return _INTEGERS[onnx_type]
    if onnx_type in _INTEGERS and given in NUMERIC_INPUT_TYPES:
        raise OnnxModelError(
            f"the model's input {name!r} is {onnx_type} but input_type={str(given)!r} was "
            "given: deploy it with input_type='ints' (fractional values are never truncated)"
        )
    if onnx_type in _FLOATS:
        raise OnnxModelError(
            f"the model's input {name!r} is {onnx_type} but input_type={str(given)!r} was "
            "given: deploy it with input_type='doubles', 'floats' or 'ints'"
        )
    raise OnnxModelError(
        f"the model's input {name!r} is {onnx_type}, which Schooner cannot feed: it serves "
        "ONNX models whose input is a float or integer tensor"
    )


def inspect_onnx_model(
    path: str | os.PathLike[str],
    input_type: InputType | str,
    output_name: str | None = None,
    *,
    what: str | None = None,
) -> OnnxSignature:
    """Load the model file at ``path`` and check it can serve ``input_type`` queries
    (``what``: how messages name the file, default its path)."""
    return signature(open_session(path, what), input_type, output_name)


def load_onnx_model(
    path: str | os.PathLike[str], input_type: InputType | str, output_name: str | None
) -> OnnxModel:
    """The model file at ``path`` as a function of a batch (``OnnxModel``)."""
    session = open_session(path)
    model = OnnxModel(session, signature(session, input_type, output_name))
    logger.info("loaded ONNX model %s: %s", path, model.signature.describe())
    return model


# --------------------------------------------------------------------------- serving


class OnnxModel:
    """Runs a batch through an onnxruntime session: one output (a row) per query."""

    def __init__(self, session: Any, signature: OnnxSignature) -> None:
        self.session = session
        self.signature = signature

    def __call__(self, inputs: Any) -> Sequence[Any]:
        """``inputs``: a 2-d array (one row per query), or a list of 1-d arrays of
        different lengths (``protocol.unpack_inputs``)."""
        if isinstance(inputs, np.ndarray):
            return self._rows(inputs) if inputs.shape[0] else []
        by_length: dict[int, list[int]] = {}
        for index, x in enumerate(inputs):
            by_length.setdefault(len(x), []).append(index)
        answers: list[Any] = [None] * len(inputs)
        for indices in by_length.values():  # a model of any width: a run per width
            rows = self._rows(np.stack([inputs[i] for i in indices]))
            for index, row in zip(indices, rows, strict=True):
                answers[index] = row
        return answers

    def _rows(self, rows: np.ndarray) -> Sequence[Any]:
        sig = self.signature
        n = rows.shape[0]
        x = self._tensor(rows)
        if sig.one_at_a_time:
            return [self._output(x[i : i + 1], 1)[0] for i in range(n)]
        return self._output(x, n)

    def _tensor(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` as the model's input: checked length, its dtype, its shape."""
        sig = self.signature
        width = rows.shape[1]
        expected = sig.item_size
        if expected is not None and width != expected:
            dims = ", ".join(str(d) for d in sig.item_shape)
            raise ModelInputError(
                f"an input has {width} values but the model's input {sig.input_name!r} takes "
                f"{expected} per query (shape [N, {dims}])"
            )
        if sig.dtype.kind in "iu" and rows.dtype != sig.dtype and rows.size:
            limits = np.iinfo(sig.dtype)
            if int(rows.min()) < limits.min or int(rows.max()) > limits.max:
                raise ModelInputError(
                    f"an input holds a value outside {sig.dtype}'s range "
                    f"[{limits.min}, {limits.max}], which the model's input "
                    f"{sig.input_name!r} takes"
                )
        x = rows.astype(sig.dtype, copy=False)
        if len(sig.item_shape) != 1:
            x = x.reshape((rows.shape[0], *(d or 0 for d in sig.item_shape)))
        return x

    def _output(self, x: np.ndarray, n: int) -> Sequence[Any]:
        sig = self.signature
        (value,) = self.session.run([sig.output_name], {sig.input_name: x})
        if isinstance(value, np.ndarray):
            if value.ndim == 0 or value.shape[0] != n:
                raise ValueError(
                    f"the model's output {sig.output_name!r} has shape {list(value.shape)} for "
                    f"a batch of {n}: it does not have one row per input"
                )
            if sig.scalar_rows and value.ndim == 2 and value.shape[1] == 1:
                value = value[:, 0]
            return value.tolist() if value.dtype == object else value  # type: ignore[no-any-return]
        if isinstance(value, list):
            if len(value) != n:
                raise ValueError(
                    f"the model's output {sig.output_name!r} has {len(value)} elements for a "
                    f"batch of {n}: it does not have one per input"
                )
            return [_jsonable(v) for v in value]
        raise ValueError(
            f"the model's output {sig.output_name!r} is a {type(value).__name__}, not one "
            "row per input"
        )


def _jsonable(value: Any) -> Any:
    """A sequence element as JSON can hold it: maps (ZipMap) get string keys."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray) and value.dtype == object:
        return value.tolist()
    return value
