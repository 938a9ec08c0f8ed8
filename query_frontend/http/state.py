"""What the request handlers share: built by the app's lifespan, one per process.

Only the HTTP handlers take this bag. What they call below them is handed the parts it
needs (``selection.ask`` gets the ``Evaluator``, the rng and the learned view), so that
nothing under the HTTP layer depends on everything the frontend holds.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from model_container.bearer import AdminTokenCheck
from query_frontend.batching.dispatch import Dispatcher
from query_frontend.batching.evaluate import Evaluator
from query_frontend.caching.cache import PredictionCache
from query_frontend.config import Config
from query_frontend.metrics import Metrics
from query_frontend.routing.table import RoutingTable
from query_frontend.selection.learned import PolicyStates
from query_frontend.supervision import ProcessStates


@dataclass
class FrontendState:
    config: Config
    routing: RoutingTable
    dispatcher: Dispatcher
    cache: PredictionCache
    metrics: Metrics
    policies: PolicyStates
    query_ids: itertools.count[int] = field(default_factory=itertools.count)
    rng: random.Random = field(default_factory=random.Random)
    # Who may read /status and /metrics: the cluster's admin token, by its hash on disk.
    admin_token: AdminTokenCheck = field(default_factory=lambda: AdminTokenCheck(None))
    # What the cluster's supervisor reports of each process (local clusters), if read.
    processes: ProcessStates | None = None
    # The cache and the dispatcher as one model version's evaluation reaches them.
    evaluator: Evaluator = field(init=False)

    def __post_init__(self) -> None:
        self.evaluator = Evaluator(self.cache, self.dispatcher)
