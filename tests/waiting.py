"""Waiting, in tests, for a state that has no event of its own (a file, a process, a port)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
POLL_S = 0.05


def until(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """Poll `predicate` until it returns something true, and return that; AssertionError naming
    `what` when `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(POLL_S)
    return found
