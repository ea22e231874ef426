"""The twin behaves like a bench device, proven from outside: MQTT through mosquitto's own
clients and log, the console through pyserial, power through LCUS frames on the relay port.

Both relay channels are wired normally closed (an energized coil cuts that supply): channel 1
is the modem's supply, channel 2 the whole board's.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import serial

from hil.broker.mosquitto import MosquittoBroker, MosquittoOptions
from hil.power.lcus import encode_frame
from hil.profile import DeviceProfile, load_profile
from hil.protocol import ota
from hil.protocol.image import build_image
from hil.sim.options import SimOptions
from hil.sim.process import TwinPorts, TwinProcess
from tests.sim.rig import ConsoleLog, StatusWatch, VirtualRig, openssl_encrypt, publish
from tests.waiting import until

TIME_SCALE = 0.02
RETRY_DELAY_S = 0.2
MODEM_CHANNEL = 1
BOARD_CHANNEL = 2
TIMEOUT_S = 15.0
IMAGE_SIZE = 6000
POWERON = r"^rst:0x1 \(POWERON_RESET\)"
SW_RESET = r"^rst:0xc \(RTC_SW_CPU_RST\)"
BOOT_LINE = re.compile(r"^rst:|^Firmware \S+ starting$")
_counter = itertools.count()


@dataclass
class Device:
    """A running twin, reached only through its ports and the broker."""

    ports: TwinPorts
    profile: DeviceProfile
    host: str
    port: int
    status: StatusWatch | None  # subscribed before the twin started, when asked for

    @property
    def status_topic(self) -> str:
        return self.profile.mqtt.status_topic

    def relay(self, channel: int, energized: bool) -> None:
        with serial.Serial(str(self.ports.relay), 9600, timeout=1) as relay:
            relay.write(encode_frame(channel, energized))
            relay.flush()

    def board_power(self, on: bool) -> None:
        self.relay(BOARD_CHANNEL, not on)  # normally closed: the coil energized cuts it

    def modem_power(self, on: bool) -> None:
        self.relay(MODEM_CHANNEL, not on)

    def echo(self, text: str) -> None:
        key, iv = self.profile.crypto.key.encode(), self.profile.crypto.iv.encode()
        publish(
            self.host, self.port, self.profile.mqtt.command_topic, [openssl_encrypt(text, key, iv)]
        )

    def rig(self, console: ConsoleLog, status: StatusWatch) -> VirtualRig:
        return VirtualRig(self.ports, self.profile, self.host, self.port, console, status)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A mosquitto of this test alone (log_type all): its log holds only this device's clients."""
    broker = MosquittoBroker(MosquittoOptions(), tmp_path / "broker")
    broker.endpoint = broker.start()  # type: ignore[attr-defined]
    yield broker
    broker.stop()


@pytest.fixture
def launch(mosquitto: MosquittoBroker, tmp_path: Path) -> Iterator[Callable[..., Device]]:
    """`launch(console=..., heartbeat_s=..., broker=..., watch=...)`: a twin, its console unread.

    Unlike `start_twin`, nothing reads its console: the test opens it when it wants to, as a
    host meets a bench device that is already running. With `watch` (the default) its status
    topic is followed from before it starts, and `launch` returns once it said ONLINE; without,
    nobody listens to it either.
    """
    cleanups: list[Callable[[], None]] = []

    def start(
        console: str = "native-usb",
        heartbeat_s: float = 2.0,
        broker: MosquittoBroker | None = None,
        watch: bool = True,
    ) -> Device:
        endpoint = (broker or mosquitto).endpoint  # type: ignore[attr-defined]
        n = next(_counter)
        profile = load_profile(
            overrides={
                "firmware": {"retry_delay_s": RETRY_DELAY_S, "heartbeat_s": heartbeat_s},
                "mqtt": {
                    "command_topic": f"hw{n}/server_cmd",
                    "firmware_topic": f"hw{n}/firmware/update",
                    "status_topic": f"hw{n}/esp32_status",
                },
            }
        )
        status = None
        if watch:
            status = StatusWatch(endpoint.host, endpoint.port, profile.mqtt.status_topic)
            cleanups.append(status.close)
        twin = TwinProcess()
        cleanups.append(twin.stop)
        options = SimOptions(time_scale=TIME_SCALE, console=console)
        ports = twin.start(
            tmp_path / f"hw{n}", f"{endpoint.host}:{endpoint.port}", profile, options
        )
        if status is not None:
            status.expect(r"STATUS:ONLINE:1\.0\.0", TIMEOUT_S)
        return Device(ports, profile, endpoint.host, endpoint.port, status)

    yield start
    for cleanup in reversed(cleanups):
        cleanup()


@pytest.fixture
def closing() -> Iterator[Callable]:
    """`closing(thing)` returns `thing` and closes it at the end of the test."""
    things: list = []

    def keep(thing):  # type: ignore[no-untyped-def]
        things.append(thing)
        return thing

    yield keep
    for thing in reversed(things):
        thing.close()


def device_publishes(log: str, topic: str) -> list[re.Match[str]]:
    """mosquitto's `Received PUBLISH` lines from the device on `topic` (retain flag in `r`)."""
    pattern = (
        r"Received PUBLISH from (?P<client>ESP32_SIM7600_\d+) "
        rf"\(d\d, q\d, r(?P<r>\d), m\d+, '{re.escape(topic)}', \.\.\. \((?P<size>\d+) bytes\)\)"
    )
    return list(re.finditer(pattern, log))


def device_connections(broker: MosquittoBroker) -> list[str]:
    return [
        c["client_id"] for c in broker.connections() if c["client_id"].startswith("ESP32_SIM7600_")
    ]


def test_device_comes_online_before_anyone_connects_and_online_is_not_retained(
    own_broker, launch, closing
):
    """Like a bench left running: it boots, connects and says ONLINE with nobody listening;
    a subscriber that comes later gets no ONLINE (not retained), yet the device answers."""
    device = launch(heartbeat_s=60.0, broker=own_broker, watch=False)  # and no heartbeat
    online = len("STATUS:ONLINE:1.0.0")

    def said_online() -> list[re.Match[str]]:
        found = device_publishes(own_broker.log_path.read_text(), device.status_topic)
        return [m for m in found if int(m["size"]) == online]

    until(said_online, TIMEOUT_S, "the device's STATUS:ONLINE publish (in the broker's log)")
    assert [m["r"] for m in said_online()] == ["0"], "STATUS:ONLINE must be published unretained"
    # -W 2: how long a retained message gets to arrive (mosquitto sends one at SUBACK).
    wait = ["-C", "1", "-W", "2", "-F", "%r %p"]
    where = ["-h", device.host, "-p", str(device.port), "-t", device.status_topic]
    late = subprocess.run(
        ["mosquitto_sub", *where, *wait], capture_output=True, text=True, timeout=10
    )
    assert late.stdout == "", f"a late subscriber got {late.stdout!r}: a retained message"
    assert late.returncode == 27, f"mosquitto_sub did not time out: {late.stderr}"
    status = closing(StatusWatch(device.host, device.port, device.status_topic))
    device.echo("already up")
    status.expect("already up", TIMEOUT_S)
    assert not any(m.startswith("STATUS:ONLINE") for m in status.messages), status.messages


def test_native_usb_console_keeps_nothing_for_the_host(launch, closing):
    """Opened late, the console has no boot lines; what the chip prints while the port is
    closed is gone; what it prints while the port is open arrives."""
    device = launch(heartbeat_s=0.5)
    status = device.status  # the device is online: it booted before the console was opened

    console = closing(ConsoleLog(device.ports.console))
    device.echo("first")
    console.expect(r"^LCD: MQTT Msg: first$", TIMEOUT_S)
    console.expect(r"^LED: ", TIMEOUT_S)
    console.close()
    assert not [line for line in console.lines if BOOT_LINE.search(line)], console.lines

    mark = status.mark()
    device.echo("unheard")
    index, _ = status.expect("unheard", TIMEOUT_S, mark)
    # The heartbeat comes after the command's LCD and LED lines in the firmware's one loop.
    status.expect(r"STATUS:HEARTBEAT:\d+", TIMEOUT_S, index + 1)

    reopened = closing(ConsoleLog(device.ports.console))
    device.echo("heard")
    reopened.expect(r"^LCD: MQTT Msg: heard$", TIMEOUT_S)
    reopened.expect(r"^LED: ", TIMEOUT_S)
    assert not [line for line in reopened.lines if "unheard" in line], reopened.lines


def test_board_relay_stops_the_device_and_a_release_cold_boots_it(launch, closing):
    """Channel 2 energized: the chip stops (no heartbeat) and its native USB port leaves the
    bus; released: the port is re-made, the device boots and says ONLINE again."""
    device = launch(heartbeat_s=0.5)
    link = device.ports.console
    status = device.status
    status.expect(r"STATUS:HEARTBEAT:\d+", TIMEOUT_S)
    console = closing(ConsoleLog(link))
    until(lambda: console.ports_seen, TIMEOUT_S, "the console reader opening the port")

    device.board_power(False)
    until(lambda: not link.exists(), TIMEOUT_S, "the console port leaving with the board's power")
    # The stimulus: the board held off 1.75 s, 0.25 s for what was already on its way to
    # land, then three heartbeat periods that must pass in silence.
    time.sleep(0.25)
    mark = status.mark()
    time.sleep(1.5)
    assert status.messages[mark:] == [], "the device published with its board unpowered"
    assert not link.exists(), "the console port came back while the board had no power"

    device.board_power(True)
    until(link.exists, TIMEOUT_S, "the console port coming back with the board's power")
    assert Path(link.resolve()).exists(), "the console link names no pty"
    status.expect(r"STATUS:ONLINE:1\.0\.0", TIMEOUT_S, mark)
    status.expect(r"STATUS:HEARTBEAT:\d+", TIMEOUT_S, mark)
    until(
        lambda: len(console.ports_seen) >= 2, TIMEOUT_S, "the console reader reopening the new port"
    )
    device.echo("cold booted")
    console.expect(r"^LCD: MQTT Msg: cold booted$", TIMEOUT_S)


def test_uart_bridge_port_stays_and_shows_each_restart_banner(launch, closing):
    """A UART bridge keeps its port (one pty node, no read error: the reader never reopens),
    so the host sees the ROM banner of a cold boot and of an OTA reboot."""
    device = launch(console="uart-bridge")
    console = closing(ConsoleLog(device.ports.console))
    status = device.status
    rig = device.rig(console, status)
    until(lambda: console.ports_seen, TIMEOUT_S, "the console reader opening the port")
    node = console.ports_seen[0]

    mark, smark = console.mark(), status.mark()
    device.board_power(False)
    time.sleep(0.3)  # how long the board is held off: the stimulus
    device.board_power(True)
    index, _ = console.expect(POWERON, TIMEOUT_S, mark)
    console.expect(r"^Firmware 1\.0\.0 starting$", TIMEOUT_S, index)
    rig.wait_online("1.0.0", smark)

    mark = console.mark()
    image = build_image("2.0.0", size=IMAGE_SIZE)
    smark = rig.ota_push(image)
    rig.firmware(ota.END)
    status.expect(ota.SUCCESS, TIMEOUT_S, smark)
    index, _ = console.expect(r"^Rebooting\.\.\.$", TIMEOUT_S, mark)
    index, _ = console.expect(SW_RESET, TIMEOUT_S, index)
    console.expect(r"^Firmware 2\.0\.0 starting$", TIMEOUT_S, index)
    rig.wait_online("2.0.0", smark)
    assert console.ports_seen == [node], "the UART bridge's port was re-opened"
    assert str(device.ports.console.resolve()) == node, "the UART bridge's port node changed"


def test_modem_power_cut_is_silent_to_the_broker_and_does_not_reset_the_chip(
    own_broker, launch, closing
):
    """Channel 1 cuts only the modem: the chip keeps running (no banner, `Network lost`), and
    the broker is never told the old connection ended (it drops it after 1.5 x keepalive =
    90 s, long after this test); the device comes back under a new client id."""
    device = launch(console="uart-bridge", broker=own_broker)
    console = closing(ConsoleLog(device.ports.console))
    status = device.status
    until(lambda: console.ports_seen, TIMEOUT_S, "the console reader opening the port")
    (old,) = device_connections(own_broker)
    log_before = len(own_broker.log_path.read_text())

    mark, smark = console.mark(), status.mark()
    device.modem_power(False)
    index, _ = console.expect(r"^Network lost$", TIMEOUT_S, mark)
    device.modem_power(True)
    console.expect(r"^State: STATE_SUBSCRIBE_MQTT -> STATE_RUNNING$", TIMEOUT_S, index)
    status.expect(r"STATUS:ONLINE:1\.0\.0", TIMEOUT_S, smark)  # a reconnection says ONLINE
    until(
        lambda: len(device_connections(own_broker)) == 2,
        TIMEOUT_S,
        "the device's second connection",
    )
    new = device_connections(own_broker)[1]
    assert new != old, "the device reconnected under its old client id"

    after = own_broker.log_path.read_text()[log_before:]
    ended = re.compile(
        rf"{re.escape(old)}\b.*(closed its connection|disconnect|Socket error|exceeded timeout)"
        rf"|(closed its connection|disconnect|Socket error|exceeded timeout).*{re.escape(old)}\b",
        re.IGNORECASE,
    )
    told = [line for line in after.splitlines() if ended.search(line)]
    assert told == [], f"the broker learned that the powered-off modem's session ended: {told}"
    assert not [line for line in console.lines[mark:] if line.startswith("rst:")], (
        "the modem's supply reset the chip"
    )
    assert len(console.ports_seen) == 1, "the console port was re-opened"
