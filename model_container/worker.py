"""Running the user's function on one batch: ``run_batch`` and the ``BatchRunner``.

The model runs on the serving loop's own thread, the one that owns the frontend
sockets (no hand-off between threads on the way in or out); while a batch runs long, a
stand-in thread keeps the connections alive (``standin``).

``run_batch`` is the whole contract between a batch and the model: decode the inputs,
call the model, check that it returned one JSON-serialisable output per input. Whatever
the model does, it yields a RESULT or an ERROR; it never raises. An exception's
traceback goes to this replica's log; the ERROR carries its type and message, and the
frontend shows a client the message only if the app allows it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from model_container import protocol, tracing
from model_container.bundle import PredictFunction
from model_container.metrics import ContainerMetrics
from model_container.protocol import Error, ErrorKind, InputType, Predict, Result
from model_container.request_context import request_ids
from model_container.watchdog import BatchWatchdog

logger = logging.getLogger(__name__)

# An ERROR message is for people; keep a pathological exception text from bloating it.
MAX_ERROR_MESSAGE = 2000


def is_memory_error(outcome: Result | Error) -> bool:
    """Whether the batch failed with MemoryError: the process may be unusable after it."""
    return isinstance(outcome, Error) and outcome.exc_type == "MemoryError"


def run_batch(predict: PredictFunction, input_type: InputType, msg: Predict) -> Result | Error:
    """Run ``predict`` on the batch of ``msg`` and encode its answer."""
    if msg.input_type != input_type:
        return _error(
            msg,
            ErrorKind.BAD_INPUT,
            f"batch has input type '{msg.input_type}' but this model takes '{input_type}'",
        )
    try:
        inputs = protocol.unpack_inputs(msg.input_type, msg.lengths, msg.data)
    except protocol.ProtocolError as exc:
        return _error(msg, ErrorKind.BAD_INPUT, f"cannot decode the batch: {exc}")
    n = msg.size
    token = request_ids.set(msg.request_ids)  # current_request_ids(), log records
    span = tracing.model_span(msg.traceparents, msg.request_ids) if msg.traceparents else None
    started = time.perf_counter_ns()
    try:
        outputs = predict(inputs)
    except BaseException as exc:  # whatever user code raises fails the batch, not the worker
        if span is not None:
            span.set_attribute("error.type", type(exc).__name__)
        # The log keeps what the exception says; the frontend decides, per app, whether
        # a client sees more of it than its type (the text may hold paths or data).
        logger.error("model raised on batch %d of %d inputs", msg.batch_id, n, exc_info=exc)
        return _error(msg, ErrorKind.MODEL_RAISED, f"{type(exc).__name__}: {exc}", exc)
    finally:
        request_ids.reset(token)
        if span is not None:
            span.end()
    model_micros = (time.perf_counter_ns() - started) // 1000
    problem = _check_outputs(outputs, n)
    if problem is not None:
        return _error(msg, ErrorKind.BAD_OUTPUT, problem)
    try:
        lengths, data = protocol.pack_outputs(outputs)
    except TypeError:
        return _error(msg, ErrorKind.BAD_OUTPUT, _unserialisable(outputs))
    return Result(msg.batch_id, lengths, data, model_micros=model_micros)


def _check_outputs(outputs: Any, n: int) -> str | None:
    if isinstance(outputs, np.ndarray) and outputs.ndim == 0:
        return "model returned a 0-d numpy array; return one output per input"
    if not isinstance(outputs, list | tuple | np.ndarray):
        return (
            f"model returned a {type(outputs).__name__}; return a list, tuple or numpy "
            f"array with one output per input"
        )
    if len(outputs) != n:
        return f"model returned {len(outputs)} outputs for a batch of {n}"
    return None


def _unserialisable(outputs: Sequence[Any]) -> str:
    for index, output in enumerate(outputs):
        try:
            protocol.dump_output(output)
        except TypeError as exc:
            return f"output {index} is not JSON-serialisable ({type(output).__name__}): {exc}"
    return "outputs are not JSON-serialisable"  # pragma: no cover - pack_outputs agreed


def _error(msg: Predict, kind: ErrorKind, message: str, exc: BaseException | None = None) -> Error:
    if len(message) > MAX_ERROR_MESSAGE:
        message = message[: MAX_ERROR_MESSAGE - 3] + "..."
    return Error(msg.batch_id, kind, message, "" if exc is None else type(exc).__name__)


class BatchRunner:
    """Runs one batch at a time on the calling thread: the watchdog covering the model,
    MemoryError noted in ``fatal``, the batch recorded in the metrics.

    The serving loop calls ``run`` on the thread that owns the frontend sockets, sends
    the answer itself, then calls ``record`` (so that metrics never delay an answer).
    """

    def __init__(
        self,
        predict: PredictFunction,
        input_type: InputType,
        metrics: ContainerMetrics,
        *,
        watchdog: bool = True,
    ) -> None:
        self._predict = predict
        self._input_type = input_type
        self._metrics = metrics
        # Ends the process past a batch's timeout (``watchdog``); None: never.
        self.watchdog = BatchWatchdog() if watchdog else None
        # Set when a batch raised MemoryError: the serving loop then leaves and exits
        # with ``EXIT_MEMORY_LIMIT`` once the batch's ERROR is sent.
        self.fatal = ""

    def run(self, msg: Predict) -> Result | Error:
        """The answer to ``msg``; never raises (a bug here fails the batch, not the loop)."""
        if self.watchdog is not None and msg.timeout_ms > 0:
            self.watchdog.cover(msg.timeout_ms, time.monotonic())
        try:
            outcome = run_batch(self._predict, self._input_type, msg)
        except Exception as exc:
            logger.exception("failed to run batch %d", msg.batch_id)
            outcome = _error(msg, ErrorKind.BAD_OUTPUT, f"{type(exc).__name__}: {exc}", exc)
        if is_memory_error(outcome):
            self.fatal = f"memory limit: the model raised MemoryError on batch {msg.batch_id}"
        return outcome

    def record(self, msg: Predict, seconds: float, outcome: Result | Error) -> None:
        try:
            self._metrics.batch_done(msg.size, seconds, outcome)
        except Exception:  # metrics are not worth a failed loop
            logger.exception("failed to record metrics of batch %d", msg.batch_id)
