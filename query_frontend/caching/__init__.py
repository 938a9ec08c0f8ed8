"""The prediction cache: answers by (model, version, input digest), bounded by bytes,
merging concurrent identical queries (``cache``).

Imports only ``query_frontend.queries`` (an item, an outcome, a model key). Imported
by ``batching`` (``Evaluator`` looks an input up before it queues it), ``metrics`` (the
cache's counters), ``http`` (``/status``) and ``app`` (which builds it and drops a
deleted version's entries).
"""

from query_frontend.caching.cache import PredictionCache

__all__ = ["PredictionCache"]
