"""``schooner prometheus``: where Prometheus finds this cluster, and how to start it.

Local and Docker clusters keep a ``file_sd_configs`` targets file current
(``admin/container_managers/_scrape_targets.py``); this verb brings it up to date, says
where it is and where the admin token file is, and with ``--write-config`` puts the
shipped ``deploy/prometheus/prometheus.yml`` beside it, where its relative paths find
both. Docker keeps its credentials in volumes, so its token file is written only with
``--write-token``. On Kubernetes it points at the PodMonitor and the pod annotations.
"""

from __future__ import annotations

import argparse
import shutil
import site
import sys
from pathlib import Path

from admin.cli import _managers as managers
from admin.container_managers._scrape_targets import write_local_targets
from admin.container_managers.docker import DockerContainerManager
from admin.container_managers.local import LocalContainerManager
from admin.exceptions import ClusterNotRunningError, ContainerManagerError

_SOURCE_ROOT = Path(__file__).resolve().parents[2]


def shipped(kind: str, name: str) -> Path | None:
    """``deploy/<kind>/<name>`` of a checkout, else the copy installed with the package
    (``share/schooner/<kind>``)."""
    for base in (
        _SOURCE_ROOT / "deploy",
        Path(sys.prefix) / "share" / "schooner",
        Path(site.getuserbase()) / "share" / "schooner",
    ):
        if (base / kind / name).is_file():
            return base / kind / name
    return None


def cmd_prometheus(args: argparse.Namespace) -> int:
    with managers.manager(args) as cm:
        if isinstance(cm, LocalContainerManager):
            if not (cm.data_dir / "cluster.json").is_file():
                raise ClusterNotRunningError(
                    f"no cluster runs on data dir {cm.data_dir}: start it first (`schooner start`)"
                )
            targets = write_local_targets(cm.data_dir)
            token = cm.data_dir / "admin-token"
        elif isinstance(cm, DockerContainerManager):
            cm.connect()
            targets = cm.write_prometheus_targets()
            token = targets.parent.parent / "admin-token"
            if args.write_token:
                token = cm.write_prometheus_token()
        else:
            podmonitor = shipped("prometheus", "podmonitor.yaml")
            print("Kubernetes: query frontend and model pods carry prometheus.io/scrape, /port")
            print("and /path annotations; with the Prometheus Operator apply the PodMonitor:")
            print(f"  kubectl apply -f {podmonitor or 'deploy/prometheus/podmonitor.yaml'}")
            print(f"scrapes need the admin token: Secret schooner-{args.cluster}-credentials, ")
            print("key admin-token (docs/metrics.md)")
            return 0
        config = targets.parent / "prometheus.yml"
        if args.write_config:
            source = shipped("prometheus", "prometheus.yml")
            if source is None:
                raise ContainerManagerError(
                    "deploy/prometheus/prometheus.yml was not found: reinstall schooner, or "
                    "copy it from a Schooner checkout"
                )
            shutil.copyfile(source, config)
        print(f"targets file: {targets}")
        state = "" if token.is_file() else "  (not written: pass --write-token)"
        print(f"admin token:  {token}{state}")
        state = "" if config.is_file() else "  (not written: pass --write-config)"
        print(f"config:       {config}{state}")
        print(
            f"run:          prometheus --config.file {config} "
            f"--storage.tsdb.path {targets.parent / 'data'}"
        )
        dashboard = shipped("grafana", "schooner.json")
        print(f"grafana:      import {dashboard or 'deploy/grafana/schooner.json'}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--write-config",
        action="store_true",
        help="copy the shipped prometheus.yml beside the targets file (replacing one there)",
    )
    parser.add_argument(
        "--write-token",
        action="store_true",
        help="docker: write the admin token (0600) where that prometheus.yml reads it",
    )
