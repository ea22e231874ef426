"""Bring-up takes as proof of its restart only a STATUS:ONLINE that comes after the pulse.

A board already running may publish STATUS:ONLINE just as the run begins (it was still
connecting), and a broker may hand a message on late: one that arrives while the board's
power is off was sent by the device's previous life. Taking it would start the tests while
the device boots. The relay here is a stand-in whose cut publishes such a message with
mosquitto_pub and whose power-on has the "restarted device" publish its own, later.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from hil.bringup import DeviceState
from hil.broker.mosquitto import MosquittoBroker, MosquittoOptions
from hil.mqtt import MqttRecorder
from hil.rig import load_rig
from tests.core.conftest import needs_mosquitto
from tests.waiting import until

pytestmark = needs_mosquitto
ROOT = Path(__file__).resolve().parents[2]
BOOT_S = 0.3  # how long the stand-in device takes from power-on to its STATUS:ONLINE


def mosquitto_pub(endpoint, topic: str, message: str) -> None:
    subprocess.run(
        [
            "mosquitto_pub",
            *("-h", endpoint.host, "-p", str(endpoint.port)),
            *("-t", topic, "-m", message, "-q", "1"),
        ],
        check=True,
        timeout=10,
    )


class Console:
    """A console that shows nothing: the proof must come from MQTT."""

    options = SimpleNamespace(reappear_s=0.0)
    is_open = True

    def mark(self) -> int:
        return 0

    def search(self, pattern: str, since: int) -> None:
        return None

    @contextlib.contextmanager
    def reboot_expected(self) -> Iterator[None]:
        yield


class Board:
    """The board's supply: its cut brings the old life's late ONLINE, its return a new one."""

    def __init__(self, endpoint, topic: str, mqtt: MqttRecorder) -> None:
        self.endpoint, self.topic, self.mqtt = endpoint, topic, mqtt

    def cycle(self, seconds: float) -> None:
        seen = len(self.mqtt.records)
        mosquitto_pub(self.endpoint, self.topic, "STATUS:ONLINE:1.0.0")
        # The late message is in before the power returns.
        until(lambda: len(self.mqtt.records) > seen, 10, "the recorder getting the late ONLINE")
        boot = threading.Timer(
            BOOT_S, mosquitto_pub, (self.endpoint, self.topic, "STATUS:ONLINE:2.0.0")
        )
        boot.start()


@pytest.fixture
def broker(tmp_path):
    driver = MosquittoBroker(MosquittoOptions(), tmp_path / "broker")
    endpoint = driver.start()
    yield endpoint
    driver.stop()


async def test_an_online_that_arrives_while_the_power_is_off_is_not_the_proof(broker) -> None:
    rig = load_rig(ROOT / "rigs" / "sim.toml")
    topic = rig.profile.mqtt.status_topic
    async with MqttRecorder(broker, [topic]) as mqtt:
        session = SimpleNamespace(rig=rig, console=Console(), reset=None, power=None)
        session.board_power = Board(broker, topic, mqtt)
        state = DeviceState(session, mqtt)  # type: ignore[arg-type]
        online = await state.bring_up()
    assert online is not None
    assert online.version == "2.0.0", f"bring-up took the old life's ONLINE: {online}"
    assert online.seconds >= BOOT_S
