"""What a user sees of one request after the fact: its id, where its time went, a line
in the access log, and (with ``schooner[otel]``) its spans.

- ``requests``: ``X-Request-Id`` taken from the client or made up, and the per-request
  record (``RequestTrace``) the handlers and the dispatcher fill in as a request goes.
- ``timing``: the ``Server-Timing`` header from what the dispatcher recorded.
- ``access_log``: one JSON line per predict/update request, written off the event loop.
- ``tracing``: OpenTelemetry spans, imported only when tracing is configured.

Everything here is cheap on the hot path: the timestamps are those the dispatcher takes
anyway, and what is off costs one attribute test.
"""
