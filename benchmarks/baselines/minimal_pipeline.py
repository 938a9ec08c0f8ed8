"""The floor: the minimal pipeline of Schooner's architecture, HTTP -> ZeroMQ -> model process.

    python -m benchmarks.baselines.minimal_pipeline --port 8000 [--model sklearn|noop]

One uvicorn process (uvloop, httptools) whose asyncio batcher greedily takes whatever is
queued (at most 64 rows), sends it on one ZeroMQ DEALER as raw float64 bytes, and waits
for the answer (one batch in flight). The model process answers on a blocking ROUTER, on
its main thread. No cache, no SLO, no selection, no metrics, no authentication: what the
architecture costs with nothing else on top (issue 14).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from array import array
from typing import Any

import orjson
import zmq
import zmq.asyncio

from benchmarks.baselines.model import NUM_FEATURES, train_model

MAX_BATCH = 64


async def respond(send: Any, status: int, body: bytes) -> None:
    """With a Content-Length, as Schooner answers (else uvicorn sends it chunked)."""
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def model_process(endpoint: str, kind: str) -> None:
    """Answer batches on a blocking ROUTER: [peer, rows as float64] -> [peer, labels as float64]."""
    import numpy as np

    model = train_model() if kind == "sklearn" else None
    sock = zmq.Context().socket(zmq.ROUTER)
    sock.connect(endpoint)
    while True:
        peer, payload = sock.recv_multipart(copy=False)
        x = np.frombuffer(payload.buffer, dtype=np.float64).reshape(-1, NUM_FEATURES)
        y = model.predict(x) if model is not None else np.zeros(len(x))
        sock.send_multipart([peer, y.astype(np.float64).tobytes()], copy=False)


class Frontend:
    """The ASGI app and its batcher: one DEALER, one batch in flight."""

    def __init__(self, sock: zmq.asyncio.Socket) -> None:
        self.sock = sock
        self.queue: asyncio.Queue[tuple[bytes, asyncio.Future[float]]] | None = None

    async def batcher(self, queue: asyncio.Queue[tuple[bytes, asyncio.Future[float]]]) -> None:
        while True:
            batch = [await queue.get()]
            while len(batch) < MAX_BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            await self.sock.send(b"".join(row for row, _ in batch))
            outputs = array("d", await self.sock.recv())
            for (_, future), y in zip(batch, outputs, strict=True):
                if not future.done():
                    future.set_result(y)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if self.queue is None:  # the first request starts the batcher on uvicorn's loop
            self.queue = asyncio.Queue()
            asyncio.get_running_loop().create_task(self.batcher(self.queue))
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        try:
            row = array("d", orjson.loads(body)["input"])
            if len(row) != NUM_FEATURES:
                raise ValueError(f"input has {len(row)} values, not {NUM_FEATURES}")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            await respond(send, 400, orjson.dumps({"error": str(exc)}))
            return
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((row.tobytes(), future))
        output = await future
        await respond(send, 200, orjson.dumps({"query_id": 0, "output": output, "default": False}))


def serve(app: Any, host: str, port: int) -> None:
    """Serve ``app`` the way every minimal floor does: uvicorn on uvloop and httptools,
    no access log, no lifespan (imported here: a model process needs no web server)."""
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="off",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", choices=("sklearn", "noop"), default="sklearn")
    parser.add_argument("--model-process", metavar="ENDPOINT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model_process:
        model_process(args.model_process, args.model)
        return

    sock = zmq.asyncio.Context().socket(zmq.DEALER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    argv = [sys.executable, "-m", __spec__.name if __spec__ else __file__, "--port", "0"]
    child = subprocess.Popen(
        [*argv, "--model", args.model, "--model-process", f"tcp://127.0.0.1:{port}"]
    )
    try:
        serve(Frontend(sock), args.host, args.port)
    finally:
        child.terminate()
        child.wait(timeout=10)


if __name__ == "__main__":
    main()
