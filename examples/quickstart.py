"""Quickstart: serve a scikit-learn model with Schooner on this machine, no Docker needed.

    python examples/quickstart.py          # start, deploy, predict; leave it running
    python examples/quickstart.py --stop   # ... and stop everything at the end

Runs Redis, the management and query frontends and one model replica as local
processes, with their state and logs under ./schooner-data. Run it again to deploy the
model as the next version: apps, models and versions persist across restarts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import httpx
import numpy as np
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from admin import Connection, LocalContainerManager
from admin.deployers.python import deploy_python_closure

APP, MODEL = "quickstart", "logreg"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("schooner-data"))
    parser.add_argument("--stop", action="store_true", help="stop Schooner at the end")
    args = parser.parse_args()

    # 1. Start Schooner: Redis, management frontend (:1338), query frontend (:1337).
    conn = Connection(LocalContainerManager(data_dir=args.data_dir), progress=print)
    conn.stop_all()  # whatever an earlier run left running on this data dir
    conn.start()  # also brings back the replicas of models deployed by earlier runs

    # 2. An application: queries that miss the 100 ms SLO get the default output.
    if conn.get_app_info(APP) is None:
        conn.register_application(
            name=APP, input_type="doubles", default_output="-1.0", slo_micros=100_000
        )

    # 3. A model: logistic regression on a synthetic 10-feature dataset.
    x, y = make_classification(n_samples=500, n_features=10, random_state=0)
    model = LogisticRegression().fit(x, y)
    print(f"trained {type(model).__name__}: training accuracy {model.score(x, y):.2f}")

    # 4. Deploy it (the next version on every run) and route the app's queries to it.
    deployed = [m for m in conn.get_all_models() if m.startswith(f"{MODEL}:")]
    version = str(len(deployed) + 1)
    deploy_python_closure(
        conn,
        name=MODEL,
        version=version,
        input_type="doubles",
        func=model.predict,
        pkgs_to_install=["scikit-learn"],
    )
    if MODEL not in conn.get_linked_models(APP):
        conn.link_model_to_app(app_name=APP, model_name=MODEL)

    # 5. Real predictions over HTTP.
    url = f"http://{conn.get_query_addr()}/{APP}/predict"
    print(f"\npredictions from {url}:")
    with httpx.Client(timeout=5.0) as http:
        for features, label in zip(x[:5], y[:5], strict=True):
            answer = http.post(url, json={"input": features.tolist()}).json()
            print(f"  label {label} -> {answer}")
        batch = http.post(url, json={"input_batch": x[5:8].tolist()}).json()
        print(f"  a batch of 3 -> {batch}")

    example = json.dumps({"input": np.round(x[0], 3).tolist()})
    print(
        f"\ntry it yourself:\n  curl -X POST -H 'Content-Type: application/json' "
        f"-d '{example}' {url}"
    )
    shown = args.data_dir if args.data_dir.is_absolute() else f"./{args.data_dir}"
    if args.stop:
        conn.stop_all()
        print(f"\nSchooner stopped; its state is kept in {shown}")
    else:
        # Where the dashboard is and the file its login token is in; never the token.
        print(
            f"\ndashboard: http://{conn.get_management_addr()}/ui\n"
            f"  log in with the admin token in the file {shown}/admin-token"
        )
        print(f"\nSchooner is still running; stop it with:\n  schooner stop --data-dir {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
