"""The local cluster's replica reconciler.

``python -m admin.container_managers._reconciler DATA_DIR``.

Redis records how many replicas each model version should run; the admin client enacts
a count it records itself (``Connection.set_num_replicas``, a deploy). A count recorded
through the REST API by anything else -- the dashboard's *scale*, ``curl`` -- would sit
unenacted until the next notebook command. This program, which the local manager runs
under the cluster's supervisor (restarted if it dies, stopped first when the cluster
stops), closes that gap: about once a second it reads every model version's recorded
count from the management API (with the admin token, re-read every round so a rotation
needs nothing) and asks the manager (``LocalContainerManager.reconcile_replicas``) to
start or stop replicas of the versions whose count differs.

What it never does: touch a version Redis does not list, retry a replica the supervisor
marked failed (a count already met is left as is), or wait behind a command holding the
data dir (a deploy in progress): it tries again next round, and the command's own change
is read again under the lock, so it is never undone. A version it cannot start (recorded
without a bundle digest, its bundle missing) is logged once per reason.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Final

from admin._http import ManagementClient
from admin.container_managers.local import DesiredReplicas, LocalContainerManager
from admin.exceptions import SchoonerError

logger = logging.getLogger("schooner.reconciler")

#: Seconds between two reads of the recorded counts.
ROUND_S: Final = 1.0
#: Seconds a request to the management API may take.
API_TIMEOUT_S: Final = 5.0


def recorded_counts(api: ManagementClient) -> list[DesiredReplicas]:
    """Every model version Redis records, with its desired replica count; a version
    that cannot be started (no bundle digest) is listed only when it should run none."""
    wants = []
    for model in api.list_models():
        detail = api.get_model(str(model["name"]))
        for mv in detail.get("version_details", []):
            num = int(mv.get("num_replicas", 0))
            digest = str(mv.get("bundle_sha256", ""))
            if num > 0 and not digest:
                continue  # recorded by register_model: its replicas run elsewhere
            wants.append(
                DesiredReplicas(
                    name=str(mv["name"]),
                    version=str(mv["version"]),
                    input_type=str(mv["input_type"]),
                    bundle_sha256=digest,
                    num_replicas=num,
                    memory_limit=int(mv.get("memory_limit_bytes", 0)),
                )
            )
    return wants


class Reconciler:
    """One round at a time: read the counts, enact the differences, log what changed."""

    def __init__(self, cm: LocalContainerManager) -> None:
        self.cm = cm
        self._said: set[str] = set()

    def round(self) -> list[str]:
        with ManagementClient(
            self.cm.management_url,
            timeout=API_TIMEOUT_S,
            verify=self.cm.tls_verify(),
            token=self.cm.admin_token(),
            token_source="the cluster's admin token file",
        ) as api:
            changed = self.cm.reconcile_replicas(lambda: recorded_counts(api))
        for change in changed:
            logger.info("replicas of %s", change)
        self._said.clear()  # a round that went through: say the next failure again
        return changed

    def serve(self, stop: threading.Event) -> int:
        while not stop.is_set():
            try:
                self.round()
            except SchoonerError as exc:  # API down, lock held, a bundle missing ...
                self._once(str(exc))
            except Exception:  # a bug must not end the loop: the next round may work
                logger.exception("reconciling replica counts failed")
            stop.wait(ROUND_S)
        return 0

    def _once(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            logger.warning("%s (trying again every %g s)", message, ROUND_S)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m admin.container_managers._reconciler DATA_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s reconciler %(levelname)s %(message)s"
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    cm = LocalContainerManager(data_dir=Path(args[0]).absolute())
    while not stop.is_set():
        try:
            cm.connect()
            break
        except SchoonerError as exc:
            logger.warning("waiting for the cluster: %s", exc)
            stop.wait(ROUND_S)
    logger.info("enacting the replica counts recorded in %s", cm.management_url)
    return Reconciler(cm).serve(stop)


if __name__ == "__main__":
    sys.exit(main())
