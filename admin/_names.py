"""Client-side checks of names, versions and input types, before any round trip.

The management frontend validates everything again (``management_frontend.validation``
holds the same rules); these checks exist because the admin client uses model names
and versions as file and container names before it registers anything, and a name like
``../x`` must never reach the file system.
"""

from __future__ import annotations

import re
from typing import Final

from admin.exceptions import InvalidRequestError

MAX_NAME_LENGTH: Final = 63
_NAME_RE: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_VERSION_RE: Final = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$")
INPUT_TYPES: Final = ("ints", "floats", "doubles", "bytes", "strings", "json")


def check_name(name: object, what: str = "model name") -> str:
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not _NAME_RE.match(name):
        raise InvalidRequestError(
            f"{what} {name!r} is not a DNS-1123 label: use lowercase letters, digits and "
            f"'-', starting and ending with a letter or digit, at most {MAX_NAME_LENGTH} "
            "characters (e.g. 'my-model')"
        )
    return name


def check_version(version: object) -> str:
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)  # Clipper users often pass version=1
    if (
        not isinstance(version, str)
        or len(version) > MAX_NAME_LENGTH
        or not _VERSION_RE.match(version)
    ):
        raise InvalidRequestError(
            f"version {version!r} is not valid: use letters, digits, '_', '.' and '-', "
            f"starting and ending with a letter or digit, at most {MAX_NAME_LENGTH} "
            "characters (e.g. '1' or '2024-05-01')"
        )
    return version


def check_input_type(input_type: object) -> str:
    value = str(input_type)  # accepts model_container.protocol.InputType members too
    if value not in INPUT_TYPES:
        raise InvalidRequestError(
            f"input type {input_type!r} is not known: use one of {', '.join(INPUT_TYPES)}"
        )
    return value
