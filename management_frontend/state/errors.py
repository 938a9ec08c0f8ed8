"""The one error the state contract raises.

A value that breaks one of the contract's rules (a name, a version, a count, a policy
setting) raises ``InvalidValue``, whose message names the field, shows the value and
says what to send instead. It is a plain ``ValueError``: the contract knows nothing of
HTTP. Each user translates it at its own boundary — the management API answers 400
``invalid``, the query frontend 400 ``invalid_input``, the admin client raises
``InvalidRequestError`` before any round trip — and a pydantic validator may raise it
unchanged.
"""

from __future__ import annotations


class InvalidValue(ValueError):  # noqa: N818 (a value, as ValueError names it)
    """A value breaks a rule of the state contract; the message says what to fix."""

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else "invalid value"
