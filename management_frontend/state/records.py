"""The records stored in Redis, and how each is encoded as a hash of strings.

Every hash value is a string; ``to_hash`` and ``from_hash`` are the only encoders and
decoders of a record, whoever reads or writes it. A field missing from a stored hash
(written by an older Schooner) reads as its default, so adding a field never needs a
schema bump. Replies may come as ``bytes`` or ``str`` (``text``, ``text_hash``): every
Schooner client opens Redis with ``decode_responses=True``, but a record still reads
right without it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from model_container.protocol import InputType


def text(value: bytes | str) -> str:
    """A reply item as ``str``."""
    return value.decode() if isinstance(value, bytes) else value


def text_hash(h: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    """A hash reply (HGETALL, a stream entry's fields) as ``str`` -> ``str``."""
    return {text(k): text(v) for k, v in h.items()}


def schema_version_of(value: bytes | str | None) -> int | None:
    """``{p}:meta`` ``schema_version`` as stored; ``None`` before any management frontend
    ran. A reader finding one above ``keys.SCHEMA_VERSION`` must refuse to run: it would
    misread the records."""
    return int(text(value)) if value is not None else None


def encode_flag(value: bool) -> str:
    """A boolean hash field: "1" or "0"."""
    return "1" if value else "0"


def decode_flag(value: str) -> bool:
    """Only "0" is off: an unexpected value reads as the default (on) instead of making
    the whole record unreadable to a query frontend."""
    return value != "0"


@dataclass(frozen=True)
class Stage:
    """One stage of an app's pipeline: its arms (as links are: ``"model"`` or
    ``"model:version"``, sorted) and the selection policy that picks among them, with its
    settings and the epoch naming what it learned (``{p}:app:{app}:policy:{epoch}``).

    An app's first stage is its links with its own ``policy`` fields; the stages after it
    are ``App.stages`` (``pipeline_of`` gives them all)."""

    arms: list[str]
    policy: str = "single"
    policy_params: dict[str, Any] = field(default_factory=dict)
    policy_epoch: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "arms": list(self.arms),
            "policy": self.policy,
            "policy_params": dict(self.policy_params),
            "policy_epoch": self.policy_epoch,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Stage:
        return cls(
            arms=sorted(str(a) for a in d.get("arms", [])),
            policy=str(d.get("policy", "single")),
            policy_params=dict(d.get("policy_params", {})),
            policy_epoch=str(d.get("policy_epoch", "")),
        )


@dataclass(frozen=True)
class App:
    """``{p}:app:{app}``: an application, its objective and its selection policy."""

    name: str
    input_type: InputType
    default_output: Any  # any JSON value, returned as given
    slo_micros: int
    policy: str = "single"
    created_at: float = 0.0
    # Whether the query frontend may answer from (and fill) its prediction cache.
    cache_enabled: bool = True
    # The policy's settings (split weights, learning rates, loss): see ``policy``.
    policy_params: dict[str, Any] = field(default_factory=dict)
    # Names the learned state in use; a new token forgets it (a reset is one write).
    policy_epoch: str = ""
    # Whether clients see what a model's exception says; off, they see its type and the
    # model (the message and traceback are in the replica's log).
    expose_model_errors: bool = False
    # The stages after the first, for an app that is a pipeline (empty: one stage, the
    # links). Stage i's outputs are stage i+1's inputs; one SLO covers them all.
    stages: tuple[Stage, ...] = ()

    def to_hash(self) -> dict[str, str]:
        return {
            "name": self.name,
            "input_type": str(self.input_type),
            "default_output": json.dumps(self.default_output),
            "slo_micros": str(self.slo_micros),
            "policy": self.policy,
            "policy_params": json.dumps(self.policy_params),
            "policy_epoch": self.policy_epoch,
            "created_at": repr(self.created_at),
            "cache_enabled": encode_flag(self.cache_enabled),
            "expose_model_errors": encode_flag(self.expose_model_errors),
            "stages": json.dumps([stage.to_json() for stage in self.stages]),
        }

    @classmethod
    def from_hash(cls, h: Mapping[str, str]) -> App:
        return cls(
            name=h["name"],
            input_type=InputType(h["input_type"]),
            default_output=json.loads(h["default_output"]),
            slo_micros=int(h["slo_micros"]),
            policy=h.get("policy", "single"),
            policy_params=dict(json.loads(h.get("policy_params", "{}"))),
            policy_epoch=h.get("policy_epoch", ""),
            created_at=float(h.get("created_at", "0")),
            # Written before the field existed: on, as every app was then.
            cache_enabled=decode_flag(h.get("cache_enabled", "1")),
            # Only "1" is on: a missing field (written before it existed) or an
            # unexpected value reads as off, the side that reveals nothing.
            expose_model_errors=h.get("expose_model_errors") == "1",
            # Written before pipelines existed: one stage.
            stages=read_stages(h.get("stages", "[]")),
        )

    def to_json(self) -> dict[str, Any]:
        """The record as the admin API shows it; ``stages`` (the later stages) is left
        out: responses show the whole ``pipeline`` (``pipeline_json``) instead."""
        out = asdict(self)
        out["input_type"] = str(self.input_type)
        del out["stages"]
        return out


def read_stages(raw: str) -> tuple[Stage, ...]:
    """An app hash's ``stages`` field; one that cannot be read (hand-edited, say) reads as
    one stage without arms, which answers nothing: the app's queries get its default and
    a query frontend keeps routing every other app (the record read whole, or not at
    all, would freeze them), and setting the pipeline again mends it."""
    try:
        listed = json.loads(raw)
        if not isinstance(listed, list):
            raise TypeError("not a list")
        for d in listed:
            arms = d["arms"] if isinstance(d, dict) else None
            if not isinstance(arms, list) or not all(isinstance(a, str) for a in arms):
                raise TypeError("a stage without a list of arms")
        return tuple(Stage.from_json(d) for d in listed)
    except (ValueError, TypeError, KeyError):
        return (Stage([]),)


def pipeline_of(app: App, links: Sequence[str]) -> list[Stage]:
    """Every stage of an app, in order: the first is its links under its own policy."""
    first = Stage(sorted(links), app.policy, dict(app.policy_params), app.policy_epoch)
    return [first, *app.stages]


def pipeline_json(app: App, links: Sequence[str]) -> list[dict[str, Any]]:
    """``pipeline_of`` as the admin API shows it (an app's ``"pipeline"``)."""
    return [stage.to_json() for stage in pipeline_of(app, links)]


@dataclass(frozen=True)
class ModelVersion:
    """``{p}:model:{model}:version:{version}``: one deployed version of a model."""

    name: str
    version: str
    input_type: InputType
    # The sha256 of the bundle its replicas run (``model_container.bundle.bundle_digest``);
    # the container manager finds the bundle by it, and a replica refuses any other.
    # "": no bundle (registered with replicas running elsewhere); no manager starts it.
    bundle_sha256: str = ""
    labels: list[str] = field(default_factory=list)
    batch_size: int = -1  # -1: adaptive
    # "aimd", "latency_model", "fixed"; "" is "fixed" when batch_size > 0, else "aimd".
    batch_mode: str = ""
    batch_wait_micros: int = 0  # how long a free replica may wait to fill a batch; 0: off
    # How long one batch may run on a replica before the replica counts as stuck and is
    # replaced; 0: derived by the query frontend from its apps' tightest objective.
    batch_timeout_micros: int = 0
    # The most memory one replica may use (bytes), enforced by the container manager;
    # 0: no limit.
    memory_limit_bytes: int = 0
    num_replicas: int = 0  # desired replicas, enacted by the container manager
    runtime: dict[str, str] = field(default_factory=dict)  # versions it was pickled under
    pkgs: list[str] = field(default_factory=list)
    registered_at: float = 0.0
    # What each of its outputs is, when declared at deploy: an input type's name (the
    # output is what a client could send a model of that input type as one input), or
    # "" (not declared). Checked when an app's pipeline feeds it to a later stage.
    output_type: str = ""

    def to_hash(self) -> dict[str, str]:
        return {
            "name": self.name,
            "version": self.version,
            "input_type": str(self.input_type),
            "output_type": self.output_type,
            "bundle_sha256": self.bundle_sha256,
            "labels": json.dumps(self.labels),
            "batch_size": str(self.batch_size),
            "batch_mode": self.batch_mode,
            "batch_wait_micros": str(self.batch_wait_micros),
            "batch_timeout_micros": str(self.batch_timeout_micros),
            "memory_limit_bytes": str(self.memory_limit_bytes),
            "num_replicas": str(self.num_replicas),
            "runtime": json.dumps(self.runtime),
            "pkgs": json.dumps(self.pkgs),
            "registered_at": repr(self.registered_at),
        }

    @classmethod
    def from_hash(cls, h: Mapping[str, str]) -> ModelVersion:
        return cls(
            name=h["name"],
            version=h["version"],
            input_type=InputType(h["input_type"]),
            # A schema-1 record has an `artifact` (a path or image) instead: ignored, never run.
            bundle_sha256=h.get("bundle_sha256", ""),
            labels=list(json.loads(h.get("labels", "[]"))),
            batch_size=int(h.get("batch_size", "-1")),
            batch_mode=h.get("batch_mode", ""),
            batch_wait_micros=int(h.get("batch_wait_micros", "0")),
            batch_timeout_micros=int(h.get("batch_timeout_micros", "0")),
            memory_limit_bytes=int(h.get("memory_limit_bytes", "0")),
            num_replicas=int(h.get("num_replicas", "0")),
            runtime=dict(json.loads(h.get("runtime", "{}"))),
            pkgs=list(json.loads(h.get("pkgs", "[]"))),
            registered_at=float(h.get("registered_at", "0")),
            output_type=h.get("output_type", ""),
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["input_type"] = str(self.input_type)
        return out


@dataclass(frozen=True)
class Model:
    """``{p}:model:{model}`` with its versions from ``{p}:model:{model}:versions``."""

    name: str
    input_type: InputType
    current_version: str | None
    versions: list[str]  # in registration order

    @classmethod
    def from_hash(cls, h: Mapping[str, str], versions: Sequence[bytes | str]) -> Model:
        """The model hash and its versions zset (ascending score: registration order)."""
        return cls(
            name=h["name"],
            input_type=InputType(h["input_type"]),
            current_version=h.get("current_version") or None,
            versions=[text(v) for v in versions],
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["input_type"] = str(self.input_type)
        return out


def apps_with_links(replies: Sequence[Any]) -> list[tuple[App, list[str]]]:
    """Apps and their sorted links from the replies to ``HGETALL {p}:app:{app}`` then
    ``SMEMBERS {p}:app:{app}:links``, app after app (one pipeline); an app deleted
    meanwhile (its hash empty) is left out."""
    return [
        (App.from_hash(text_hash(h)), sorted(text(m) for m in links))
        for h, links in zip(replies[::2], replies[1::2], strict=True)
        if h
    ]


def models_with_versions(replies: Sequence[Any]) -> list[Model]:
    """Models from the replies to ``HGETALL {p}:model:{model}`` then ``ZRANGE
    {p}:model:{model}:versions 0 -1``, model after model (one pipeline); a model deleted
    meanwhile is left out."""
    return [
        Model.from_hash(text_hash(h), versions)
        for h, versions in zip(replies[::2], replies[1::2], strict=True)
        if h
    ]


@dataclass
class Snapshot:
    """Every app, link, model and version: what a query frontend routes by."""

    apps: dict[str, App] = field(default_factory=dict)
    links: dict[str, list[str]] = field(default_factory=dict)  # app -> arms (keys.parse_arm)
    models: dict[str, Model] = field(default_factory=dict)
    versions: dict[tuple[str, str], ModelVersion] = field(default_factory=dict)
    # app -> hex sha256 of each of its API keys; an app without keys is open.
    api_keys: dict[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplicaRecord:
    """A ``{p}:replicas`` value: a replica connected to one query frontend, as JSON.

    Query frontends write it (field ``{replica_id}@{frontend}``: a replica serving
    several frontends has one entry per frontend); the management API lists it.
    """

    replica_id: str
    model_name: str
    model_version: str
    input_type: str
    frontend: str
    pid: int
    runtime: dict[str, str]
    connected_at: float

    @property
    def field(self) -> str:
        return replica_field(self.replica_id, self.frontend)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def replica_field(replica_id: str, frontend: str) -> str:
    """The ``{p}:replicas`` field of a replica connected to ``frontend``."""
    return f"{replica_id}@{frontend}"


def read_replica_record(blob: bytes | str) -> dict[str, Any] | None:
    """A ``{p}:replicas`` value as the JSON object it holds; ``None`` if unreadable.

    Readers keep fields they do not know (a newer frontend may add some)."""
    try:
        record = json.loads(blob)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
