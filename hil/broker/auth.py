"""Broker credentials: the username in the rig, the password only in an environment variable."""

from __future__ import annotations

import base64
import hashlib
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


# mosquitto_passwd's defaults for `$7$` (PBKDF2-SHA512) lines, which mosquitto 2.0 reads.
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12


def check_username(username: str) -> None:
    """A password-file line is `user:hash`: a colon or line break would split or forge one."""
    if ":" in username or any(c in username for c in "\r\n\0"):
        raise ValueError(f"username {username!r} cannot hold ':', a line break or NUL; rename it")


def mosquitto_password_line(
    username: str, password: str, iterations: int = PBKDF2_ITERATIONS, salt: bytes | None = None
) -> str:
    """One mosquitto password-file line, hashed here so the secret never goes on a command line.

    `mosquitto_passwd -b` would take it in argv, readable in /proc/<pid>/cmdline by every user.
    """
    check_username(username)
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"{username}:$7${iterations}${b64(salt).decode()}${b64(digest).decode()}\n"
