"""What the request handlers share: built by the app's lifespan, one per process.

Only the HTTP handlers take this bag. What they call below them is handed the parts it
needs (``selection.ask`` gets the ``Evaluator``, the rng and the learned view), so that
nothing under the HTTP layer depends on everything the frontend holds.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import dataclass, field

from model_container.bearer import AdminTokenCheck
from query_frontend.batching.dispatch import Dispatcher
from query_frontend.batching.evaluate import Evaluator
from query_frontend.caching.cache import PredictionCache
from query_frontend.composition import Pipeline
from query_frontend.config import Config
from query_frontend.http.budget import BodyBudget, app_share
from query_frontend.http.inputs import from_output
from query_frontend.http.offload import BodyParser
from query_frontend.metrics import Metrics
from query_frontend.observability.access_log import AccessLog
from query_frontend.observability.requests import RequestIds
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
    # What runs the stages of a pipeline app (``composition``).
    pipeline: Pipeline = field(init=False)
    # The bytes of request bodies held now, and who parses them (off the loop if large).
    bodies: BodyBudget = field(init=False)
    parser: BodyParser = field(init=False)
    # The sha256 of the API key in each Authorization header seen lately (http/auth.py).
    key_digests: dict[bytes, str] = field(default_factory=dict)
    # Set on SIGTERM: /healthz answers 503 while the accepted requests are answered.
    draining: bool = False
    # Each request's X-Request-Id (the client's, or made here), and the access log
    # (None: no access log, as in tests that build the state by hand).
    request_ids: RequestIds = field(default_factory=RequestIds)
    access_log: AccessLog | None = None
    # The loop the frontend runs on (built in it): asyncio.get_running_loop() calls
    # getpid() each time, a system call per request on the hot path.
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)

    def __post_init__(self) -> None:
        self.evaluator = Evaluator(self.cache, self.dispatcher)
        self.pipeline = Pipeline(self.evaluator, self.rng, self.policies, from_output)
        config = self.config
        limit = config.max_body_bytes_in_flight
        self.bodies = BodyBudget(limit, app_share(limit, config.max_body_bytes))
        self.parser = BodyParser(config.parse_offload_bytes, config.parse_workers)
