"""The management frontend's admin API against a real redis-server, over real HTTP
sockets, one file per resource.

Most tests serve ``create_app`` with uvicorn inside the test's event loop (the ``api``
fixture in ``conftest.py``; ``serve``, ``ok``, ``error`` and the APP/MODEL bodies in
``helpers.py``); the entry point tests run ``python -m management_frontend`` as a
subprocess. Every test starts from an emptied Redis (``redis_url``) and registers what
it needs. Nothing sleeps for a fixed time: every wait polls with a deadline.

    test_happy_path.py    one app and one model through every verb
    test_apps.py          apps: deletion, concurrent registration, bad bodies (400)
    test_models.py        models and versions: deletion, batching settings, bad bodies (400)
    test_links.py         links, concurrent links, links pinned to a version
    test_cache.py         an app's prediction cache switch
    test_policies.py      selection policies and what they learned
    test_change_feed.py   one feed entry per change; snapshot plus feed
    test_replicas.py      the replicas the query frontends recorded
    test_errors.py        400/404/405/409/413 tables that span resources
    test_startup.py       schema version, key prefixes, Redis restarts, entry point, API

(A package, so that its module names - test_cache, conftest - do not collide with
tests/unit's under pytest's default import mode.)
"""
