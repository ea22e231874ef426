"""The raw-TCP firmware keeps its MQTT connection itself: PINGREQ after a keepalive of
silence, a PINGRESP that does not come is a dead link, found within 1.5 keepalives, and a
refused CONNECT is tried again.

The broker is played by the test, its frames read by amqtt's parser, so a silent link can be
made without closing it (the dead zone a keepalive must detect).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from amqtt.adapters import StreamReaderAdapter
from amqtt.mqtt import packet_class
from amqtt.mqtt.packet import MQTTFixedHeader, MQTTPacket

from hil.profile import load_profile
from hil.sim.options import SimOptions
from hil.sim.process import TwinProcess

KEEPALIVE_S = 2
SLACK_S = 1.0  # a shared, busy CPU's lateness for one timer
RECOVERY_S = 6.0  # from the dead link found to the next CONNECT: modem, bearer, TCP
TIMEOUT_S = 20.0
CONNACK, PINGRESP = b"\x20\x02\x00\x00", b"\xd0\x00"
NOT_AUTHORIZED = b"\x20\x02\x00\x05"  # CONNACK return code 5


@dataclass
class Frame:
    at: float
    connection: int
    packet: MQTTPacket
    quiet_since: float  # the last packet before this one, either way

    @property
    def kind(self) -> str:
        return type(self.packet).__name__.removesuffix("Packet")


class Broker:
    """Answers CONNECT (refusing the first `refuse` ones, then closing, as brokers do),
    SUBSCRIBE, QoS 1 PUBLISH and, unless silenced, PINGREQ."""

    def __init__(self, refuse: int = 0) -> None:
        self.refuse = refuse
        self.frames: asyncio.Queue[Frame] = asyncio.Queue()
        self.last_sent = 0.0
        self.last_heard = 0.0
        self.answer_pings = True
        self._connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        connection = self._connections
        stream = StreamReaderAdapter(reader)
        loop = asyncio.get_running_loop()
        try:
            while (header := await MQTTFixedHeader.from_stream(stream)) is not None:
                packet = await packet_class(header).from_stream(stream, fixed_header=header)
                now = loop.time()
                quiet_since = max(self.last_sent, self.last_heard)
                self.frames.put_nowait(Frame(now, connection, packet, quiet_since))
                self.last_heard = now
                answer = self._answer(packet)
                if answer:
                    writer.write(answer)
                    await writer.drain()
                    self.last_sent = loop.time()
                if answer == NOT_AUTHORIZED:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _answer(self, packet: MQTTPacket) -> bytes:
        kind = type(packet).__name__
        if kind == "ConnectPacket":
            self.refuse -= 1
            return NOT_AUTHORIZED if self.refuse >= 0 else CONNACK
        if kind == "SubscribePacket":
            granted = bytes(qos for _, qos in packet.payload.topics)
            body = packet.variable_header.packet_id.to_bytes(2, "big") + granted
            return bytes([0x90, len(body)]) + body
        if kind == "PublishPacket" and packet.qos == 1:
            return b"\x40\x02" + packet.packet_id.to_bytes(2, "big")
        if kind == "PingReqPacket" and self.answer_pings:
            return PINGRESP
        return b""

    async def next(self, kind: str) -> Frame:
        while True:
            frame = await asyncio.wait_for(self.frames.get(), TIMEOUT_S)
            if frame.kind == kind:
                return frame


def test_pingreq_after_a_keepalive_and_a_silent_link_found_within_one_and_a_half(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        broker = Broker()
        server = await asyncio.start_server(broker.serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        profile = load_profile(
            overrides={
                "firmware": {"retry_delay_s": 0.2, "heartbeat_s": 600.0},
                "mqtt": {"keepalive_s": KEEPALIVE_S},
            }
        )
        options = SimOptions(time_scale=0.02, transport="raw-tcp")
        twin = TwinProcess()
        try:
            await asyncio.to_thread(
                twin.start, tmp_path / "twin", f"127.0.0.1:{port}", profile, options
            )
            connect = await broker.next("Connect")
            assert connect.packet.keep_alive == KEEPALIVE_S
            assert connect.packet.clean_session_flag is True
            online = await broker.next("Publish")
            assert online.packet.data.startswith(b"STATUS:ONLINE:")

            ping = await broker.next("PingReq")
            assert KEEPALIVE_S - 0.1 <= ping.at - ping.quiet_since <= KEEPALIVE_S + SLACK_S

            broker.answer_pings = False  # the link goes silent, nothing is closed
            heard = broker.last_sent
            unanswered = await broker.next("PingReq")
            assert unanswered.connection == ping.connection
            again = await broker.next("Connect")
            assert again.connection > ping.connection
            found_by = heard + 1.5 * KEEPALIVE_S
            assert found_by - 0.1 <= again.at <= found_by + SLACK_S + RECOVERY_S
        finally:
            await asyncio.to_thread(twin.stop)
            server.close()

    asyncio.run(scenario())


def test_a_refused_connect_is_tried_again_until_accepted(tmp_path: Path) -> None:
    async def scenario() -> None:
        broker = Broker(refuse=2)
        server = await asyncio.start_server(broker.serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        profile = load_profile(overrides={"firmware": {"retry_delay_s": 0.2}})
        twin = TwinProcess()
        try:
            await asyncio.to_thread(
                twin.start,
                tmp_path / "twin",
                f"127.0.0.1:{port}",
                profile,
                SimOptions(time_scale=0.02, transport="raw-tcp"),
            )
            connects = [await broker.next("Connect") for _ in range(3)]
            assert [c.connection for c in connects] == [1, 2, 3]
            online = await broker.next("Publish")
            assert online.connection == 3
            assert online.packet.data.startswith(b"STATUS:ONLINE:")
        finally:
            await asyncio.to_thread(twin.stop)
            server.close()

    asyncio.run(scenario())
