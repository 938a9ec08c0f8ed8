"""Starlette with the sklearn model in-process: one ``predict`` per request, no batching.

The endpoint is ``async`` and calls ``predict`` inline (no thread-pool hop), the fastest
way to serve a sub-millisecond model from Starlette.

    python -m benchmarks.baselines.starlette_sklearn --port 8000
"""

from __future__ import annotations

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from benchmarks.baselines._serve import serve
from benchmarks.baselines.model import train_model

MODEL = train_model()


async def predict(request: Request) -> Response:
    try:
        x = np.asarray([orjson.loads(await request.body())["input"]], dtype=np.float64)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        return Response(orjson.dumps({"error": str(exc)}), 400, media_type="application/json")
    output = MODEL.predict(x).tolist()[0]
    body = orjson.dumps({"query_id": 0, "output": output, "default": False})
    return Response(body, media_type="application/json")


app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])

if __name__ == "__main__":
    serve(app, __doc__ or "")
