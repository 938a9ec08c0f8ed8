"""Command line shared by the in-process baselines: ``--host``, ``--port``, run uvicorn."""

from __future__ import annotations

import argparse
from typing import Any


def serve(app: Any, description: str) -> None:
    """Run ``app`` under uvicorn as the issue fixes it: uvloop, httptools, 1 process, no log."""
    import uvicorn

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        workers=1,
        access_log=False,
        log_level="warning",
        lifespan="off",
    )
