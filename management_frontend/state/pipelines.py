"""Pipelines: the rules a chain of stages must keep, shared by the management frontend
(which refuses a pipeline that breaks them) and the query frontend (which runs one).

An app is a pipeline of stages (``records.Stage``); stage i's outputs are stage i+1's
inputs. An output becomes the next stage's input exactly as a client's ``"input"`` of
that JSON value would for a model of the next stage's input type: a flat non-empty list
of numbers for ``ints``/``floats``/``doubles`` (whole numbers for ``ints``), a string for
``strings``, a base64 string for ``bytes``, anything for ``json``.

A model version may declare what its outputs are (``ModelVersion.output_type``, one of
the input types' names); when it does, ``accepts`` says whether a stage of a given input
type can take them, and a pipeline where it cannot is refused when it is set. An output
type left undeclared is checked only at run time, on each output.

Stages are numbered from 1 in everything a person reads (errors, explanations, metric
labels, the ``stage`` of the admin API).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from management_frontend.state.errors import InvalidValue
from model_container.protocol import InputType

#: The most stages one app may chain.
MAX_STAGES: Final = 8

#: For each input type, the declared output types whose every value it takes.
_TAKES: Final[dict[InputType, frozenset[str]]] = {
    InputType.INTS: frozenset({"ints"}),
    InputType.FLOATS: frozenset({"ints", "floats", "doubles"}),
    InputType.DOUBLES: frozenset({"ints", "floats", "doubles"}),
    InputType.STRINGS: frozenset({"strings"}),
    InputType.BYTES: frozenset({"bytes"}),
    InputType.JSON: frozenset(t.value for t in InputType),
}


def output_type(value: object) -> str:
    """A declared output type: "" (not declared) or an input type's name."""
    if value is None or value == "":
        return ""
    names = [t.value for t in InputType]
    if not isinstance(value, str) or value not in names:
        raise InvalidValue(
            f"output_type {value!r} is not known: use one of {', '.join(names)} "
            "(what each output is, as a client would send it as one input), or leave it out"
        )
    return value


def accepts(input_type: InputType, declared: str) -> bool:
    """Whether a stage taking ``input_type`` takes every output of a model declaring
    ``declared`` (an undeclared type, or ``json`` which may hold anything, is not refused
    here: each output is checked when it arrives)."""
    if declared in ("", InputType.JSON.value):
        return True
    return declared in _TAKES[input_type]


def stage_name(index: int, arms: Sequence[str]) -> str:
    """How messages name the stage at 0-based ``index``: ``stage 2 ('clf')``."""
    shown = ", ".join(repr(a) for a in arms) if arms else "no model"
    return f"stage {index + 1} ({shown})"
