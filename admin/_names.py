"""The state contract's rules, checked on the client side before any round trip.

The rules themselves are ``management_frontend.state.rules`` (the management frontend
runs the same ones); this module only turns their ``InvalidValue`` into the admin
client's ``InvalidRequestError``. They run early because the admin client uses model
names and versions as file and container names before it registers anything, and a
name like ``../x`` must never reach the file system.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from admin.exceptions import InvalidRequestError
from management_frontend.state import pipelines, rules
from management_frontend.state.errors import InvalidValue

T = TypeVar("T")


def checked(rule: Callable[..., T], *args: object) -> T:
    """``rule(*args)``, its ``InvalidValue`` raised as ``InvalidRequestError``."""
    try:
        return rule(*args)
    except InvalidValue as exc:
        raise InvalidRequestError(exc.message, code="invalid") from None


def check_name(name: object, what: str = "model name") -> str:
    return checked(rules.dns_label, name, what)


def check_names(names: object, what: str = "model name") -> list[str]:
    """One name, or several (Clipper's methods take either), as a list."""
    if isinstance(names, str):
        return [check_name(names, what)]
    if isinstance(names, Iterable) and not isinstance(names, bytes | Mapping):
        return [check_name(name, what) for name in names]
    raise InvalidRequestError(f"pass a {what} or a list of them, got {names!r}")


def check_object(value: object, what: str) -> dict[str, Any]:
    """A mapping of settings, as the JSON object the API takes."""
    return checked(rules.json_object, dict(value) if isinstance(value, Mapping) else value, what)


def check_strings(value: object, what: str) -> list[str]:
    """A list (or tuple) of strings, as the JSON list the API takes."""
    return checked(rules.string_list, list(value) if isinstance(value, tuple) else value, what)


def check_version(version: object) -> str:
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)  # Clipper users often pass version=1
    return checked(rules.version, version)


def check_output_type(output_type: object) -> str:
    """What a model version declares its outputs are: "" (``None`` too: not declared) or
    an input type's name (``pipelines.output_type``); ``InputType`` members pass too."""
    if output_type is not None and not isinstance(output_type, str):
        output_type = getattr(output_type, "value", output_type)
    return checked(pipelines.output_type, output_type)


def check_input_type(input_type: object) -> str:
    """An input type's name; ``model_container.protocol.InputType`` members pass too."""
    return checked(rules.input_type, input_type).value


# The management frontend's variable for its bound: an operator who raises it there sets
# it for the client too (a LocalContainerManager's processes inherit it from the notebook).
MAX_REPLICAS_ENV = "SCHOONER_MAX_REPLICAS"


def max_replicas(env: Mapping[str, str] | None = None) -> int:
    """The most replicas the client asks for: ``SCHOONER_MAX_REPLICAS``, else the
    contract's default (64). The management frontend enforces its own bound anyway."""
    raw = (os.environ if env is None else env).get(MAX_REPLICAS_ENV, "").strip()
    if not raw:
        return rules.DEFAULT_MAX_REPLICAS
    if not raw.isdigit():
        raise InvalidRequestError(
            f"{MAX_REPLICAS_ENV}={raw!r} is not a replica count: set it to an integer >= 0"
        )
    return int(raw)


def check_num_replicas(num_replicas: object) -> int:
    """A replica count: an integer from 0 (which stops every replica) to
    ``max_replicas()``."""
    return checked(rules.num_replicas, num_replicas, max_replicas())


def check_memory_limit(value: object) -> int:
    """A replica memory limit as bytes: an integer of bytes or a size like ``"1Gi"``
    (``rules.memory_limit``); 0 is no limit."""
    return checked(rules.memory_limit, value)


def check_default_output(value: object) -> Any:
    """An app's default output, refused here as the management API would refuse it:
    a JSON value an answer can carry (``rules.default_output``)."""
    return checked(rules.default_output, value)


def check_user_id(uid: object) -> str | None:
    """A user id as the APIs take it (integers as their digits); ``None`` passes."""
    return None if uid is None else checked(rules.check_user_id, uid)


def check_flag(value: object, what: str) -> bool:
    """A boolean argument: Python's ``True`` or ``False``, nothing that merely looks so."""
    if not isinstance(value, bool):
        raise InvalidRequestError(
            f"{what} must be True or False, got {value!r} ({type(value).__name__})"
        )
    return value
