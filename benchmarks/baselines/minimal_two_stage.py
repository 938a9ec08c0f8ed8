"""The floor of a two-stage pipeline: HTTP -> featuriser process -> classifier process.

    python -m benchmarks.baselines.minimal_two_stage --port 8000

The minimal pipeline (``minimal_pipeline``) with two stages: one uvicorn process (uvloop,
httptools) with one greedy asyncio batcher per stage (at most 64 queries, one batch in
flight each) and one ZeroMQ DEALER per stage, to two model processes answering on
blocking ROUTERs: the featuriser (texts as one frame each -> float64 rows) and the
classifier (float64 rows -> labels as float64). A query's row goes from the first
stage's answer to the second stage's queue as bytes. The models are those of the
Schooner contenders (``text_model``). No cache, SLO, selection, metrics or JSON between
the stages: what two stages cost the architecture with nothing on top.
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

from benchmarks.baselines.minimal_pipeline import MAX_BATCH, respond, serve
from benchmarks.baselines.text_model import NUM_TEXT_FEATURES

ROW_BYTES = 8 * NUM_TEXT_FEATURES
Queue = asyncio.Queue[tuple[bytes, asyncio.Future[bytes]]]


def model_process(endpoint: str, stage: str) -> None:
    """Answer batches on a blocking ROUTER. ``feat``: [peer, text, ...] -> [peer, rows];
    ``clf``: [peer, rows as float64] -> [peer, labels as float64]."""
    import numpy as np

    from benchmarks.baselines.text_model import make_featuriser, train_text_model

    featurise = make_featuriser()
    model = train_text_model() if stage == "clf" else None
    sock = zmq.Context().socket(zmq.ROUTER)
    sock.connect(endpoint)
    while True:
        peer, *frames = sock.recv_multipart()
        if model is None:
            rows = np.asarray(featurise([f.decode("utf-8") for f in frames]), dtype=np.float64)
            sock.send_multipart([peer, rows.tobytes()])
        else:
            x = np.frombuffer(frames[0], dtype=np.float64).reshape(-1, NUM_TEXT_FEATURES)
            sock.send_multipart([peer, model.predict(x).astype(np.float64).tobytes()])


async def _batches(queue: Queue) -> list[tuple[bytes, asyncio.Future[bytes]]]:
    batch = [await queue.get()]
    while len(batch) < MAX_BATCH and not queue.empty():
        batch.append(queue.get_nowait())
    return batch


class Frontend:
    """The ASGI app and its two batchers (one batch in flight per stage)."""

    def __init__(self, feat: zmq.asyncio.Socket, clf: zmq.asyncio.Socket) -> None:
        self.feat = feat
        self.clf = clf
        self.queues: tuple[Queue, Queue] | None = None
        self.batchers: list[asyncio.Task[None]] = []

    async def featurise(self, queue: Queue) -> None:
        while True:
            batch = await _batches(queue)
            await self.feat.send_multipart([text for text, _ in batch])
            rows = await self.feat.recv()
            for i, (_, future) in enumerate(batch):
                if not future.done():
                    future.set_result(rows[i * ROW_BYTES : (i + 1) * ROW_BYTES])

    async def classify(self, queue: Queue) -> None:
        while True:
            batch = await _batches(queue)
            await self.clf.send(b"".join(row for row, _ in batch))
            labels = await self.clf.recv()
            for i, (_, future) in enumerate(batch):
                if not future.done():
                    future.set_result(labels[i * 8 : (i + 1) * 8])

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        loop = asyncio.get_running_loop()
        if self.queues is None:  # the first request starts the batchers on uvicorn's loop
            self.queues = (asyncio.Queue(), asyncio.Queue())
            self.batchers = [
                loop.create_task(self.featurise(self.queues[0])),
                loop.create_task(self.classify(self.queues[1])),
            ]
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        try:
            text = orjson.loads(body)["input"]
            if not isinstance(text, str):
                raise TypeError("input must be a string")
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            await respond(send, 400, orjson.dumps({"error": str(exc)}))
            return
        row: asyncio.Future[bytes] = loop.create_future()
        self.queues[0].put_nowait((text.encode("utf-8"), row))
        label: asyncio.Future[bytes] = loop.create_future()
        self.queues[1].put_nowait((await row, label))
        [output] = array("d", await label)
        await respond(send, 200, orjson.dumps({"query_id": 0, "output": output, "default": False}))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stage", choices=("feat", "clf"), help=argparse.SUPPRESS)
    parser.add_argument("--model-process", metavar="ENDPOINT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model_process:
        model_process(args.model_process, args.stage)
        return

    ctx = zmq.asyncio.Context()
    argv = [sys.executable, "-m", __spec__.name if __spec__ else __file__, "--port", "0"]
    socks, children = [], []
    for stage in ("feat", "clf"):
        sock = ctx.socket(zmq.DEALER)
        port = sock.bind_to_random_port("tcp://127.0.0.1")
        socks.append(sock)
        endpoint = f"tcp://127.0.0.1:{port}"
        children.append(subprocess.Popen([*argv, "--stage", stage, "--model-process", endpoint]))
    try:
        serve(Frontend(*socks), args.host, args.port)
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(timeout=10)


if __name__ == "__main__":
    main()
