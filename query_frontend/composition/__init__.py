"""Pipelines: an app whose queries go through several stages, each a set of arms with
its own selection policy; stage i's outputs are stage i+1's inputs.

``run``       answering a request's inputs stage by stage, within the app's one deadline
``feedback``  ``/update`` on a pipeline: what each stage whose policy learns is taught

Each stage is routed as an app of its own (``routing.table.stage_route``), so batching,
the cache (keyed by the stage's own input) and replica choice work per stage as they do
per app, and selection (``selection.ask``) is reused as it is. Imports ``selection``,
``routing``, ``batching`` and ``queries``; turning an output into the next stage's input
is the HTTP layer's parsing, handed in as a function (``ToInput``). Imported by ``http``.
"""

from query_frontend.composition.run import Pipeline, StageOutputError, StageStats, ToInput

__all__ = ["Pipeline", "StageOutputError", "StageStats", "ToInput"]
