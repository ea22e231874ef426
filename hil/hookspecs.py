"""Hooks hil calls, for a lab's `conftest.py` to implement (see the one at the repository's top).

pytest finds them by name, as it does its own `pytest_*` hooks: a lab adds behaviour around the
rig (log the device's version to its dashboard, page someone when a test broke a bench) without
touching the harness.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from hil.bringup import Online
    from hil.rig import Rig


@pytest.hookspec
def pytest_hil_online(config: pytest.Config, rig: Rig, online: Online) -> None:
    """Bring-up brought the device online, before the first rig test; `online` says as which
    version, by what means, with what boot reason and how fast."""


@pytest.hookspec
def pytest_hil_restarted(item: pytest.Item, problem: str, recovery: str) -> None:
    """After `item`, the device was found broken (`problem`: a panic, silence, power left
    off) and the harness restarted it (`recovery` says how that went)."""
