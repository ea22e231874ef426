"""The ESP32 application on a modem that carries bytes only: MQTT framed by the firmware.

`transport = "raw-tcp"` (seed 004): the same state machine as hil.sim.firmware, but the modem
offers SIM7000-style TCP commands (hil.sim.tcpip) and no MQTT service, so the firmware builds
and parses MQTT 3.1.1 itself (hil.sim.mqtt_frames) and keeps the connection alive on its own:

- CONNECT_GPRS: a connection left by the previous run of the chip gets a DISCONNECT and
  AT+CIPCLOSE; then AT+CIPSHUT, single connection, quick send (`DATA ACCEPT`, no round trip
  per send), manual receive (AT+CIPRXGET=1), AT+CSTT, AT+CIICR, AT+CIFSR. There is no TLS:
  UPLOAD_CERTIFICATE and SETUP_SSL have nothing to do.
- CONNECT_MQTT: AT+CIPSTART, then CONNECT (client id, keepalive, clean session, the
  profile's protocol level) and its CONNACK.
- SUBSCRIBE_MQTT: one SUBSCRIBE for the command and firmware topics, its SUBACK.
- RUNNING: PUBLISH at the profile's QoS, each QoS 1 one's PUBACK awaited within the same
  result timeout as a +CMQTTPUB; a QoS 1 PUBLISH from the broker is acknowledged at once.
  PINGREQ goes out once a keepalive passed with nothing sent, or nothing received; a
  PINGRESP that does not come within half a keepalive means the link is dead (so a silent
  link is found within 1.5 keepalives of the last packet heard), and so does `CLOSED`. A
  connection closed before its CONNACK or SUBACK was read fails that step, to be retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field

from hil.profile import DeviceProfile
from hil.sim import mqtt_frames
from hil.sim.atclient import AtError, AtTimeout
from hil.sim.firmware import APN, Firmware, LinkLost, StepFailed
from hil.sim.tcp_atclient import TcpAtClient

log = logging.getLogger("hil.sim.firmware")

MAX_SEND = 1460  # AT+CIPSEND's largest length
READ_SIZE = 1460  # AT+CIPRXGET=2's largest length
PINGRESP_WAIT = 0.5  # of a keepalive


def refusal(profile: DeviceProfile, tls: bool = False) -> str | None:
    """Why this firmware cannot serve `profile` (or a TLS broker), in one sentence; None if
    it can."""
    mqtt = profile.mqtt
    if tls:
        return (
            'transport "raw-tcp" frames MQTT over plain TCP; a TLS broker needs transport "cmqtt"'
        )
    if mqtt.protocol_level not in mqtt_frames.PROTOCOL_NAMES:
        return (
            f'transport "raw-tcp" speaks MQTT 3.1 and 3.1.1; profile mqtt.protocol_level '
            f'{mqtt.protocol_level} needs transport "cmqtt"'
        )
    if mqtt.qos not in (0, 1):
        return (
            f'transport "raw-tcp" publishes at QoS 0 or 1; profile mqtt.qos {mqtt.qos} needs '
            'transport "cmqtt"'
        )
    return None


@dataclass
class Connection:
    """One MQTT connection over the modem's TCP connection: what the firmware keeps in RAM."""

    opened_at: float
    decoder: mqtt_frames.Decoder = field(default_factory=mqtt_frames.Decoder)
    last_id: int = 0
    last_out: float = 0.0
    last_in: float = 0.0
    ping_sent: float | None = None
    connack: asyncio.Future[mqtt_frames.Connack] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    subacks: dict[int, asyncio.Future[mqtt_frames.Suback]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.last_out = self.last_in = self.opened_at

    def next_id(self) -> int:
        self.last_id = self.last_id % 0xFFFF + 1
        return self.last_id


class RawTcpFirmware(Firmware):
    """Firmware whose MQTT client is its own, over AT+CIPSTART/AT+CIPSEND/AT+CIPRXGET."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._at = TcpAtClient(kwargs["uart"], self._on_urc, self._on_data)  # type: ignore[arg-type]
        self._mqtt: Connection | None = None
        self._readable = asyncio.Event()
        self._received: list[mqtt_frames.Packet] = []
        self._unacked: deque[int] = deque()  # packet ids of _unconfirmed, in the same order
        self._client_id = ""

    async def _machine(self) -> None:
        receiver = self._loop.create_task(self._receive())
        try:
            await super()._machine()
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)

    # -- bearer -------------------------------------------------------------------------------

    async def _gprs(self) -> None:
        await self._close_leftover()
        await self._cmd("AT+CIPSHUT")
        for setting in ("AT+CIPMUX=0", "AT+CIPQSEND=1", "AT+CIPRXGET=1", f'AT+CSTT="{APN}"'):
            await self._cmd(setting)
        await self._cmd("AT+CIICR")
        await self._cmd("AT+CIFSR")

    async def _close_leftover(self) -> None:
        """A connection the previous run of the chip left open in the modem (it survives an
        ESP32 restart) takes its leave of the broker, as AT+CMQTTDISC would."""
        self._mqtt = None
        state = (await self._cmd("AT+CIPSTATUS", wait_for="STATE:"))[-1]
        if state == "STATE: CONNECT OK":
            with contextlib.suppress(AtError, AtTimeout):
                await self._send(mqtt_frames.disconnect())
                await self._cmd("AT+CIPCLOSE")

    async def _certificate(self) -> None:
        """Nothing to download: the link carries no TLS."""

    async def _ssl(self) -> None:
        """Nothing to configure: the link carries no TLS."""

    # -- MQTT ---------------------------------------------------------------------------------

    async def _mqtt_setup(self) -> None:
        if "takeover_loop" in self._faults and self._client_id:
            return  # the bug: one id for good, taken back at once
        millis = int((self._loop.time() - self._started_at) * 1000)
        self._client_id = f"{self._profile.mqtt.client_id_prefix}{millis}"

    async def _mqtt_connect(self) -> None:
        self._drop_stale_losses()
        self._mqtt = None
        host, port = self._broker
        result = (await self._cmd(f'AT+CIPSTART="TCP","{host}",{port}', wait_for="CONNECT"))[-1]
        if result != "CONNECT OK":
            raise StepFailed(result)
        mqtt = Connection(self._loop.time())
        self._mqtt = mqtt
        level = 3 if "mqtt_v31" in self._faults else self._profile.mqtt.protocol_level
        username = self._username
        frame = mqtt_frames.connect(
            self._client_id,
            self._profile.mqtt.keepalive_s,
            clean=True,
            level=level,
            username=username,
            password=(self._password or "") if username is not None else None,
        )
        try:
            await self._send(frame)
            connack = await self._answer(mqtt.connack, "CONNACK")
            if connack.return_code != 0:
                raise StepFailed(f"CONNACK refused the connection: {connack.return_code}")
        except (StepFailed, AtError, AtTimeout):
            self._mqtt = None
            with contextlib.suppress(AtError, AtTimeout):
                await self._cmd("AT+CIPCLOSE")
            raise
        self._lcd("MQTT Connected")

    async def _answer(self, future: asyncio.Future, what: str):  # type: ignore[no-untyped-def]
        """The broker's answer, within the result timeout; a closed connection fails it (a
        broker refusing a CONNECT may close before its CONNACK was read)."""
        try:
            return await asyncio.wait_for(asyncio.shield(future), self._result_timeout)
        except TimeoutError:
            raise StepFailed(f"no {what} within {self._result_timeout:.1f} s") from None
        except LinkLost as exc:
            raise StepFailed(f"no {what}: {exc}") from None

    async def _subscribe(self) -> None:
        mqtt = self._connection()
        qos = self._profile.mqtt.qos
        topics = [(self._profile.mqtt.command_topic, qos), (self._profile.mqtt.firmware_topic, qos)]
        packet_id = mqtt.next_id()
        suback = self._loop.create_future()
        mqtt.subacks[packet_id] = suback
        await self._send(mqtt_frames.subscribe(packet_id, topics))
        granted = (await self._answer(suback, "SUBACK")).granted
        if mqtt_frames.SUBACK_FAILURE in granted or len(granted) != len(topics):
            raise StepFailed(f"SUBACK refused a topic: {list(granted)}")

    async def _publish(self, payload: str, qos: int | None = None) -> None:
        """One PUBLISH; at QoS 1 its PUBACK is collected by the receiver, within the result
        timeout (`_result_deadline`), as the +CMQTTPUB of a module's MQTT service is."""
        mqtt = self._connection()
        qos = self._profile.mqtt.qos if qos is None else qos
        packet_id = mqtt.next_id() if qos else None
        topic = self._profile.mqtt.status_topic
        await self._send(mqtt_frames.publish(topic, payload.encode(), qos, packet_id))
        if packet_id is not None:
            self._unacked.append(packet_id)
            self._unconfirmed.append(self._loop.time() + self._result_timeout - self._at.rx_busy_s)

    def _connection(self) -> Connection:
        if self._mqtt is None:
            raise LinkLost("no MQTT connection")
        return self._mqtt

    async def _send(self, data: bytes) -> None:
        """Bytes to the broker, in pieces the modem takes at once."""
        for at in range(0, len(data), MAX_SEND):
            piece = data[at : at + MAX_SEND]
            await self._cmd(f"AT+CIPSEND={len(piece)}", data=piece)
        if self._mqtt is not None:
            self._mqtt.last_out = self._loop.time()

    # -- running ------------------------------------------------------------------------------

    async def _running(self) -> str:
        keepalive = self._loop.create_task(self._keepalive())
        try:
            return await super()._running()
        finally:
            keepalive.cancel()
            await asyncio.gather(keepalive, return_exceptions=True)
            self._unacked.clear()
            self._mqtt = None

    async def _keepalive(self) -> None:
        """PINGREQ after a keepalive of silence either way; no PINGRESP is a dead link."""
        period = float(self._profile.mqtt.keepalive_s)
        while (mqtt := self._mqtt) is not None:
            now = self._loop.time()
            if mqtt.ping_sent is not None:
                due = mqtt.ping_sent + period * PINGRESP_WAIT
                if now >= due and "no_keepalive_check" in self._faults:
                    mqtt.ping_sent = None  # the bug: pings, never misses an answer
                    continue
                if now >= due:
                    self._lost(f"no PINGRESP within {period * PINGRESP_WAIT:.1f} s")
                    return
            else:
                due = min(mqtt.last_out, mqtt.last_in) + period
                if now >= due:
                    try:
                        await self._send(mqtt_frames.pingreq())
                    except (AtError, AtTimeout) as exc:
                        self._lost(f"PINGREQ not sent: {exc}")
                        return
                    mqtt.ping_sent = self._loop.time()
                    continue
            await asyncio.sleep(due - now)

    def _lost(self, why: str) -> None:
        log.info("MQTT link lost: %s", why)
        self._inbox.put_nowait(LinkLost(why))

    def _on_urc(self, line: str) -> None:
        if line == "+CIPRXGET: 1":
            self._readable.set()
        elif line == "CLOSED":
            log.info("modem: %s", line)
            self._fail_waiters(LinkLost("the broker closed the connection"))
            self._inbox.put_nowait(LinkLost("the modem reported CLOSED"))
        else:
            super()._on_urc(line)

    def _fail_waiters(self, exc: Exception) -> None:
        mqtt = self._mqtt
        if mqtt is None:
            return
        for future in (mqtt.connack, *mqtt.subacks.values()):
            if not future.done():
                future.set_exception(exc)

    # -- receiving ----------------------------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        """Bytes of an AT+CIPRXGET=2 answer, as the UART brings them."""
        mqtt = self._mqtt
        if mqtt is None:
            return  # a connection this run of the chip no longer has
        mqtt.last_in = self._loop.time()
        try:
            self._received += mqtt.decoder.feed(data)
        except mqtt_frames.FrameError as exc:
            self._mqtt = None
            self._lost(f"broker sent a bad frame: {exc}")

    async def _receive(self) -> None:
        """Read whenever the modem says data came, until it holds no more."""
        while True:
            await self._readable.wait()
            self._readable.clear()
            try:
                while True:
                    lines = await self._cmd(f"AT+CIPRXGET=2,{READ_SIZE}")
                    await self._dispatch()
                    answer = next((x for x in lines if x.startswith("+CIPRXGET: 2,")), "")
                    if answer.rpartition(",")[2].strip() in ("", "0"):
                        break
            except (AtError, AtTimeout, LinkLost) as exc:
                self._lost(f"cannot read from the modem: {exc}")

    async def _dispatch(self) -> None:
        packets, self._received = self._received, []
        acks = b""
        mqtt = self._mqtt
        for packet in packets:
            if isinstance(packet, mqtt_frames.Publish):
                self._inbox.put_nowait((packet.topic, packet.payload))
                if packet.packet_id is not None:
                    acks += mqtt_frames.puback(packet.packet_id)
            elif isinstance(packet, mqtt_frames.Puback):
                self._confirm(packet.packet_id)
            elif mqtt is None:
                continue
            elif isinstance(packet, mqtt_frames.Connack) and not mqtt.connack.done():
                mqtt.connack.set_result(packet)
            elif isinstance(packet, mqtt_frames.Suback):
                waiter = mqtt.subacks.pop(packet.packet_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(packet)
            elif isinstance(packet, mqtt_frames.Pingresp):
                mqtt.ping_sent = None
        if acks:
            await self._send(acks)

    def _confirm(self, packet_id: int) -> None:
        if packet_id in self._unacked:
            at = self._unacked.index(packet_id)
            del self._unacked[at]
            del self._unconfirmed[at]
