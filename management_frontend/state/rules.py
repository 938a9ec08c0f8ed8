"""The rules every value in the state obeys: names, versions, arms, user ids, input
types, SLOs, counts, batching settings, policy names, JSON shapes, on/off flags, bundle
digests.

Each function takes the raw value (``object``: what a client sent), returns it typed,
or raises ``InvalidValue`` with a message that names the field, shows the bad value and
says what to use instead. They are the one copy of these rules: the management API
runs them as pydantic "before" validators (``management_frontend.api.bodies``), the query
frontend on a request's user id, and the admin client before any round trip — a model
name becomes a file and container name there before it is registered. A policy's
parameters are checked by ``policy.PolicyParams.parse``, which knows each policy's.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any, Final, TypeVar

from management_frontend.state.errors import InvalidValue
from management_frontend.state.keys import parse_arm
from model_container.protocol import InputType

T = TypeVar("T")

MAX_NAME_LENGTH: Final = 63
MAX_INT64: Final = 2**63 - 1
# default_output is copied into every defaulted answer; keep it small.
MAX_DEFAULT_OUTPUT_BYTES: Final = 64 * 1024
MAX_TEXT_LENGTH: Final = 4096
# How deep a request body to either frontend may nest (``{"a": [1]}`` is 2 levels);
# a deeper one is a 400 (the query frontend's predict and update bodies too).
MAX_JSON_DEPTH: Final = 32
# default_output sits one level down in its body, and inside the query frontend's answer
# (which orjson writes: at most 255 levels, integers of 64 bits, finite floats, string
# keys, valid UTF-8), so whatever passes here can be answered.
MAX_DEFAULT_OUTPUT_DEPTH: Final = MAX_JSON_DEPTH - 1
MIN_JSON_INT: Final = -(2**63)
MAX_JSON_INT: Final = 2**64 - 1
# How many replicas of one version a client may ask for unless the operator raises it
# (the management frontend's --max-replicas): start() launches every one of them.
DEFAULT_MAX_REPLICAS: Final = 64

DNS1123_LABEL_RE: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
VERSION_RE: Final = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$")
# A sha256 as 64 lowercase hex digits; match it with ``fullmatch`` (``$`` would let a
# trailing newline through).
SHA256_RE: Final = re.compile(r"[0-9a-f]{64}")

# Selection policies an app may name: ``policy`` is the contract's word on their
# parameters and learned state; the query frontend implements them.
SINGLE: Final = "single"
SPLIT: Final = "split"
EXP3: Final = "exp3"
EXP4: Final = "exp4"
POLICIES: Final = (SINGLE, SPLIT, EXP3, EXP4)
# Names an earlier Schooner accepted, with what to use now.
RENAMED_POLICIES: Final = {
    "weighted": "'split' (fixed weights per arm)",
    "straggler": "'exp4' (it combines the answers that arrive by the deadline)",
}
# Batch-size controllers a model version may name (the query frontend implements them);
# "" keeps Clipper's meaning of batch_size: "fixed" when it is > 0, else "aimd".
BATCH_MODES: Final = ("aimd", "latency_model", "fixed")
# Delayed batching holds queries back from a free replica; a second is far past any SLO.
MAX_BATCH_WAIT_MICROS: Final = 1_000_000
# A batch may be given at most an hour; 0 lets the query frontend derive its timeout.
MAX_BATCH_TIMEOUT_MICROS: Final = 3_600_000_000
# A replica needs this much memory to import Python, numpy and a model at all.
MIN_MEMORY_LIMIT_BYTES: Final = 64 * 2**20
# Kubernetes' quantity suffixes: binary (Ki, Mi, Gi, Ti) and decimal (k, M, G, T).
MEMORY_UNITS: Final = {
    "": 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
_MEMORY_RE: Final = re.compile(r"(?P<n>[0-9]+)(?P<unit>[kKMGT]i?|)")
MAX_USER_ID_LENGTH: Final = 256

_LABEL_RULE = (
    "use lowercase letters, digits and '-', starting and ending with a letter or digit, "
    f"at most {MAX_NAME_LENGTH} characters"
)
_VERSION_RULE = (
    "use letters, digits, '_', '.' and '-', starting and ending with a letter or digit, "
    f"at most {MAX_NAME_LENGTH} characters"
)


def show(value: object, limit: int = 60) -> str:
    """A value for an error message: strings as Python writes them, the rest as JSON."""
    if isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _require_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidValue(f"{what} must be a string, got {show(value)} ({_json_kind(value)})")
    return value


def _label_problem(name: str) -> str:
    """Why a string is not a DNS-1123 label, in a few words."""
    if not name:
        return "it is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"it has {len(name)} characters"
    for ch in name:
        if ch.isupper():
            return f"it contains the uppercase letter {ch!r}"
        if not (ch.isascii() and (ch.isalnum() or ch == "-")):
            return f"it contains {ch!r}"
    return "it starts or ends with '-'"


def dns_label(value: object, what: str) -> str:
    """A DNS-1123 label: it becomes a container, Service and label name."""
    name = _require_str(value, what)
    if len(name) > MAX_NAME_LENGTH or not DNS1123_LABEL_RE.fullmatch(name):
        raise InvalidValue(
            f"{what} {show(name)} is not a DNS-1123 label ({_label_problem(name)}): {_LABEL_RULE}"
        )
    return name


def app_name(value: object) -> str:
    return dns_label(value, "app name")


def model_name(value: object) -> str:
    return dns_label(value, "model name")


def version(value: object) -> str:
    ver = _require_str(value, "model version")
    if len(ver) > MAX_NAME_LENGTH or not VERSION_RE.fullmatch(ver):
        raise InvalidValue(f"model version {show(ver)} is not valid: {_VERSION_RULE}")
    return ver


def check_arm(value: object) -> str:
    """An arm name: ``model`` or ``model:version``, each part valid on its own."""
    if not isinstance(value, str):
        raise InvalidValue(f"an arm must be a string 'model' or 'model:version', got {value!r}")
    model, ver = parse_arm(value)
    model_name(model)
    if ver is not None:
        version(ver)
    return value


def check_user_id(value: object) -> str:
    """A user id as queries and feedback carry it ("uid"): a string, or an integer."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise InvalidValue(f'"uid" must be a non-empty string (or an integer), got {value!r}')
    if len(value) > MAX_USER_ID_LENGTH:
        raise InvalidValue(f'"uid" has {len(value)} characters: use at most {MAX_USER_ID_LENGTH}')
    return value


# Other names for an input type, stored under its own: Clipper's documentation and
# walkthroughs say "integers".
INPUT_TYPE_ALIASES: Final = {"integers": InputType.INTS}


def input_type(value: object) -> InputType:
    known = ", ".join(t.value for t in InputType)
    if isinstance(value, str):
        try:
            return INPUT_TYPE_ALIASES.get(value) or InputType(value)
        except ValueError:
            pass
    raise InvalidValue(f"input_type {show(value)} is not known: use one of {known}")


def _strict_int(value: object, what: str, rule: str) -> int:
    # bool is an int in Python but never what a client means by a count or a duration.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue(
            f"{what} must be an integer {rule}, got {show(value)} ({_json_kind(value)})"
        )
    if value > MAX_INT64:
        raise InvalidValue(f"{what} must be an integer {rule}, got {value}, which is too large")
    return value


def slo_micros(value: object) -> int:
    slo = _strict_int(value, "slo_micros", "number of microseconds > 0")
    if slo <= 0:
        raise InvalidValue(
            f"slo_micros must be > 0, got {slo}: it is the latency objective in microseconds "
            "(100000 is 100 ms)"
        )
    return slo


def num_replicas(value: object, maximum: int | None = DEFAULT_MAX_REPLICAS) -> int:
    """A replica count in 0..``maximum`` (``None``: no upper bound, for a caller that
    checks the bound it was configured with afterwards)."""
    count = _strict_int(value, "num_replicas", ">= 0")
    if count < 0:
        raise InvalidValue(f"num_replicas must be >= 0, got {count} (0 stops every replica)")
    if maximum is not None and count > maximum:
        raise InvalidValue(
            f"num_replicas must be at most {maximum}, got {count}: every replica is a process "
            "or container the cluster starts. The operator can raise the bound with the "
            "management frontend's --max-replicas (env SCHOONER_MAX_REPLICAS)"
        )
    return count


def batch_size(value: object) -> int:
    size = _strict_int(value, "batch_size", ">= 1, or -1 for adaptive batching")
    if size == 0 or size < -1:
        raise InvalidValue(f"batch_size must be >= 1, or -1 for adaptive batching, got {size}")
    return size


def batch_mode(value: object) -> str:
    allowed = ", ".join(repr(m) for m in (*BATCH_MODES, ""))
    if not (isinstance(value, str) and (value == "" or value in BATCH_MODES)):
        raise InvalidValue(
            f"batch_mode {show(value)} is not known: use one of {allowed} "
            "('' is 'fixed' when batch_size > 0, else 'aimd')"
        )
    return value


def batch_wait_micros(value: object) -> int:
    wait = _strict_int(value, "batch_wait_micros", "number of microseconds >= 0")
    if wait < 0:
        raise InvalidValue(
            f"batch_wait_micros must be >= 0, got {wait} (0 turns delayed batching off)"
        )
    if wait > MAX_BATCH_WAIT_MICROS:
        raise InvalidValue(
            f"batch_wait_micros must be at most {MAX_BATCH_WAIT_MICROS} (1 s), got {wait}: "
            "it is how long a free replica may wait to fill a batch; keep it well under the "
            "apps' slo_micros"
        )
    return wait


def batch_timeout_micros(value: object) -> int:
    timeout = _strict_int(value, "batch_timeout_micros", "number of microseconds >= 0")
    if timeout < 0:
        raise InvalidValue(
            f"batch_timeout_micros must be >= 0, got {timeout} (0 lets the query frontend "
            "derive it from the tightest slo_micros of the model's apps)"
        )
    if timeout > MAX_BATCH_TIMEOUT_MICROS:
        raise InvalidValue(
            f"batch_timeout_micros must be at most {MAX_BATCH_TIMEOUT_MICROS} (1 hour), got "
            f"{timeout}: a replica whose batch runs longer is replaced"
        )
    return timeout


def memory_limit(value: object) -> int:
    """A replica memory limit in bytes: an integer of bytes, or a string as Kubernetes
    writes quantities (``"1Gi"``, ``"512Mi"``, ``"2G"``); 0 (or ``""``) is no limit."""
    if isinstance(value, str):
        if not value:
            return 0
        m = _MEMORY_RE.fullmatch(value)
        if m is None:
            raise InvalidValue(
                f"memory_limit {show(value)} is not a size: write bytes as an integer, or a "
                "number with one of the suffixes Ki, Mi, Gi, Ti (powers of 1024) or k, M, G, "
                "T (powers of 1000), e.g. '1Gi' or '512Mi'"
            )
        limit = int(m["n"]) * MEMORY_UNITS[m["unit"]]
    else:
        limit = _strict_int(value, "memory_limit", "number of bytes >= 0, or a size like '1Gi'")
    if limit == 0:
        return 0
    if limit < MIN_MEMORY_LIMIT_BYTES:
        raise InvalidValue(
            f"memory_limit must be at least {MIN_MEMORY_LIMIT_BYTES // 2**20}Mi, got "
            f"{show(value)} ({limit} bytes): a replica needs that much to load Python and a "
            "model; 0 means no limit"
        )
    if limit > MAX_INT64:
        raise InvalidValue(f"memory_limit {show(value)} is too large")
    return limit


def policy(value: object) -> str:
    name = _require_str(value, "policy")
    if name in RENAMED_POLICIES:
        raise InvalidValue(
            f"policy {show(name)} is no longer offered: use {RENAMED_POLICIES[name]}"
        )
    if name not in POLICIES:
        raise InvalidValue(f"policy {show(name)} is not known: use one of {', '.join(POLICIES)}")
    return name


def json_object(value: object, what: str) -> dict[str, Any]:
    """A JSON object (its keys are strings by JSON's rules); checked further by its user."""
    if not isinstance(value, dict):
        raise InvalidValue(f"{what} must be a JSON object, got {show(value)} ({_json_kind(value)})")
    return {_unicode(str(k), f"a key of {what}"): v for k, v in value.items()}


def optional(check: Callable[[object], T]) -> Callable[[object], T | None]:
    """``check`` for a value that may be absent: null (``None``) passes as ``None``."""

    def check_or_none(value: object) -> T | None:
        return None if value is None else check(value)

    return check_or_none


def boolean(value: object, what: str) -> bool:
    # No coercion: in Python the string "false" is true, and 0/1 may be a typo for a count.
    if not isinstance(value, bool):
        raise InvalidValue(
            f"{what} must be a JSON boolean (true or false), got {show(value)} "
            f"({_json_kind(value)})"
        )
    return value


def cache_enabled(value: object) -> bool:
    return boolean(value, "cache_enabled")


def _digits(number: int) -> int:
    """Roughly how many decimal digits ``number`` has (``str`` refuses over 4300)."""
    return max(1, math.ceil(abs(number).bit_length() * math.log10(2)))


def _path(node: tuple[Any, ...]) -> str:
    """Where a value sits: ``((None, "default_output"), 0)`` -> ``default_output[0]``
    (a node is its parent's node and its key or index; the root's parent is ``None``)."""
    parts: list[str] = []
    parent, key = node
    while parent is not None:
        parts.append(f"[{key}]" if isinstance(key, int) else f"[{json.dumps(key)}]")
        parent, key = parent
    parts.append(str(key))
    return "".join(reversed(parts))


def json_value_problem(value: object, what: str, max_depth: int) -> str | None:
    """Why ``value`` cannot be written as a JSON answer (by orjson or the standard
    library), or ``None`` when it can: depth over ``max_depth``, an integer outside 64
    bits, a float that is not finite, a key that is not a string, a string that is not
    UTF-8 (a lone surrogate), a value of no JSON type. Walks without recursion, so no
    depth breaks it."""
    stack: list[tuple[object, int, tuple[Any, ...]]] = [(value, 0, (None, what))]
    while stack:
        item, depth, node = stack.pop()
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, int):
            if not MIN_JSON_INT <= item <= MAX_JSON_INT:
                return (
                    f"{_path(node)} is an integer of about {_digits(item)} digits: JSON answers "
                    f"hold integers from {MIN_JSON_INT} to {MAX_JSON_INT}; send a larger number "
                    "as a string"
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"{_path(node)} is {json.dumps(item)}: use a finite number, null or a string"
        elif isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return f"{_path(node)} holds a lone UTF-16 surrogate: send valid Unicode text"
        elif isinstance(item, list | dict):
            if depth >= max_depth:
                return (
                    f"{what} is nested deeper than {max_depth} levels: nest lists and objects "
                    f"at most {max_depth} deep"
                )
            if isinstance(item, list):
                stack.extend((v, depth + 1, (node, i)) for i, v in enumerate(item))
                continue
            for key, v in item.items():
                if not isinstance(key, str):
                    return f"{_path(node)} has the key {key!r}: JSON object keys are strings"
                stack.append((key, depth + 1, (node, key)))
                stack.append((v, depth + 1, (node, key)))
        else:
            return (
                f"{_path(node)} is a Python {type(item).__name__}: use JSON values only "
                "(null, true, false, numbers, strings, lists, objects with string keys)"
            )
    return None


def default_output(value: object) -> Any:
    """What a query gets when no model answers in time: any JSON value the query
    frontend can write into an answer, up to ``MAX_DEFAULT_OUTPUT_BYTES``."""
    problem = json_value_problem(value, "default_output", MAX_DEFAULT_OUTPUT_DEPTH)
    if problem is not None:
        raise InvalidValue(problem)
    size = len(json.dumps(value, ensure_ascii=False).encode())
    if size > MAX_DEFAULT_OUTPUT_BYTES:
        raise InvalidValue(
            f"default_output is {size} bytes of JSON: keep it under "
            f"{MAX_DEFAULT_OUTPUT_BYTES} bytes, it is copied into every defaulted answer"
        )
    return value


def _unicode(s: str, what: str) -> str:
    """``s`` unless it holds a lone surrogate, which JSON can escape but no answer
    (nor Redis) can encode."""
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidValue(
                f"{what} holds a lone UTF-16 surrogate: send valid Unicode text"
            ) from None
    return s


def text(value: object, what: str) -> str:
    s = _require_str(value, what)
    if len(s) > MAX_TEXT_LENGTH:
        raise InvalidValue(f"{what} has {len(s)} characters: use at most {MAX_TEXT_LENGTH}")
    return _unicode(s, what)


def string_list(value: object, what: str) -> list[str]:
    if not isinstance(value, list):
        raise InvalidValue(
            f"{what} must be a list of strings, got {show(value)} ({_json_kind(value)})"
        )
    for item in value:
        if not isinstance(item, str):
            raise InvalidValue(f"{what} must be a list of strings, but it holds {show(item)}")
        text(item, f"an item of {what}")
    return list(value)


def string_map(value: object, what: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise InvalidValue(
            f"{what} must be an object of strings, got {show(value)} ({_json_kind(value)})"
        )
    for key, item in value.items():
        if not isinstance(item, str):
            raise InvalidValue(f"{what} must map names to strings, but {key!r} is {show(item)}")
        text(item, f"{what}[{key!r}]")
    return {_unicode(str(k), f"a key of {what}"): v for k, v in value.items()}


def bundle_sha256(value: object) -> str:
    """A model version's bundle digest (``model_container.bundle.bundle_digest``): 64
    lowercase hex digits, or ``""`` for a version whose replicas run elsewhere."""
    s = _require_str(value, "bundle_sha256")
    if s and not SHA256_RE.fullmatch(s):
        raise InvalidValue(
            f"bundle_sha256 {show(s)} is not a sha256: send the 64 lowercase hex digits of "
            'the bundle\'s digest (the admin client computes it when it deploys), or "" '
            "for a version whose replicas run elsewhere"
        )
    return s
