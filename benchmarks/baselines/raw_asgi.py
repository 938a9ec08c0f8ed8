"""The HTTP ceiling of this machine: a bare ASGI app that reads the body and answers a constant.

python -m benchmarks.baselines.raw_asgi --port 8000
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from benchmarks.baselines._serve import serve

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]

BODY = b'{"query_id":0,"output":0,"default":false}'
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))],
}
END = {"type": "http.response.body", "body": BODY}


async def app(
    scope: Scope,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # read the request body, as a real endpoint must
        message = await receive()
        more = message.get("more_body", False)
    await send(START)
    await send(END)


if __name__ == "__main__":
    serve(app, __doc__ or "")
