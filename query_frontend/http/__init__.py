"""The query frontend's HTTP side: the requests applications send and what they get back.

``asgi``       the little of a web framework the hot path needs: reading a body, sending
               a reply, a request's deadline, the 413/503 refusals
``predict``    ``POST /{app}/predict``, the hot path, as a bare ASGI handler
``update``     ``POST /{app}/update``: feedback for the app's selection policy
``v2/``        the Open Inference Protocol (KServe V2) REST routes, inference being
               predict in a second dialect (``predict.Dialect``)
``inputs``     request bodies parsed and checked into the items a batch carries
``endpoints``  the Starlette routes: ``/healthz``, ``/status``, ``/metrics``,
               ``/openapi.json``
``openapi``    the OpenAPI 3.1 document of the query API, built once at import
``auth``       per-app API keys on predict and update; the admin token on status, metrics
``metrics_port``  ``/metrics`` alone, without authentication, on ``--metrics-port``
``state``      ``FrontendState``: what the handlers share, one per process

The top layer below the app: it may import every other part of the frontend
(``queries``, ``config``, ``cancellation``, ``caching``, ``batching``, ``rpc``,
``routing``, ``selection``, ``metrics``), plus ``management_frontend.state`` and
``model_container.protocol``; none of them imports it. Only ``query_frontend.app``
imports it, to serve these handlers.
"""

from query_frontend.http.endpoints import routes
from query_frontend.http.predict import handle_predict
from query_frontend.http.state import FrontendState
from query_frontend.http.update import handle_update

__all__ = ["FrontendState", "handle_predict", "handle_update", "routes"]
