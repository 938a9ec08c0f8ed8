"""Request bodies of the admin API, as pydantic models.

Every field runs one of the contract's rules (``state.rules``) before pydantic sees it,
so a bad value is reported with our sentence ("app name 'My_App' is not a DNS-1123 label ...")
rather than pydantic's generic one. Unknown fields are refused: a misspelt optional
field would otherwise be dropped without a word.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Final

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StrictBool,
    WithJsonSchema,
    model_validator,
)

from management_frontend.api.openapi import DNS_LABEL_SCHEMA, VERSION_SCHEMA
from management_frontend.state import rules
from management_frontend.state.errors import InvalidValue
from management_frontend.state.pipelines import MAX_STAGES, output_type
from management_frontend.state.policy import PolicyParams
from management_frontend.state.records import App, ModelVersion, Stage
from management_frontend.storage.pipelines import check_stages
from model_container.protocol import InputType

# Each field shows its rule in the OpenAPI document (``WithJsonSchema``); the rule that
# runs is still ``rules``'s.
AppName = Annotated[str, BeforeValidator(rules.app_name), WithJsonSchema(DNS_LABEL_SCHEMA)]
ModelName = Annotated[str, BeforeValidator(rules.model_name), WithJsonSchema(DNS_LABEL_SCHEMA)]
Version = Annotated[str, BeforeValidator(rules.version), WithJsonSchema(VERSION_SCHEMA)]
OptionalVersion = Annotated[
    str | None,
    BeforeValidator(rules.optional(rules.version)),
    WithJsonSchema({"anyOf": [VERSION_SCHEMA, {"type": "null"}]}),
]
InputTypeField = Annotated[InputType, BeforeValidator(rules.input_type)]
BundleSha256 = Annotated[
    str,
    BeforeValidator(rules.bundle_sha256),
    WithJsonSchema({"type": "string", "pattern": f"^({rules.SHA256_RE.pattern})?$"}),
]
SloMicros = Annotated[
    int,
    BeforeValidator(rules.slo_micros),
    WithJsonSchema({"type": "integer", "minimum": 1}),
]
# The upper bound is the frontend's --max-replicas, checked by the routes.
NumReplicas = Annotated[
    int,
    BeforeValidator(partial(rules.num_replicas, maximum=None)),
    WithJsonSchema(
        {
            "type": "integer",
            "minimum": 0,
            "description": f"at most {rules.DEFAULT_MAX_REPLICAS} unless the management "
            "frontend runs with a larger --max-replicas",
        }
    ),
]
BatchSize = Annotated[
    int,
    BeforeValidator(rules.batch_size),
    WithJsonSchema(
        {
            "type": "integer",
            "minimum": -1,
            "not": {"const": 0},
            "description": "-1: adaptive",
        }
    ),
]
BatchMode = Annotated[
    str, BeforeValidator(rules.batch_mode), WithJsonSchema({"enum": [*rules.BATCH_MODES, ""]})
]
BatchWaitMicros = Annotated[
    int,
    BeforeValidator(rules.batch_wait_micros),
    WithJsonSchema({"type": "integer", "minimum": 0, "maximum": rules.MAX_BATCH_WAIT_MICROS}),
]
BatchTimeoutMicros = Annotated[
    int,
    BeforeValidator(rules.batch_timeout_micros),
    WithJsonSchema(
        {
            "type": "integer",
            "minimum": 0,
            "maximum": rules.MAX_BATCH_TIMEOUT_MICROS,
            "description": "0: derived from the tightest slo_micros of the model's apps",
        }
    ),
]
MemoryLimit = Annotated[
    int,
    BeforeValidator(rules.memory_limit),
    WithJsonSchema(
        {
            "oneOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^([0-9]+([kKMGT]i?)?)?$"},
            ],
            "description": "bytes, or a size like '1Gi' or '512Mi'; 0: no limit",
        }
    ),
]
Policy = Annotated[str, BeforeValidator(rules.policy), WithJsonSchema({"enum": [*rules.POLICIES]})]
DefaultOutput = Annotated[
    Any,
    BeforeValidator(rules.default_output),
    WithJsonSchema(
        {
            "description": "any JSON value an answer can carry: nested at most "
            f"{rules.MAX_DEFAULT_OUTPUT_DEPTH} levels, integers from {rules.MIN_JSON_INT} to "
            f"{rules.MAX_JSON_INT}, at most {rules.MAX_DEFAULT_OUTPUT_BYTES} bytes of JSON"
        }
    ),
]
OutputType = Annotated[
    str,
    BeforeValidator(output_type),
    WithJsonSchema(
        {
            "enum": ["", *(t.value for t in InputType), None],
            "description": "what each output is, as a client would send it as one input "
            "of that type; '' or null (or left out): not declared",
        }
    ),
]
CacheEnabled = Annotated[bool, BeforeValidator(rules.cache_enabled)]
ResetState = Annotated[bool, BeforeValidator(partial(rules.boolean, what="reset_state"))]
ExposeModelErrors = Annotated[
    bool, BeforeValidator(partial(rules.boolean, what="expose_model_errors"))
]


def _strings(what: str) -> Any:
    return BeforeValidator(partial(rules.string_list, what=what))


def _text(what: str) -> Any:
    return BeforeValidator(partial(rules.text, what=what))


def _object(what: str) -> Any:
    return BeforeValidator(partial(rules.json_object, what=what))


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AddApp(_Body):
    name: AppName
    input_type: InputTypeField
    default_output: DefaultOutput
    slo_micros: SloMicros
    policy: Policy = rules.SINGLE
    # Checked against the policy once both are known (PolicyParams.parse).
    policy_params: Annotated[dict[str, Any], _object("policy_params")] = {}
    cache_enabled: CacheEnabled = True
    # Clients see what a model's exception says, not only its type.
    expose_model_errors: ExposeModelErrors = False

    @model_validator(mode="after")
    def _params_fit_the_policy(self) -> AddApp:
        PolicyParams.parse(self.policy, self.policy_params)
        return self

    def to_record(self) -> App:
        """The app as given; ``Store.add_app`` normalises its policy parameters."""
        return App(
            name=self.name,
            input_type=self.input_type,
            default_output=self.default_output,
            slo_micros=self.slo_micros,
            policy=self.policy,
            policy_params=dict(self.policy_params),
            cache_enabled=self.cache_enabled,
            expose_model_errors=self.expose_model_errors,
        )


class SetAppCache(_Body):
    cache_enabled: CacheEnabled


def stage_number(value: object) -> int:
    """A stage of a pipeline, numbered from 1, as a body gives it: a JSON integer."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_STAGES:
        raise InvalidValue(
            f"stage must be a whole number from 1 (the first stage) to {MAX_STAGES}, got "
            f"{rules.show(value)}"
        )
    return value


def stage_query(value: object) -> int:
    """``stage_number`` as a query parameter gives it: its digits."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 3:
        try:
            return stage_number(int(value))
        except InvalidValue:
            pass
    return stage_number(value)


STAGE_SCHEMA: Final = {
    "type": "integer",
    "minimum": 1,
    "maximum": MAX_STAGES,
    "description": "a stage of the app's pipeline, from 1 (the app's links)",
}
StageNumber = Annotated[int, BeforeValidator(stage_number), WithJsonSchema(STAGE_SCHEMA)]
StageText = Annotated[int, BeforeValidator(stage_query), WithJsonSchema(STAGE_SCHEMA)]


class SetPolicy(_Body):
    policy: Policy
    params: Annotated[dict[str, Any], _object("params")] = {}
    # Which stage of the app's pipeline (1: the app's own policy, on its links).
    stage: StageNumber = 1
    # Forget what the policy learned even though its name stays the same.
    reset_state: ResetState = False

    @model_validator(mode="after")
    def _params_fit_the_policy(self) -> SetPolicy:
        PolicyParams.parse(self.policy, self.params)
        return self


_STAGE_FIELDS: Final = ("arms", "policy", "policy_params")


def _stage(index: int, value: object) -> Stage:
    """One stage of a pipeline body, its shape checked (its values: ``check_stages``)."""
    where = f"stage {index + 1}"
    if not isinstance(value, dict):
        raise InvalidValue(
            f'{where} must be an object {{"arms": [...], "policy": ..., "policy_params": '
            f"{{...}}}}, got {rules.show(value)}"
        )
    unknown = [k for k in value if k not in _STAGE_FIELDS]
    if unknown:
        why = (
            ": a stage's epoch is the server's (send reset_state to start its policy afresh)"
            if "policy_epoch" in unknown
            else ""
        )
        raise InvalidValue(
            f"{where} has the field {', '.join(map(repr, map(str, unknown)))}, which is not "
            f"accepted{why}: a stage takes {', '.join(map(repr, _STAGE_FIELDS))}"
        )
    if "arms" not in value:
        raise InvalidValue(
            f"{where} has no 'arms': give the models it runs, as 'model' or 'model:version'"
        )
    arms = value["arms"]
    if not isinstance(arms, list) or not all(isinstance(a, str) for a in arms):
        raise InvalidValue(
            f"{where}'s arms must be a list of 'model' or 'model:version', got {rules.show(arms)}"
        )
    policy = value.get("policy", rules.SINGLE)
    params = rules.json_object(value.get("policy_params", {}), f"{where}'s policy_params")
    if not isinstance(policy, str):
        raise InvalidValue(f"{where}'s policy must be a string, got {rules.show(policy)}")
    return Stage(list(arms), policy, params)


def pipeline_stages(value: object) -> list[Stage]:
    """A pipeline as a body gives it: a list of stages, the first first; every rule the
    request alone decides is checked here (``storage.pipelines.check_stages``)."""
    if not isinstance(value, list):
        raise InvalidValue(
            "stages must be a list of stages, the first first, each "
            '{"arms": ["model" or "model:version", ...], "policy": ..., "policy_params": '
            f"{{...}}}}, got {rules.show(value)}"
        )
    return check_stages([_stage(i, stage) for i, stage in enumerate(value)])


_STAGE_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "arms": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "string", "description": "'model' or 'model:version'"},
        },
        "policy": {"enum": [*rules.POLICIES], "default": rules.SINGLE},
        "policy_params": {"type": "object", "default": {}},
    },
    "required": ["arms"],
    "additionalProperties": False,
}


class SetPipeline(_Body):
    # Stage 1 becomes the app's links and own policy; the ones after it run in order.
    stages: Annotated[
        list[Stage],
        BeforeValidator(pipeline_stages),
        WithJsonSchema(
            {"type": "array", "minItems": 1, "maxItems": MAX_STAGES, "items": _STAGE_SCHEMA}
        ),
    ]
    # Forget what every stage's policy learned, even where its policy stays the same.
    reset_state: ResetState = False


class AddLink(_Body):
    model_name: ModelName
    # A version pins the link to it; without one the link follows the current version.
    version: OptionalVersion = None


class AddModelVersion(_Body):
    name: ModelName
    version: Version
    input_type: InputTypeField
    bundle_sha256: BundleSha256 = ""
    labels: Annotated[list[str], _strings("labels")] = []
    batch_size: BatchSize = -1
    batch_mode: BatchMode = ""
    batch_wait_micros: BatchWaitMicros = 0
    batch_timeout_micros: BatchTimeoutMicros = 0
    # Stored as bytes (``memory_limit_bytes``) in the record and its answers.
    memory_limit: MemoryLimit = 0
    num_replicas: NumReplicas = 0
    runtime: Annotated[
        dict[str, str], BeforeValidator(partial(rules.string_map, what="runtime"))
    ] = {}
    pkgs: Annotated[list[str], _strings("pkgs")] = []
    set_current: StrictBool = True
    # Checked when a pipeline feeds this version's outputs to a later stage.
    output_type: OutputType = ""

    @model_validator(mode="before")
    @classmethod
    def _no_artifact(cls, data: Any) -> Any:
        if isinstance(data, dict) and "artifact" in data:
            raise InvalidValue(
                "field 'artifact' is no longer accepted: the cluster runs only bundles it "
                "stored itself, never a path or image named by a client. Send "
                "'bundle_sha256' (the 64 hex digits of a bundle deployed with the admin "
                "client's deploy_python_closure or deploy_model), or leave it out for a "
                "version whose replicas run elsewhere"
            )
        return data

    def to_record(self) -> ModelVersion:
        return ModelVersion(
            name=self.name,
            version=self.version,
            input_type=self.input_type,
            bundle_sha256=self.bundle_sha256,
            labels=list(self.labels),
            batch_size=self.batch_size,
            batch_mode=self.batch_mode,
            batch_wait_micros=self.batch_wait_micros,
            batch_timeout_micros=self.batch_timeout_micros,
            memory_limit_bytes=self.memory_limit,
            num_replicas=self.num_replicas,
            runtime=dict(self.runtime),
            pkgs=list(self.pkgs),
            output_type=self.output_type,
        )


class SetCurrentVersion(_Body):
    version: Version


class SetReplicas(_Body):
    num_replicas: NumReplicas
