"""The Open Inference Protocol (KServe V2) over REST: an app is a V2 model.

``handlers``  the ``/v2`` routes: health, server and model metadata, model readiness,
              inference (through ``http.predict``, as a second dialect of predict)
``tensors``   an inference request's input tensor (JSON or binary) read into queries
``encode``    the queries' answers written as one output tensor (JSON or binary)

docs/wire-protocol.md, "Open Inference Protocol", is the user's description.
"""

from query_frontend.http.v2.handlers import serve_v2, v2_post

__all__ = ["serve_v2", "v2_post"]
