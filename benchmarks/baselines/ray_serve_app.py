"""Ray Serve with ``@serve.batch`` on the benchmark's sklearn model, bound to 127.0.0.1.

Runs in its own venv (Ray pins its own dependencies), from the repository root:

    python -m venv benchmarks/.venv-ray
    benchmarks/.venv-ray/bin/pip install 'ray[serve]' scikit-learn orjson
    PYTHONPATH=. benchmarks/.venv-ray/bin/python -m benchmarks.baselines.ray_serve_app --port 8000

Serves ``POST /predict`` until SIGTERM or SIGINT, then shuts Serve and Ray down.
"""

# Ray is not installed where mypy runs: its decorators are untyped there.
# mypy: disable-error-code="untyped-decorator"

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from typing import Any

import numpy as np
import ray
from ray import serve
from starlette.requests import Request

from benchmarks.baselines.model import train_model

MAX_BATCH_SIZE = 64
BATCH_WAIT_S = 0.002


@serve.deployment(num_replicas=1, max_ongoing_requests=256)
class Classifier:
    def __init__(self) -> None:
        self.model = train_model()

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def predict(self, xs: list[list[float]]) -> list[Any]:
        return list(self.model.predict(np.asarray(xs, dtype=np.float64)).tolist())

    async def __call__(self, request: Request) -> dict[str, Any]:
        x = json.loads(await request.body())["input"]
        return {"query_id": 0, "output": await self.predict(x), "default": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    ray.init(
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        num_cpus=args.num_cpus,
        log_to_driver=False,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        deployment: Any = Classifier  # a Ray Deployment once decorated
        serve.run(deployment.bind(), name="bench", route_prefix="/predict")
        print(f"READY http://127.0.0.1:{args.port}/predict", flush=True)
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
