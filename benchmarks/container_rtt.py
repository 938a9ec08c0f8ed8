"""Round trips through one real model container at batch size 1, one at a time.

Not a test: it measures the container's share of a lone query's latency. A fake
frontend (``tests/fake_frontend.FakeFrontend``: a CURVE ROUTER, as the real one) sends
one PREDICT of one row of 10 doubles (with a batch timeout, ``to_ms``, as the frontend
sends), waits for its RESULT, and sends the next; it
reports the median and p90 round trip, the container's CPU time per round trip
(``/proc/PID/stat``) and its context switches per round trip (every thread's, from
``/proc/PID/task/*/status``: a hand-off between threads shows up as switches).

``--transports tcp,unix`` runs each variant against a frontend of each transport:
``tcp`` the ZeroMQ CURVE ROUTER above, ``unix`` ``tests/unix_frontend.UnixFrontend``
(the direct unix-socket transport, ``--frontend unix://PATH``). The two fake frontends
cost differently on the driver's side, so compare the container's CPU per round trip
first, the round trip second. ``NAME=DIR@tcp`` limits a variant to some transports (one
that predates ``unix://``).

Each ``--variant NAME=DIR`` runs ``python -m model_container`` with ``DIR`` first on
``PYTHONPATH`` (e.g. a ``git archive`` of an older ``model_container``), so that
variants are compared in the same run; their rounds are interleaved, because this
machine's speed drifts. Run it under the shared lock::

    flock /work/wt/notes/bench.lock .venv/bin/python -m benchmarks.container_rtt \\
        --variant before=/tmp/before --variant after=. --rounds 5 --count 2000
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from credentials import make_cluster_secrets  # type: ignore[import-not-found]  # noqa: E402
from fake_frontend import FakeFrontend  # type: ignore[import-not-found]  # noqa: E402
from unix_frontend import UnixFrontend  # type: ignore[import-not-found]  # noqa: E402

from model_container import InputType, write_closure_bundle  # noqa: E402
from model_container.bundle import bundle_digest  # noqa: E402
from model_container.protocol import Predict, Result, pack_arrays  # noqa: E402


def _one_row() -> tuple[bytes, bytes]:
    import numpy as np

    dtype = np.dtype("<f8")
    lengths, data = pack_arrays([np.arange(10, dtype=dtype) / 10], dtype)
    return lengths, data.tobytes()


ONE_ROW = _one_row()


def noop_model() -> Any:
    def model(xs: Any) -> Any:
        return [0] * len(xs)

    return model


def sklearn_model() -> Any:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 10))
    clf = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))

    def model(xs: Any) -> Any:
        return clf.predict(np.asarray(xs)).tolist()

    return model


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def switches(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total


class Contender:
    def __init__(
        self,
        name: str,
        root: Path,
        bundle: Path,
        tmp: Path,
        secrets: Any,
        to_ms: int,
        transport: str = "tcp",
    ) -> None:
        self.name = name
        self.to_ms = to_ms
        self.frontend: Any = (
            UnixFrontend() if transport == "unix" else FakeFrontend(secrets=secrets)
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(REPO)])}
        argv = [
            sys.executable,
            "-m",
            "model_container",
            "--bundle",
            str(bundle),
            "--bundle-sha256",
            bundle_digest(bundle),
            "--frontend",
            self.frontend.address,
            "--name",
            "m",
            "--version",
            "1",
            "--input-type",
            "doubles",
            "--replica-id",
            name.replace("/", "-"),
            "--secrets-dir",
            str(secrets.replica_dir),
        ]
        self.log = (tmp / f"{name.replace('/', '-')}.log").open("wb")
        # cwd: not this checkout, which "python -m" would put first on sys.path.
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=self.log, env=env, cwd=tmp)
        self.log_path = tmp / f"{name.replace('/', '-')}.log"
        try:
            self.identity, _ = self.frontend.register(heartbeat_ms=60_000)  # idle ones are not read
        except AssertionError:
            print(self.log_path.read_text()[-3000:], file=sys.stderr)
            raise
        self.rtts: list[float] = []
        self.cpu = 0.0
        self.switches = 0
        self.count = 0
        self.batch_id = 0

    def run(self, count: int, record: bool = True) -> None:
        fe, identity = self.frontend, self.identity
        cpu0, sw0 = cpu_s(self.proc.pid), switches(self.proc.pid)
        rtts = []
        for _ in range(count):
            self.batch_id += 1
            t0 = time.perf_counter()
            fe.send(identity, Predict(self.batch_id, InputType.DOUBLES, *ONE_ROW, self.to_ms))
            try:
                _, result = fe.expect(Result)
            except AssertionError:
                print(self.log_path.read_text()[-3000:], file=sys.stderr)
                raise
            rtts.append(time.perf_counter() - t0)
            assert result.batch_id == self.batch_id
        if record:
            self.rtts += rtts
            self.cpu += cpu_s(self.proc.pid) - cpu0
            self.switches += switches(self.proc.pid) - sw0
            self.count += count

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.frontend.close()
        self.log.close()

    def report(self) -> str:
        rtts = sorted(self.rtts)
        p50 = statistics.median(rtts) * 1e6
        p90 = rtts[int(len(rtts) * 0.9)] * 1e6
        cpu = self.cpu / self.count * 1e6
        sw = self.switches / self.count
        return (
            f"{self.name:24s} n={self.count:6d}  p50 {p50:7.1f} us  p90 {p90:7.1f} us  "
            f"container CPU {cpu:6.1f} us/rt  switches {sw:5.2f}/rt  "
            f"threads {len(list(Path(f'/proc/{self.proc.pid}/task').iterdir()))}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", required=True, help="NAME=DIR[@TRANSPORTS]")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=1000, help="round trips per round")
    parser.add_argument("--models", default="noop,sklearn")
    parser.add_argument("--transports", default="tcp", help="tcp, unix or tcp,unix")
    parser.add_argument(
        "--to-ms", type=int, default=1000, help="PREDICT's batch timeout, as frontends send"
    )
    a = parser.parse_args()
    makers = {"noop": noop_model, "sklearn": sklearn_model}
    with tempfile.TemporaryDirectory(prefix="container-rtt-") as tmp_name:
        tmp = Path(tmp_name)
        secrets = make_cluster_secrets(tmp / "cluster")
        bundles = {}
        for model in a.models.split(","):
            bundles[model] = tmp / f"bundle-{model}"
            write_closure_bundle(bundles[model], makers[model](), InputType.DOUBLES, ["numpy"])
        contenders: list[Contender] = []
        try:
            for spec in a.variant:
                name, root = spec.split("=", 1)
                root, _, only = root.partition("@")
                for model, bundle in bundles.items():
                    for transport in (only or a.transports).split(","):
                        label = f"{name}/{model}/{transport}"
                        root_dir = Path(root).resolve()
                        contenders.append(
                            Contender(label, root_dir, bundle, tmp, secrets, a.to_ms, transport)
                        )
            for c in contenders:
                c.run(200, record=False)  # warm up
            for _ in range(a.rounds):
                for c in contenders:
                    c.run(a.count)
            for c in contenders:
                print(c.report())
        finally:
            for c in contenders:
                c.close()


if __name__ == "__main__":
    main()
