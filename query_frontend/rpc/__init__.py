"""The frontend's side of the wire protocol: where model replicas connect and register.

``server``    ``RpcServer``: the ZeroMQ ROUTER replicas connect to; decodes frames,
              sends heartbeats, hands registrations, results and errors to the dispatcher
``unix_listener``  the direct unix-socket transport beside the ROUTER: framed messages
              on the loop's unix server, for replicas on this host (``--rpc-unix``)
``liveness``  the rules for replicas that go silent or get stuck, as pure logic
``registry``  ``ReplicaRegistry``: writes the replicas connected here to Redis
              (``{p}:replicas``) for the control plane

Imports ``batching`` (the ``Dispatcher`` it feeds, the ``Replica`` it tracks),
``cancellation`` (the registry's loop retries on Redis errors),
``model_container.protocol`` (the framing, owned there) and
``management_frontend.state`` (the replica record and its key). Imported only by
``app``, which opens the server and wires the registry to the dispatcher's callbacks.
"""

from query_frontend.rpc.registry import ReplicaRegistry
from query_frontend.rpc.server import RpcServer

__all__ = ["ReplicaRegistry", "RpcServer"]
