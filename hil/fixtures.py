"""The fixtures suites use: rig, broker, power, console, mqtt, cipher, measurements and dut.

Rig-wide resources live for the session (one bring-up per run); each test gets a fresh
cursor, so it only sees what happened during it. Registered by the `pytest11` entry point.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from hil.dut import Dut
from hil.measurements import Measurements
from hil.mqtt import MqttRecorder
from hil.plugin import MEASUREMENTS_KEY, RIG_KEY, STORE_KEY
from hil.protocol.crypto import Cipher
from hil.rig import Rig
from hil.schema import ConfigError
from hil.session import RigSession


@pytest.fixture(scope="session")
def hil_session(request: pytest.FixtureRequest) -> Iterator[RigSession]:
    """The rig brought up once for the run and given back at its end."""
    rig = request.config.stash[RIG_KEY]
    if rig is None:
        raise ConfigError("", "no rig file: pass --rig PATH (for example rigs/sim.toml)")
    store = request.config.stash[STORE_KEY]
    if request.config.getoption("--hil-doctor"):
        from hil.doctor import check_rig

        check_rig(rig, store.root / "_doctor")
    workdir = store.root / "_rig"
    with RigSession(rig, workdir, console_sink=store.sink("console.log")) as session:
        yield session


@pytest.fixture(scope="session")
def rig(hil_session: RigSession) -> Rig:
    """The validated rig, with the twin's port paths filled in when it is virtual."""
    return hil_session.rig


@pytest.fixture(scope="session")
def broker(hil_session: RigSession):
    """The broker driver (its `connections()` tells protocol levels where it can)."""
    return hil_session.broker


@pytest.fixture(scope="session")
def power(hil_session: RigSession):
    """The modem's power switch, or None on a rig without one."""
    return hil_session.power


@pytest.fixture
def console(hil_session: RigSession):
    """The device console with its cursor at the start of this test."""
    hil_session.console.skip()
    return hil_session.console


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def hil_mqtt(
    hil_session: RigSession, request: pytest.FixtureRequest
) -> AsyncIterator[MqttRecorder]:
    profile = hil_session.rig.profile
    client = MqttRecorder(hil_session.endpoint, [profile.mqtt.status_topic])
    client.sink = request.config.stash[STORE_KEY].sink("mqtt.jsonl")
    async with client:
        yield client


@pytest.fixture
def mqtt(hil_mqtt: MqttRecorder) -> MqttRecorder:
    """The recording MQTT client with its cursor at the start of this test."""
    hil_mqtt.skip()
    return hil_mqtt


@pytest.fixture
def cipher(request: pytest.FixtureRequest) -> Cipher:
    """The echo cipher of the rig's profile (key and IV may come from the environment)."""
    rig = request.config.stash[RIG_KEY]
    if rig is None:
        from hil.profile import load_profile

        return load_profile().crypto.cipher()
    return rig.profile.crypto.cipher()


@pytest.fixture
def measurements(request: pytest.FixtureRequest) -> Measurements:
    """This test's measurements (written to measurements.json and JUnit properties)."""
    return request.node.stash[MEASUREMENTS_KEY]


@pytest.fixture
def dut(hil_session: RigSession, console, mqtt: MqttRecorder, measurements: Measurements) -> Dut:
    """The device under test, as the suites talk to it."""
    return Dut(hil_session.rig.profile, console, mqtt, hil_session.power, measurements)
