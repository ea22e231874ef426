"""The fixtures suites use: rig, broker, power, board_power, console, mqtt, cipher,
measurements and dut.

Rig-wide resources live for the session (one bring-up per run); each test gets a fresh
cursor, so it only sees what happened during it. Every rig fixture goes through bring-up
(`hil_device`): the device is restarted into a known state before the first rig test, and a
rig that cannot do that makes every rig test error with one diagnosis. Registered by the
`pytest11` entry point.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import pytest_asyncio

from hil.bringup import DeviceState, RigDown
from hil.dut import Dut
from hil.firmware.install import bring_up
from hil.measurements import Measurements
from hil.mqtt import MqttRecorder
from hil.plugin import DEVICE_KEY, MEASUREMENTS_KEY, RIG_KEY, STORE_KEY
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
    session = RigSession(
        rig,
        store.root / "_rig",
        console_sink=store.sink("console.log"),
        notice=_terminal_notice(request.config),
    )
    try:
        if request.config.getoption("--hil-doctor"):
            from hil.doctor import check_rig

            check_rig(rig, store.root / "_doctor")
        session.start()
    except Exception as exc:  # a rig fault: every rig test errors with this one message
        raise RigDown(
            f"rig {rig.name!r} could not be brought up: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        yield session
    finally:
        session.close()


def _terminal_notice(config: pytest.Config) -> Callable[[str], None] | None:
    """A line on the terminal at once, past pytest's capture: a place's queue while it waits."""
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if terminal is None or capture is None:
        return None

    def notice(text: str) -> None:
        with capture.global_and_fixture_disabled():
            terminal.write_line(text)

    return notice


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
async def hil_mqtt(
    hil_session: RigSession, request: pytest.FixtureRequest
) -> AsyncIterator[MqttRecorder]:
    """The recorder, subscribed before bring-up restarts the device, so no answer is missed."""
    profile = hil_session.rig.profile
    client = MqttRecorder(hil_session.endpoint, [profile.mqtt.status_topic])
    client.sink = request.config.stash[STORE_KEY].sink("mqtt.jsonl")
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
    hil_session: RigSession, hil_mqtt: MqttRecorder, request: pytest.FixtureRequest
) -> DeviceState:
    """The device restarted into a known state (or the reason it could not be), running the
    firmware under test when the run names one (`--firmware`)."""
    state = DeviceState(hil_session, hil_mqtt)
    request.config.stash[DEVICE_KEY] = state
    online = await bring_up(state, request.config)
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
