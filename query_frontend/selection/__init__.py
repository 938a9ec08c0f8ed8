"""Selection policies: which model version(s) answer an app's queries, and what
feedback teaches them (split, exp3, exp4; ``single`` is served without coming here).

``choose``         drawing the arm(s) for each query: split shares, exp3's bandit, exp4's
                   every arm, sticky per user id
``ask``            sending a request's inputs to the arms chosen (through the
                   ``Evaluator``) and making each input's ``Answer``
``ensemble``       combining several models' answers into one (exp4): weighted mean or vote
``feedback``       ``/update`` feedback turned into losses and what each arm learns
``learned``        ``PolicyStates``: the frontend's copy of the learned state, which
                   queries read without waiting for Redis
``learned_store``  that state in Redis: reading a record, recording feedback (Lua)

Imports ``routing`` (the arms of a route), ``batching`` (the ``Evaluator`` that asks a
model version, its overload errors), ``cancellation`` (the refresh loop retries on Redis
errors), ``query_frontend.queries`` and
``management_frontend.state`` (the policy parameters and the learned-state math, keys
and records). It is handed what it needs explicitly, never the HTTP layer's
``FrontendState``. Imported by ``metrics`` (who answered), ``http`` (predict and update)
and ``app`` (which builds ``PolicyStates`` and keeps them following the change feed).
"""

from query_frontend.selection.ask import Answer, ask, learned_view
from query_frontend.selection.learned import PolicyStates

__all__ = ["Answer", "PolicyStates", "ask", "learned_view"]
