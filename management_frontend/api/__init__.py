"""The HTTP side of the management frontend: the admin API's routes, bodies and errors.

    routes.py   one thin handler per endpoint of ``docs/admin-api.md``
    activity_routes.py  ``/admin/overview`` and ``/admin/apps/{app}/activity``: the
                live numbers (``telemetry``) the dashboard and ``schooner top`` draw
    bodies.py   the request bodies as pydantic models, each field run through the
                contract's rules (``state.rules``) so a bad value gets our sentence
    auth.py     the admin token in front of every route but ``/healthz`` (401 otherwise)
    errors.py   every failure as ``{"error": code, "message": sentence}`` with its
                status, and the request-body size and nesting limits
    openapi.py  ``/openapi.json`` as the routes really answer: their errors, the name
                rules as JSON Schema, the bearerAuth scheme

It imports ``state``, ``errors``, ``storage`` and ``telemetry``;
``management_frontend.app`` serves it.
FastAPI and pydantic are imported here and nowhere below.
"""
