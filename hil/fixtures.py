"""The fixtures suites use: rig, broker, power, board_power, console, mqtt, cipher,
measurements and dut.

Rig-wide resources live for the session (one bring-up per run); each test gets a fresh
cursor, so it only sees what happened during it. Every rig fixture goes through bring-up
(`hil_device`): the device is restarted into a known state before the first rig test, and a
rig that cannot do that makes every rig test error with one diagnosis. Registered by the
`pytest11` entry point.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from hil.bringup import DeviceState, RigDown
from hil.dut import Dut
from hil.firmware import FIRMWARE_KEY
from hil.firmware.install import bring_up
from hil.measurements import Measurements
from hil.mqtt import MqttRecorder
from hil.plugin import DEVICE_KEY, MEASUREMENTS_KEY, POOL_KEY, RIG_KEY, rig_run
from hil.pool import RigRun
from hil.protocol.crypto import Cipher
from hil.rig import Rig
from hil.schema import ConfigError
from hil.session import RigSession


@pytest.fixture(scope="session")
def hil_rig(request: pytest.FixtureRequest) -> RigRun:
    """The rig this test runs on: the run's rig, the one this process claimed from the pool,
    or under --each-rig the one the test's id names."""
    pool = request.config.stash.get(POOL_KEY, None)
    if pool is None:
        raise ConfigError("", "no rig file: pass --rig PATH (for example rigs/sim.toml)")
    if hasattr(request, "param"):
        return pool.run(request.param)
    if pool.spread:
        claimed = pool.claim(bool(request.config.getoption("--hil-doctor")))
        if claimed is None:
            raise RigDown(pool.claim_error)
        return claimed
    return pool.run(pool.rigs[0].name)


@pytest.fixture(scope="session")
def hil_session(hil_rig: RigRun, request: pytest.FixtureRequest) -> Iterator[RigSession]:
    """The rig brought up once for the run and given back at its end (under --each-rig, when
    the tests move on to the next rig)."""
    pool = request.config.stash[POOL_KEY]
    if hil_rig.session is None and hil_rig.down is None:
        pool.open(hil_rig, bool(request.config.getoption("--hil-doctor")))
    if hil_rig.down is not None:  # a rig fault: every test on it errors with this one message
        raise RigDown(hil_rig.down)
    try:
        yield hil_rig.session
    finally:
        hil_rig.close()


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


@pytest.fixture(scope="session")
def board_power(hil_session: RigSession):
    """The whole device's power switch ([board_power]), or None on a rig without one."""
    return hil_session.board_power


@pytest.fixture
def console(hil_session: RigSession, hil_device: DeviceState):
    """The device console with its cursor at the start of this test."""
    hil_session.console.skip()
    return hil_session.console


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def hil_mqtt(hil_session: RigSession, hil_rig: RigRun) -> AsyncIterator[MqttRecorder]:
    """The recorder, subscribed before bring-up restarts the device, so no answer is missed."""
    profile = hil_session.rig.profile
    client = MqttRecorder(hil_session.endpoint, [profile.mqtt.status_topic])
    client.sink = hil_rig.store.sink("mqtt.jsonl")
    try:
        await client.__aenter__()
    except Exception as exc:
        raise RigDown(f"rig {hil_session.rig.name!r}: {type(exc).__name__}: {exc}") from exc
    try:
        yield client
    finally:
        await client.__aexit__(None, None, None)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def hil_device(
    hil_session: RigSession,
    hil_mqtt: MqttRecorder,
    hil_rig: RigRun,
    request: pytest.FixtureRequest,
) -> DeviceState:
    """The device restarted into a known state (or the reason it could not be), running the
    firmware under test when the run names one (`--firmware`)."""
    state = DeviceState(hil_session, hil_mqtt)
    request.config.stash[DEVICE_KEY] = hil_rig.device = state
    online = await bring_up(state, request.config)
    hil_rig.firmware = request.config.stash.get(FIRMWARE_KEY, None)
    if online is not None:
        request.config.hook.pytest_hil_online(
            config=request.config, rig=hil_session.rig, online=online
        )
    return state


@pytest.fixture
def mqtt(hil_mqtt: MqttRecorder, hil_device: DeviceState) -> MqttRecorder:
    """The recording MQTT client with its cursor at the start of this test."""
    hil_mqtt.skip()
    return hil_mqtt


@pytest.fixture
def cipher(request: pytest.FixtureRequest) -> Cipher:
    """The echo cipher of the rig's profile (key and IV may come from the environment)."""
    run = rig_run(request.node)
    rig = run.rig if run is not None else request.config.stash[RIG_KEY]
    if rig is None:
        from hil.profile import load_profile

        return load_profile().crypto.cipher()
    return rig.profile.crypto.cipher()


@pytest.fixture
def measurements(request: pytest.FixtureRequest) -> Measurements:
    """This test's measurements (written to measurements.json and JUnit properties)."""
    return request.node.stash[MEASUREMENTS_KEY]


@pytest.fixture
def dut(
    hil_session: RigSession,
    hil_device: DeviceState,
    console,
    mqtt: MqttRecorder,
    measurements: Measurements,
) -> Dut:
    """The device under test, as the suites talk to it."""
    return Dut(
        hil_session.rig.profile,
        console,
        mqtt,
        hil_session.power,
        measurements,
        state=hil_device,
        restart_banner=getattr(hil_session.rig.console.options, "survives_reset", False),
    )
