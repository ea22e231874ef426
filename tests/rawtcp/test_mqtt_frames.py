"""The firmware's own MQTT codec (hil.sim.mqtt_frames) against independent ones.

What it builds is decoded by amqtt's packet parser and compared byte for byte with what
mosquitto_pub and mosquitto_sub send; what it parses comes from a real mosquitto.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import pytest
from amqtt.adapters import BufferReader
from amqtt.mqtt import packet_class
from amqtt.mqtt.packet import MQTTFixedHeader, MQTTPacket

from hil.broker import BrokerEndpoint
from hil.sim import mqtt_frames

TIMEOUT_S = 10.0

needs_clients = pytest.mark.skipif(
    shutil.which("mosquitto_pub") is None or shutil.which("mosquitto_sub") is None,
    reason="mosquitto-clients not installed",
)


def amqtt_decode(frame: bytes) -> MQTTPacket:
    """One whole packet by amqtt's parser, which must use every byte of `frame`."""

    async def decode() -> tuple[MQTTPacket, bytes]:
        reader = BufferReader(frame)
        header = await MQTTFixedHeader.from_stream(reader)
        assert header is not None
        packet = await packet_class(header).from_stream(reader, fixed_header=header)
        return packet, await reader.read()

    packet, rest = asyncio.run(decode())
    assert rest == b"", f"{len(rest)} bytes after the packet"
    return packet


@pytest.mark.parametrize(
    ("level", "name", "username", "password"),
    [(4, "MQTT", None, None), (3, "MQIsdp", None, None), (4, "MQTT", "dev", "s3cret")],
)
def test_connect_decodes_with_amqtt(
    level: int, name: str, username: str | None, password: str | None
) -> None:
    frame = mqtt_frames.connect(
        "ESP32_SIM7600_42", 60, clean=True, level=level, username=username, password=password
    )
    packet = amqtt_decode(frame)
    assert type(packet).__name__ == "ConnectPacket"
    assert (packet.proto_name, packet.proto_level) == (name, level)
    assert (packet.client_id, packet.keep_alive) == ("ESP32_SIM7600_42", 60)
    assert packet.clean_session_flag is True
    assert packet.will_flag is False
    assert (packet.username, packet.password) == (username, password)


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("size", [0, 1, 127, 128, 16384, 20000])  # 1, 2 and 3 length bytes
def test_publish_decodes_with_amqtt(qos: int, size: int) -> None:
    payload = bytes((i * 7 + 0x1A) % 256 for i in range(size))  # Ctrl-Z, NUL, every byte
    frame = mqtt_frames.publish("dev/esp32_status", payload, qos, 513 if qos else None)
    packet = amqtt_decode(frame)
    assert type(packet).__name__ == "PublishPacket"
    assert (packet.topic_name, packet.data, packet.qos) == ("dev/esp32_status", payload, qos)
    assert packet.packet_id == (513 if qos else None)
    assert (packet.retain_flag, packet.dup_flag) == (False, False)


def test_subscribe_puback_ping_and_disconnect_decode_with_amqtt() -> None:
    packet = amqtt_decode(mqtt_frames.subscribe(7, [("dev/server_cmd", 1), ("dev/fw", 0)]))
    assert type(packet).__name__ == "SubscribePacket"
    assert packet.variable_header.packet_id == 7
    assert [tuple(t) for t in packet.payload.topics] == [("dev/server_cmd", 1), ("dev/fw", 0)]
    assert amqtt_decode(mqtt_frames.puback(65535)).packet_id == 65535
    assert type(amqtt_decode(mqtt_frames.pingreq())).__name__ == "PingReqPacket"
    assert type(amqtt_decode(mqtt_frames.disconnect())).__name__ == "DisconnectPacket"


def captured_client(argv: list[str], expected: list[bytes], answers: list[bytes]) -> list[bytes]:
    """Run a mosquitto client against a socket that plays the broker: after reading as many
    bytes as each expected frame has, send the matching answer. Returns what was read."""

    async def scenario() -> list[bytes]:
        got: list[bytes] = []
        done = asyncio.get_running_loop().create_future()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                for frame, answer in zip(expected, answers, strict=True):
                    got.append(await reader.readexactly(len(frame)))
                    writer.write(answer)
                    await writer.drain()
            except asyncio.IncompleteReadError as exc:
                got.append(exc.partial)
            finally:
                writer.close()
                done.set_result(None)

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            *argv, "-h", "127.0.0.1", "-p", str(port), stdout=subprocess.DEVNULL
        )
        try:
            await asyncio.wait_for(done, TIMEOUT_S)
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()
            server.close()
        return got

    return asyncio.run(scenario())


@needs_clients
def test_connect_publish_and_disconnect_match_mosquitto_pubs_bytes() -> None:
    expected = [
        mqtt_frames.connect("probe-pub", 45, clean=True, level=4),
        mqtt_frames.publish("dev/esp32_status", b"STATUS:ONLINE:1.0.0", 1, 1),
        mqtt_frames.disconnect(),
    ]
    connack, puback = b"\x20\x02\x00\x00", b"\x40\x02\x00\x01"
    argv = ["mosquitto_pub", "-V", "mqttv311", "-i", "probe-pub", "-k", "45", "-q", "1"]
    argv += ["-t", "dev/esp32_status", "-m", "STATUS:ONLINE:1.0.0"]
    assert captured_client(argv, expected, [connack, puback, b""]) == expected


@needs_clients
def test_subscribe_matches_mosquitto_subs_bytes() -> None:
    expected = [
        mqtt_frames.connect("probe-sub", 30, clean=True, level=4),
        mqtt_frames.subscribe(1, [("dev/server_cmd", 1), ("dev/firmware/update", 1)]),
    ]
    connack = b"\x20\x02\x00\x00"
    argv = ["mosquitto_sub", "-V", "mqttv311", "-i", "probe-sub", "-k", "30", "-q", "1"]
    argv += ["-t", "dev/server_cmd", "-t", "dev/firmware/update"]
    assert captured_client(argv, expected, [connack, b""]) == expected


class BrokerLink:
    """A raw socket to mosquitto speaking the firmware's frames, decoded by its Decoder."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = mqtt_frames.Decoder()
        self.packets: list[mqtt_frames.Packet] = []

    async def send(self, frame: bytes) -> None:
        self.writer.write(frame)
        await self.writer.drain()

    async def next(self) -> mqtt_frames.Packet:
        """The next packet, the bytes fed one at a time (a TCP stream cut anywhere)."""
        while not self.packets:
            data = await asyncio.wait_for(self.reader.read(4096), TIMEOUT_S)
            assert data, "mosquitto closed the connection"
            for byte in data:
                self.packets += self.decoder.feed(bytes([byte]))
        return self.packets.pop(0)


@needs_clients
def test_mosquitto_accepts_the_frames_and_the_decoder_reads_its_answers(
    mosquitto: BrokerEndpoint,
) -> None:
    async def scenario() -> None:
        link = BrokerLink(*await asyncio.open_connection(mosquitto.host, mosquitto.port))
        try:
            await link.send(mqtt_frames.connect("rawtcp-codec", 60, clean=True, level=4))
            assert await link.next() == mqtt_frames.Connack(False, 0)
            topics = [("rawtcp/codec/cmd", 1), ("rawtcp/codec/fw", 0)]
            await link.send(mqtt_frames.subscribe(3, topics))
            assert await link.next() == mqtt_frames.Suback(3, (1, 0))

            await link.send(mqtt_frames.publish("rawtcp/codec/status", b"hello", 1, 4))
            assert await link.next() == mqtt_frames.Puback(4)

            payload = bytes(range(256)) * 4
            pub = await asyncio.create_subprocess_exec(
                "mosquitto_pub", "-h", mosquitto.host, "-p", str(mosquitto.port),
                "-q", "1", "-t", "rawtcp/codec/cmd", "-s",
                stdin=subprocess.PIPE,
            )  # fmt: skip
            await pub.communicate(payload)
            assert pub.returncode == 0
            message = await link.next()
            assert isinstance(message, mqtt_frames.Publish)
            assert (message.topic, message.payload, message.qos) == ("rawtcp/codec/cmd", payload, 1)
            assert message.packet_id is not None
            await link.send(mqtt_frames.puback(message.packet_id))

            await link.send(mqtt_frames.pingreq())
            assert await link.next() == mqtt_frames.Pingresp()
            await link.send(mqtt_frames.disconnect())
            assert await asyncio.wait_for(link.reader.read(), TIMEOUT_S) == b""
        finally:
            link.writer.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x10\x00", "packet type 1"),  # a CONNECT: a broker never sends one
        (b"\x20\x03\x00\x00\x00", "3 bytes"),  # CONNACK is 2
        (b"\x36\x05\x00\x01ab\x00", "QoS 3"),
        (b"\xd0\xff\xff\xff\xff\x01", "four bytes"),
        (b"\x92\x03\x00\x01\x01", "reserved flags"),
        (b"\x90\x02\x00\x01", "without a return code"),
    ],
)
def test_decoder_refuses_what_no_broker_sends(data: bytes, why: str) -> None:
    with pytest.raises(mqtt_frames.FrameError, match=why):
        mqtt_frames.Decoder().feed(data)
