"""A model that raises anything at all fails its batch, never the replica's worker."""

import asyncio

import numpy as np
import pytest

from model_container import protocol
from model_container.protocol import ErrorKind, InputType, Predict
from model_container.worker import run_batch


def batch(n: int) -> Predict:
    lengths, data = protocol.pack_arrays([np.array([1.0])] * n, np.dtype("<f8"))
    return Predict(7, InputType.DOUBLES, lengths, data.tobytes())


@pytest.mark.parametrize(
    "exc", [ValueError("bad"), SystemExit(3), KeyboardInterrupt(), asyncio.CancelledError()]
)
def test_any_exception_from_the_model_becomes_a_model_raised_error(exc):
    def model(xs):
        raise exc

    answer = run_batch(model, InputType.DOUBLES, batch(2))
    assert isinstance(answer, protocol.Error)
    assert answer.kind is ErrorKind.MODEL_RAISED
    assert answer.message.startswith(type(exc).__name__)
    assert answer.exc_type == type(exc).__name__
