"""Ray Serve with ``@serve.batch`` on the benchmark's sklearn model, bound to 127.0.0.1.

Runs in its own venv (Ray pins its own dependencies), from the repository root:

    python -m venv benchmarks/.venv-ray
    benchmarks/.venv-ray/bin/pip install 'ray[serve]' scikit-learn orjson
    PYTHONPATH=. benchmarks/.venv-ray/bin/python -m benchmarks.baselines.ray_serve_app --port 8000

Serves ``POST /predict`` until SIGTERM or SIGINT, then shuts Serve and Ray down.

With ``RAY_SERVE_ENABLE_DIRECT_INGRESS=1`` in its environment (Ray 2.5x: read when Ray is
imported, so it must be set before this starts) every replica of an ingress deployment
serves HTTP itself, on a port the controller allocates (30000 and up), bound to the
address of ``http_options`` (127.0.0.1 here); clients then call the replica, not the
proxy. ``--url-file`` receives the URLs clients should call: the replicas' with direct
ingress, else the proxy's.
"""

# Ray is not installed where mypy runs: its decorators are untyped there.
# mypy: disable-error-code="untyped-decorator"

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from pathlib import Path
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


def direct_ingress() -> bool:
    return os.environ.get("RAY_SERVE_ENABLE_DIRECT_INGRESS") == "1"


def replica_urls(app: str, route: str, timeout: float = 120.0) -> list[str]:
    """The HTTP URLs of ``app``'s replicas under direct ingress, once the controller has
    allocated their ports."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import RequestProtocol

    client: Any = _get_global_client()
    deadline = time.monotonic() + timeout
    while True:
        groups = ray.get(client._controller.get_target_groups.remote(app, False))
        urls = [
            f"http://127.0.0.1:{target.port}{route}"
            for group in groups
            if group.protocol == RequestProtocol.HTTP
            for target in group.targets
        ]
        if urls or time.monotonic() > deadline:
            return urls
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--url-file", type=Path, help="write the URLs to call here")
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
        proxy = f"http://127.0.0.1:{args.port}/predict"
        urls = replica_urls("bench", "/predict") if direct_ingress() else [proxy]
        if args.url_file is not None:
            args.url_file.write_text("\n".join(urls) + "\n", encoding="utf-8")
        print(f"READY {' '.join(urls)}", flush=True)
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
