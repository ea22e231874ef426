"""The codec on the specification's own examples and on bytes real clients sent.

mosquitto_pub at MQTT 3.1, 3.1.1 and 5 (with v5 properties on CONNECT, will and PUBLISH) talks
to a bare socket that answers the specification's CONNACK; what it sent is split and parsed,
and every field must be what the command line asked for. Random bytes only ever give a packet
or a MalformedPacket.
"""

from __future__ import annotations

import socket
import subprocess
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.proxy.codec import (
    MalformedPacket,
    PacketType,
    Will,
    connack,
    parse,
    remaining_length,
    split,
    topic_matches,
    with_dup,
)
from tests.proxy.conftest import MOSQUITTO_VERSIONS, needs_mosquitto

# MQTT 3.1.1 §2.2.3, table 2.4: the bounds of each remaining-length size.
SPEC_LENGTHS = [
    (0, "00"),
    (127, "7f"),
    (128, "8001"),
    (16_383, "ff7f"),
    (16_384, "808001"),
    (2_097_151, "ffff7f"),
    (2_097_152, "80808001"),
    (268_435_455, "ffffff7f"),
]
# MQTT 3.1.1 §3.2 / MQTT 5 §3.2: CONNACK accepted, no session.
ACCEPTED = {
    3: bytes.fromhex("20020000"),
    4: bytes.fromhex("20020000"),
    5: bytes.fromhex("2003000000"),
}


@pytest.mark.parametrize(("length", "encoded"), SPEC_LENGTHS)
def test_remaining_length_matches_the_specification(length: int, encoded: str) -> None:
    assert remaining_length(length).hex() == encoded
    header = bytes([0x30]) + bytes.fromhex(encoded)
    if length > 2_097_152:  # a quarter gigabyte of body is not needed to read its length
        assert split(header + b"\0" * 1024) is None
        return
    first, body, rest = split(header + b"\0" * length + b"x")
    assert (first, len(body), rest) == (0x30, length, b"x")


def test_split_waits_for_a_whole_packet_and_refuses_a_fifth_length_byte() -> None:
    assert split(b"\x30") is None
    assert split(b"\x30\x05abc") is None
    with pytest.raises(MalformedPacket, match="four bytes"):
        split(b"\x30\xff\xff\xff\xff\x01")


def capture(level: int, *args: str) -> list:
    """The packets mosquitto_pub sends to a socket that accepts its CONNECT and PUBLISH."""
    server = socket.create_server(("127.0.0.1", 0))
    received = bytearray()

    def serve() -> None:
        conn, _ = server.accept()
        pending = b""
        with conn:
            conn.settimeout(5)
            while chunk := conn.recv(65536):
                received.extend(chunk)
                pending += chunk
                while found := split(pending):
                    header, body, pending = found
                    if header >> 4 == PacketType.CONNECT:
                        conn.sendall(ACCEPTED[level])
                    elif header >> 4 == PacketType.PUBLISH and header & 0x06:
                        topic_end = 2 + int.from_bytes(body[:2], "big")
                        conn.sendall(b"\x40\x02" + body[topic_end : topic_end + 2])  # PUBACK

    thread = threading.Thread(target=serve)
    thread.start()
    port = server.getsockname()[1]
    version = MOSQUITTO_VERSIONS[level]
    done = subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-V", version, *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    thread.join(10)
    server.close()
    assert done.returncode == 0, done.stderr
    packets, data = [], bytes(received)
    while data:
        header, body, data = split(data)
        packets.append(parse(header, body, level if packets else None))
    return packets


V5_PROPERTIES = [
    *("-D", "connect", "session-expiry-interval", "30"),
    *("-D", "connect", "user-property", "rig", "virtual"),
    *("-D", "will", "user-property", "why", "gone"),
    *("-D", "publish", "user-property", "k", "v"),
    *("-D", "publish", "message-expiry-interval", "60"),
]


@needs_mosquitto
@pytest.mark.parametrize("level", [3, 4, 5])
def test_packets_of_mosquitto_pub_parse_to_what_its_command_line_asked(level: int) -> None:
    extra = V5_PROPERTIES if level == 5 else []
    packets = capture(
        level,
        *("-i", "ESP32_SIM7600_1234", "-k", "17", "-u", "lab", "-P", "not-recorded"),
        *("--will-topic", "esp32_status", "--will-payload", "gone", "--will-qos", "1"),
        "--will-retain",
        *("-t", "firmware/update", "-m", "Zm9vYmFy", "-q", "0", "-r"),
        *extra,
    )
    assert [p.type for p in packets] == [
        PacketType.CONNECT,
        PacketType.PUBLISH,
        PacketType.DISCONNECT,
    ]
    connect, publish = packets[0].fields, packets[1].fields
    assert connect == {
        "protocol_name": "MQIsdp" if level == 3 else "MQTT",
        "level": level,
        "client_id": "ESP32_SIM7600_1234",
        "clean_session": True,
        "keepalive": 17,
        "will": Will("esp32_status", 1, True),
        "username": "lab",
        "password": True,
    }
    assert "not-recorded" not in repr(packets[0])
    assert publish == {
        "topic": "firmware/update",
        "qos": 0,
        "retain": True,
        "dup": False,
        "packet_id": None,
        "size": len("Zm9vYmFy"),
    }


@needs_mosquitto
def test_a_qos1_publish_carries_its_packet_id_and_comes_again_with_dup() -> None:
    packets = capture(4, "-i", "q1", "-t", "a/b", "-m", "x" * 300, "-q", "1")
    publish = packets[1]
    assert publish.fields["qos"] == 1 and publish.fields["packet_id"] >= 1
    assert publish.fields["size"] == 300
    again = parse(with_dup(publish)[0], publish.body, 4)
    assert again.fields == {**publish.fields, "dup": True}
    assert with_dup(publish)[1:] == publish.raw[1:]


def test_connack_refusals_in_each_level() -> None:
    assert connack(5, 4) == bytes.fromhex("20020005")  # MQTT 3.1.1: not authorized
    assert connack(5, 5) == bytes.fromhex("2003008700")  # MQTT 5: 0x87 not authorized
    assert parse(0x20, connack(4, 5)[2:], 5).fields["return_code"] == 0x86


@pytest.mark.parametrize(
    ("header", "body", "problem"),
    [
        (0x00, b"", "reserved"),
        (0x36, b"\x00\x01a", "QoS 3"),
        (0x80, b"\x00\x01\x00\x01a\x01", "flags"),  # SUBSCRIBE without its 0b0010
        (0x30, b"\x00\x09a/b", "needs 9 bytes"),
        (0x30, b"\x00\x02\xc3\x28", "not UTF-8"),
        (0x40, b"\x00\x01\x00", "left over"),
        (0x82, b"\x00\x01", "no topic filter"),
        (0x10, b"\x00\x04MQTT\x04\x03\x00\x3c\x00\x01a", "reserved connect flag"),
        (0xF0, b"", "only in MQTT 5"),
    ],
)
def test_malformed_packets_say_what_is_wrong(header: int, body: bytes, problem: str) -> None:
    with pytest.raises(MalformedPacket, match=problem):
        parse(header, body, 4)


def test_mqtt_31_subscribe_flags_are_not_held_to_311_rules() -> None:
    packet = parse(0x8A, b"\x00\x01\x00\x03a/b\x01", 3)  # DUP set on a 3.1 SUBSCRIBE
    assert packet.fields == {"packet_id": 1, "topics": [["a/b", 1]]}


@pytest.mark.parametrize(
    ("pattern", "topic", "matches"),
    [
        ("a/b", "a/b", True),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "esp32_status", True),
        ("a/b", "a/c", False),
    ],
)
def test_topic_filters(pattern: str, topic: str, matches: bool) -> None:
    assert topic_matches(pattern, topic) is matches


@settings(deadline=None, database=None, max_examples=300)
@given(
    header=st.integers(0, 255),
    body=st.binary(max_size=64),
    level=st.sampled_from([None, 3, 4, 5]),
)
def test_any_bytes_parse_or_are_malformed(header: int, body: bytes, level: int | None) -> None:
    try:
        packet = parse(header, body, level)
    except MalformedPacket:
        return
    assert packet.raw == bytes([header]) + remaining_length(len(body)) + body


@settings(deadline=None, database=None, max_examples=300)
@given(st.binary(max_size=16))
def test_split_takes_any_bytes(data: bytes) -> None:
    try:
        found = split(data)
    except MalformedPacket:
        return
    if found is not None:
        header, body, rest = found
        assert header == data[0] and data.endswith(body + rest)
