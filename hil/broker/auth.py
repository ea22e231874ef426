"""Broker credentials: the username in the rig, the password only in an environment variable."""

from __future__ import annotations

import os

from hil.broker import BrokerError


def password_from_env(variable: str | None) -> str | None:
    """The password held in `variable`; an unset variable is an error naming it."""
    if not variable:
        return None
    value = os.environ.get(variable)
    if value is None:
        raise BrokerError(
            f"broker password variable {variable} is not set; export it before the run "
            f"(the rig's [broker] password_env names it)"
        )
    return value
