"""Key names of the Redis schema, and the two names that are built into keys.

Every key of a cluster sits under one prefix (``schooner`` by default), so several
clusters can share a Redis; ``docs/redis-schema.md`` lists them with their types and
says who writes each. Names hold no ``:`` (app and model names are DNS-1123 labels,
versions match ``[A-Za-z0-9_.-]``, epochs are hex), so every key is unambiguous, and
so is a link ``model:version``.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 2  # 2: a model version records bundle_sha256, not artifact
DEFAULT_PREFIX = "schooner"
# ``{p}:telemetry``: a query frontend appends one entry (field ``tick``, JSON) every
# ``TELEMETRY_TICK_S``; the stream keeps about ``TELEMETRY_MAXLEN`` entries (XADD MAXLEN ~).
TELEMETRY_TICK_S = 2.0
TELEMETRY_MAXLEN = 4000
TELEMETRY_FIELD = "tick"


def arm_name(model: str, version: str | None = None) -> str:
    """A link as stored: the model (it follows the current version) or ``model:version``."""
    return model if version is None else f"{model}:{version}"


def parse_arm(arm: str) -> tuple[str, str | None]:
    """``"m"`` -> ``("m", None)``; ``"m:2"`` -> ``("m", "2")`` (names hold no ':')."""
    model, sep, version = arm.partition(":")
    return model, (version if sep else None)


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix.

    ``{p}`` is the prefix::

        {p}:meta                              hash   schema_version
        {p}:apps                              set    app names
        {p}:app:{app}                         hash   an App record
        {p}:app:{app}:links                   set    the app's arms: "model" or "model:version"
        {p}:app:{app}:keys                    set    hex sha256 of each of the app's API keys
        {p}:app:{app}:policy:{epoch}          hash   learned selection-policy state
        {p}:app:{app}:policy:{epoch}:user:{uid}  hash  what one user's feedback added
        {p}:app:{app}:policy:{epoch}:seen:{id}   string  a feedback id already counted
        {p}:models                            set    model names
        {p}:model:{model}                     hash   name, input_type, current_version
        {p}:model:{model}:versions            zset   version -> registration time
        {p}:model:{model}:version:{version}   hash   a ModelVersion record
        {p}:replicas                          hash   "{replica}@{frontend}" -> ReplicaRecord
        {p}:supervision                       hash   process name -> its supervisor's state
        {p}:changes                           stream the change feed
        {p}:telemetry                         stream each query frontend's tick (JSON), every 2 s
    """

    prefix: str = DEFAULT_PREFIX

    @property
    def meta(self) -> str:
        return f"{self.prefix}:meta"

    @property
    def apps(self) -> str:
        return f"{self.prefix}:apps"

    def app(self, app: str) -> str:
        return f"{self.prefix}:app:{app}"

    def links(self, app: str) -> str:
        return f"{self.prefix}:app:{app}:links"

    def api_keys(self, app: str) -> str:
        """The app's query API keys, each as its hex sha256 (never the key itself)."""
        return f"{self.prefix}:app:{app}:keys"

    def policy_state(self, app: str, epoch: str, uid: str | None = None) -> str:
        """The app's learned policy state in ``epoch`` (the app's ``policy_epoch``), or
        with ``uid`` one user's part of it."""
        base = f"{self.prefix}:app:{app}:policy:{epoch}"
        return base if uid is None else f"{base}:user:{uid}"

    def feedback_seen(self, app: str, epoch: str, feedback_id: str) -> str:
        return f"{self.prefix}:app:{app}:policy:{epoch}:seen:{feedback_id}"

    def policy_pattern(self, app: str) -> str:
        """A SCAN pattern matching every learned-state key of ``app``, of any epoch."""
        return f"{self.prefix}:app:{app}:policy:*"

    def policy_epoch_of(self, app: str, key: str) -> str:
        """The epoch a key matched by ``policy_pattern`` belongs to."""
        return key[len(f"{self.prefix}:app:{app}:policy:") :].split(":", 1)[0]

    @property
    def models(self) -> str:
        return f"{self.prefix}:models"

    def model(self, model: str) -> str:
        return f"{self.prefix}:model:{model}"

    def versions(self, model: str) -> str:
        return f"{self.prefix}:model:{model}:versions"

    def version(self, model: str, version: str) -> str:
        return f"{self.prefix}:model:{model}:version:{version}"

    @property
    def replicas(self) -> str:
        return f"{self.prefix}:replicas"

    @property
    def supervision(self) -> str:
        return f"{self.prefix}:supervision"

    @property
    def changes(self) -> str:
        return f"{self.prefix}:changes"

    @property
    def telemetry(self) -> str:
        """Each query frontend's counters as deltas, one entry per tick (``TELEMETRY_*``)."""
        return f"{self.prefix}:telemetry"
