"""Where each app's queries go: the routing table, kept current from Redis.

``table``  ``Arm``, ``Route`` and ``RoutingTable``: each app resolved to the model
           version(s) that serve it now (``build_route``), the tightest objective per
           model version (``tightest_slos``), and ``follow``, which keeps the table
           current from the change feed
``feed``   reading the configuration from Redis: a snapshot, then the change feed

Imports ``query_frontend.queries`` (a model key), ``cancellation`` (the follower retries
on Redis errors) and ``management_frontend.state`` (the
records, keys and policy parameters it reads). Imported by ``selection`` (which picks
among a route's arms), ``http`` (the routes a request looks up, ``/status``) and
``app`` (which starts the follower and listens to its snapshots).
"""

from query_frontend.routing.table import Arm, Route, RoutingTable, follow

__all__ = ["Arm", "Route", "RoutingTable", "follow"]
