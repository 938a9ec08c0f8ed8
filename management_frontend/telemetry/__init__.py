"""The live numbers of the dashboard and ``schooner top``, from the query frontends' ticks.

    ticks.py      pure: a tick's shape checked, each frontend's newest, the replicas
                  (merged with ``{p}:replicas`` and ``{p}:supervision``) and the recent
                  defaults they report
    aggregate.py  pure: ticks merged into interval buckets across frontends -- rates,
                  latency quantiles from merged histograms, default and error ratios,
                  batch sizes, queue depths, cache hit rate, policy weights
    reader.py     ``Telemetry``: the Redis reads (the stream, the store's apps and models,
                  ``{p}:replicas``, ``{p}:supervision``) behind ``/admin/overview`` and
                  ``/admin/apps/{app}/activity``

Imports ``state`` and ``storage``; ``api.activity_routes`` serves it.
"""

from management_frontend.telemetry.reader import (
    DEFAULT_WINDOW_S,
    MAX_WINDOW_S,
    MIN_WINDOW_S,
    Telemetry,
)

__all__ = ["DEFAULT_WINDOW_S", "MAX_WINDOW_S", "MIN_WINDOW_S", "Telemetry"]
