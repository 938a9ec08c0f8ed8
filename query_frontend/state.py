"""What the request handlers share: built by the app's lifespan, one per process."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from query_frontend.cache import PredictionCache
from query_frontend.config import Config
from query_frontend.dispatch import Dispatcher
from query_frontend.learned import PolicyStates
from query_frontend.metrics import Metrics
from query_frontend.routing import RoutingTable


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
