"""``summer``: a real ``python -m model_container`` process for the tests that point one
container at stand-in frontends (``fake_frontend``, ``unix_frontend``) by its
``--frontend`` value alone.

Its model sums each input; an input starting with -4 first sleeps its second element (a
long or hung batch). ``summer_containers`` writes the bundle, starts processes named
``summer`` version 1, replica ``summer-0``, heartbeating every 250 ms, with the cluster's
replica keys and none of the runner's ``SCHOONER_*`` settings; on leaving it kills what
still runs and prints each log.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from credentials import ClusterSecrets
from frontend_side import REPLY_S

from model_container import write_closure_bundle
from model_container.bundle import bundle_digest
from model_container.protocol import InputType

REPO = Path(__file__).resolve().parents[1]
StartContainer = Callable[[str], subprocess.Popen[bytes]]  # (the --frontend value)


def make_model() -> Callable[[Any], Any]:
    """Sums each input; an input starting with -4 first sleeps its second element."""

    def model(xs: Any) -> Any:
        import time as _time

        if len(xs) and len(xs[0]) > 1 and float(xs[0][0]) == -4:
            _time.sleep(float(xs[0][1]))
        return [float(np.sum(x)) for x in xs]

    return model


@contextlib.contextmanager
def summer_containers(
    tmp_path: Path, cluster: ClusterSecrets, *extra_args: str
) -> Iterator[StartContainer]:
    """A function that starts a container for a ``--frontend`` value, with ``extra_args``
    after the usual flags."""
    bundle = tmp_path / "bundle"
    write_closure_bundle(bundle, make_model(), InputType.DOUBLES, ["numpy"])
    started: list[tuple[subprocess.Popen[bytes], Any, Path]] = []

    def start(frontend: str) -> subprocess.Popen[bytes]:
        log_path = tmp_path / f"container-{len(started)}.log"
        log = log_path.open("wb")
        argv = [sys.executable, "-m", "model_container", "--bundle", str(bundle)]
        argv += ["--bundle-sha256", bundle_digest(bundle)]
        argv += ["--frontend", frontend, "--name", "summer", "--version", "1"]
        argv += ["--replica-id", "summer-0", "--heartbeat-ms", "250", "--log-level", "DEBUG"]
        argv += ["--secrets-dir", str(cluster.replica_dir), *extra_args]
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SCHOONER_")}
        env = {**inherited, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env, cwd=tmp_path)
        started.append((proc, log, log_path))
        return proc

    try:
        yield start
    finally:
        for proc, log, log_path in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=REPLY_S)
            log.close()
            print(f"--- {log_path.name} ---\n{log_path.read_text(errors='replace')}")
