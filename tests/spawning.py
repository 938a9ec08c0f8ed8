"""Starting Schooner's processes (``python -m ...``) for a test, and stopping them after.

``Spawner(logs)`` is called as ``spawn(name, *argv, env=None)``: it runs
``python *argv`` with Schooner's source importable, its output in ``logs/<name>.log`` and
the working directory ``logs``, in this process's environment minus every ``SCHOONER_*``
variable (plus ``env``), so that what a test's shell exports does not reach the cluster.
``stop()`` terminates every process it started, the last first, kills those that do not
exit, and prints the end of each log (pytest shows it for a failed test).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]
STOP_TIMEOUT_S = 15.0


class Spawner:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self._started: list[tuple[subprocess.Popen[bytes], IO[bytes], Path]] = []

    def __call__(
        self, name: str, *argv: str, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log_path = self.logs / f"{name}.log"
        log = log_path.open("wb")
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SCHOONER_")}
        full_env = {**inherited, "PYTHONPATH": str(REPO), **(env or {})}
        proc = subprocess.Popen(
            [sys.executable, *argv], stdout=log, stderr=log, env=full_env, cwd=self.logs
        )
        self._started.append((proc, log, log_path))
        return proc

    def stop(self) -> None:
        for proc, _, _ in reversed(self._started):
            if proc.poll() is None:
                proc.terminate()
        for proc, log, log_path in reversed(self._started):
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
            log.close()
            print(f"--- {log_path.name} ---\n{log_path.read_text(errors='replace')[-4000:]}")
