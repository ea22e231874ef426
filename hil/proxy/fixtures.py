"""The `proxy` fixture: the rig's MQTT proxy, for suites that inject network faults.

The proxy runs for the whole session (`[broker] proxy = true`); every test gets it with no
fault set and leaves none behind, whatever it did. Its records land in each test's
`proxy.jsonl` whether or not the test asks for it (those of the rig's bring-up in the first
test's, with its console.log). Registered by the `pytest11` entry point.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hil.artifacts import ArtifactStore
from hil.bringup import DeviceState
from hil.plugin import CAPABILITY_HINTS, STORE_KEY
from hil.proxy.proxy import MqttProxy
from hil.session import RigSession

RECORDS = "proxy.jsonl"


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest):
    """Once the rig is up, its proxy writes to the artifacts of whichever test is running."""
    result = yield
    session = result if fixturedef.argname == "hil_session" else None
    if isinstance(session, RigSession) and session.proxy is not None:
        session.proxy.set_sink(_store(fixturedef, request).sink(RECORDS))
    return result


def _store(fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest) -> ArtifactStore:
    """The artifacts of the session's rig: its own in a pool, else the run's."""
    if "hil_rig" in fixturedef.argnames:
        return request.getfixturevalue("hil_rig").store
    return request.config.stash[STORE_KEY]


@pytest.fixture
def proxy(hil_session: RigSession, hil_device: DeviceState) -> Iterator[MqttProxy]:
    """The MQTT proxy between the device and the broker, its faults cleared before and after."""
    found = hil_session.proxy
    if found is None:
        rig = hil_session.rig.name
        pytest.skip(f"needs proxy: rig {rig!r} lacks it ({CAPABILITY_HINTS['proxy']})")
    found.clear()
    try:
        yield found
    finally:
        found.clear()
