"""The model worker: runs the user's function on one batch at a time, off the I/O thread.

The serving loop owns the frontend socket and must keep heartbeating while a long batch
computes, so the model runs here, in a thread of its own. Batches come in through a
queue; each answer (an encoded RESULT or ERROR) goes back through an inproc PAIR socket,
which wakes the serving loop's poll the moment it is ready.

``run_batch`` is the whole contract between a batch and the model: decode the inputs,
call the model, check that it returned one JSON-serialisable output per input. Whatever
the model does, it yields a RESULT or an ERROR; it never raises. An exception's
traceback goes to this replica's log; the ERROR carries its type and message, and the
frontend shows a client the message only if the app allows it.
"""

from __future__ import annotations

import faulthandler
import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import zmq

from model_container import protocol
from model_container.bundle import PredictFunction
from model_container.metrics import ContainerMetrics
from model_container.protocol import Error, ErrorKind, InputType, Predict, Result

logger = logging.getLogger(__name__)

# An ERROR message is for people; keep a pathological exception text from bloating it.
MAX_ERROR_MESSAGE = 2000


def watchdog_s(timeout_ms: int) -> float:
    """When the watchdog of a batch with this timeout fires: well after the frontend
    should have sent RESTART (it counts from sending, this from starting the batch), so
    that it only acts when the I/O thread cannot (the model holds the GIL)."""
    return 1.5 * timeout_ms / 1000 + 1.0


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
    started = time.perf_counter_ns()
    try:
        outputs = predict(inputs)
    except BaseException as exc:  # whatever user code raises fails the batch, not the worker
        # The log keeps what the exception says; the frontend decides, per app, whether
        # a client sees more of it than its type (the text may hold paths or data).
        logger.error("model raised on batch %d of %d inputs", msg.batch_id, n, exc_info=exc)
        return _error(msg, ErrorKind.MODEL_RAISED, f"{type(exc).__name__}: {exc}", exc)
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


class ModelWorker:
    """A thread that runs batches one at a time and sends each answer to ``address``.

    The serving loop binds a PAIR socket at ``address`` before ``start()``, hands one
    batch at a time to ``submit`` and receives the encoded answers on that socket.
    """

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        address: str,
        predict: PredictFunction,
        input_type: InputType,
        metrics: ContainerMetrics,
        *,
        watchdog: bool = True,
    ) -> None:
        self._context = context
        self._address = address
        self._predict = predict
        self._input_type = input_type
        self._metrics = metrics
        self._watchdog = watchdog
        # Set (before its answer is sent) when a batch raised MemoryError: the serving
        # loop then leaves and exits with ``EXIT_MEMORY_LIMIT``.
        self.fatal = ""
        self._jobs: queue.SimpleQueue[Predict | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="model-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, msg: Predict) -> None:
        self._jobs.put(msg)

    def stop(self, timeout_s: float) -> bool:
        """Ask the thread to finish and wait; False if a batch is still computing."""
        self._jobs.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        sock = self._context.socket(zmq.PAIR)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(self._address)
            while (msg := self._jobs.get()) is not None:
                started = time.perf_counter()
                armed = self._arm_watchdog(msg)
                try:
                    outcome = run_batch(self._predict, self._input_type, msg)
                except Exception as exc:  # a bug here must not leave the batch unanswered
                    logger.exception("failed to run batch %d", msg.batch_id)
                    outcome = _error(msg, ErrorKind.BAD_OUTPUT, f"{type(exc).__name__}: {exc}", exc)
                finally:
                    if armed:
                        faulthandler.cancel_dump_traceback_later()
                if is_memory_error(outcome):
                    self.fatal = (
                        f"memory limit: the model raised MemoryError on batch {msg.batch_id}"
                    )
                try:
                    # Never blocks in practice (one answer in flight at a time); NOBLOCK
                    # so that a worker outliving a stopped serving loop cannot hang.
                    sock.send_multipart(protocol.encode(outcome), flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    logger.debug("serving loop gone; dropping the answer to %d", msg.batch_id)
                # After the send: never delays an answer.
                self._record(msg, time.perf_counter() - started, outcome)
        finally:
            sock.close()

    def _arm_watchdog(self, msg: Predict) -> bool:
        """Past its timeout (and some), a batch ends the process, even if the model holds
        the GIL: faulthandler's own thread writes every thread's traceback to stderr and
        exits with status 1, and the replica's manager starts it afresh."""
        if not self._watchdog or msg.timeout_ms <= 0:
            return False
        try:
            faulthandler.dump_traceback_later(watchdog_s(msg.timeout_ms), exit=True)
        except (RuntimeError, ValueError, OSError) as exc:  # no usable stderr
            logger.warning("cannot arm the batch watchdog: %s", exc)
            return False
        return True

    def _record(self, msg: Predict, seconds: float, outcome: Result | Error) -> None:
        try:
            self._metrics.batch_done(msg.size, seconds, outcome)
        except Exception:  # metrics are not worth a dead worker
            logger.exception("failed to record metrics of batch %d", msg.batch_id)
