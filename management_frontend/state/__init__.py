"""The state contract: what every part of Schooner agrees the cluster's state is.

The management frontend writes apps, models, versions and links; query frontends write
the replicas they see and what selection policies learn, and read everything; the
admin client sends what the management API stores. They agree through this package,
and only through it:

    keys      the Redis key names under a prefix, the schema version, arm names
    records   App, ModelVersion, Model, Snapshot, ReplicaRecord and their encodings
    feed      the change feed's entries (ChangeKind, ChangeOp, Change)
    rules     the rules values obey: names, versions, arms, user ids, input types,
              SLOs, counts, batching settings, policy names
    policy    PolicyParams, PolicyState and the policy arithmetic
    nesting   how deeply a JSON request body nests, on its bytes: the limit both APIs
              enforce, and what they answer
    errors    InvalidValue, the one error raised here (a ValueError)

It is pure: no web framework and no Redis client is imported, and nothing here does
I/O. Redis access stays beside its users (``management_frontend.storage`` for the
control plane; ``query_frontend.routing``, ``query_frontend.selection``,
``query_frontend.rpc`` and the query frontend's startup check of the schema version for
the data plane), and each user translates
``InvalidValue`` at its own boundary. Why the contract lives here, and who writes which
key: ``docs/architecture.md`` and ``docs/redis-schema.md``. It may import
``model_container.protocol`` (for ``InputType``) and nothing else of Schooner.
"""

from __future__ import annotations

from management_frontend.state import rules
from management_frontend.state.errors import InvalidValue
from management_frontend.state.feed import Change, ChangeKind, ChangeOp
from management_frontend.state.keys import DEFAULT_PREFIX, SCHEMA_VERSION, Keys, arm_name, parse_arm
from management_frontend.state.policy import ArmFeedback, ArmState, PolicyParams, PolicyState
from management_frontend.state.records import App, Model, ModelVersion, ReplicaRecord, Snapshot

__all__ = [
    "DEFAULT_PREFIX",
    "SCHEMA_VERSION",
    "App",
    "ArmFeedback",
    "ArmState",
    "Change",
    "ChangeKind",
    "ChangeOp",
    "InvalidValue",
    "Keys",
    "Model",
    "ModelVersion",
    "PolicyParams",
    "PolicyState",
    "ReplicaRecord",
    "Snapshot",
    "arm_name",
    "parse_arm",
    "rules",
]
