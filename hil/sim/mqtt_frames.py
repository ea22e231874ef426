"""MQTT 3.1 and 3.1.1 control packets as the device's firmware builds and parses them itself.

On a modem that carries bytes only (`transport = "raw-tcp"`, seed 004) the firmware frames
MQTT by hand, as OASIS MQTT 3.1.1 (sections 2 and 3) lays the packets out: a fixed header
(type and flags, then the remaining length in 1 to 4 bytes of 7 bits), a variable header and
a payload, strings as a 16-bit big-endian length and UTF-8. MQTT 3.1 differs only in CONNECT's
protocol name ("MQIsdp") and level (3). This is the device's code: it builds what a client
sends and parses what a broker sends, nothing else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, UNSUBACK = 8, 9, 11
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14

PROTOCOL_NAMES = {3: "MQIsdp", 4: "MQTT"}
MAX_REMAINING = 268_435_455  # four length bytes of 7 bits
SUBACK_FAILURE = 0x80


class FrameError(ValueError):
    """Bytes from the broker that are no MQTT 3.1.1 packet a client may receive."""


def _string(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 0xFFFF:
        raise ValueError(f"an MQTT string holds at most 65535 bytes, got {len(raw)}")
    return struct.pack("!H", len(raw)) + raw


def _remaining_length(size: int) -> bytes:
    if not 0 <= size <= MAX_REMAINING:
        raise ValueError(f"an MQTT packet's remaining length is at most {MAX_REMAINING}")
    out = bytearray()
    while True:
        size, digit = divmod(size, 128)
        out.append(digit | (0x80 if size else 0))
        if not size:
            return bytes(out)


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + _remaining_length(len(body)) + body


def connect(
    client_id: str,
    keepalive: int,
    *,
    clean: bool = True,
    level: int = 4,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    """CONNECT at protocol `level` (3: MQTT 3.1, 4: MQTT 3.1.1)."""
    if level not in PROTOCOL_NAMES:
        raise ValueError(f"this codec speaks MQTT 3.1 (level 3) and 3.1.1 (level 4), not {level}")
    if not 0 <= keepalive <= 0xFFFF:
        raise ValueError(f"keepalive is 16 bits, got {keepalive}")
    if password is not None and username is None:
        raise ValueError("MQTT sends a password only after a user name")
    flags = (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    flags |= 0x02 if clean else 0
    body = _string(PROTOCOL_NAMES[level]) + bytes([level, flags]) + struct.pack("!H", keepalive)
    body += _string(client_id)
    if username is not None:
        body += _string(username)
    if password is not None:
        body += _string(password)
    return _packet(CONNECT, 0, body)


def publish(
    topic: str,
    payload: bytes,
    qos: int = 0,
    packet_id: int | None = None,
    *,
    retain: bool = False,
    dup: bool = False,
) -> bytes:
    """PUBLISH; QoS 1 needs a packet id from 1 to 65535, QoS 0 takes none."""
    if qos not in (0, 1):
        raise ValueError(f"this codec publishes at QoS 0 or 1, not {qos}")
    wanted = packet_id is not None and 0 < packet_id <= 0xFFFF if qos else packet_id is None
    if not wanted:
        raise ValueError("a QoS 1 PUBLISH has a packet id from 1 to 65535, QoS 0 none")
    flags = (0x08 if dup else 0) | qos << 1 | (0x01 if retain else 0)
    body = _string(topic) + (struct.pack("!H", packet_id) if packet_id else b"") + payload
    return _packet(PUBLISH, flags, body)


def puback(packet_id: int) -> bytes:
    return _packet(PUBACK, 0, struct.pack("!H", packet_id))


def subscribe(packet_id: int, topics: list[tuple[str, int]]) -> bytes:
    """SUBSCRIBE to (filter, maximum QoS) pairs; its fixed header's flags are 0b0010."""
    if not topics:
        raise ValueError("SUBSCRIBE needs at least one topic filter")
    body = struct.pack("!H", packet_id) + b"".join(_string(t) + bytes([q]) for t, q in topics)
    return _packet(SUBSCRIBE, 0x02, body)


def pingreq() -> bytes:
    return _packet(PINGREQ, 0, b"")


def disconnect() -> bytes:
    return _packet(DISCONNECT, 0, b"")


@dataclass(frozen=True)
class Connack:
    session_present: bool
    return_code: int  # 0 accepted; 1-5 refused (version, identifier, unavailable, auth)


@dataclass(frozen=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    packet_id: int | None
    retain: bool
    dup: bool


@dataclass(frozen=True)
class Puback:
    packet_id: int


@dataclass(frozen=True)
class Suback:
    packet_id: int
    granted: tuple[int, ...]  # the QoS granted per filter, or 0x80 for a refused one


@dataclass(frozen=True)
class Unsuback:
    packet_id: int


@dataclass(frozen=True)
class Pingresp:
    pass


Packet = Connack | Publish | Puback | Suback | Unsuback | Pingresp


def _publish(flags: int, body: bytes) -> Publish:
    qos = flags >> 1 & 0x03
    if qos == 3:
        raise FrameError("PUBLISH with QoS 3")
    if len(body) < 2:
        raise FrameError("PUBLISH too short for its topic")
    (size,) = struct.unpack_from("!H", body)
    at = 2 + size
    if qos:
        at += 2
    if len(body) < at:
        raise FrameError("PUBLISH shorter than its topic and packet id")
    try:
        topic = body[2 : 2 + size].decode()
    except UnicodeDecodeError:
        raise FrameError("PUBLISH topic is not UTF-8") from None
    packet_id = struct.unpack_from("!H", body, at - 2)[0] if qos else None
    return Publish(topic, body[at:], qos, packet_id, bool(flags & 0x01), bool(flags & 0x08))


def _parse(kind: int, flags: int, body: bytes) -> Packet:
    def exactly(size: int) -> None:
        if len(body) != size:
            raise FrameError(f"packet type {kind} with {len(body)} bytes, not {size}")
        if flags:
            raise FrameError(f"packet type {kind} with reserved flags {flags:#x}")

    if kind == PUBLISH:
        return _publish(flags, body)
    if kind == CONNACK:
        exactly(2)
        return Connack(bool(body[0] & 0x01), body[1])
    if kind in (PUBACK, UNSUBACK):
        exactly(2)
        (packet_id,) = struct.unpack("!H", body)
        return Puback(packet_id) if kind == PUBACK else Unsuback(packet_id)
    if kind == SUBACK:
        if flags:
            raise FrameError(f"packet type {kind} with reserved flags {flags:#x}")
        if len(body) < 3:
            raise FrameError("SUBACK without a return code")
        return Suback(struct.unpack_from("!H", body)[0], tuple(body[2:]))
    if kind == PINGRESP:
        exactly(0)
        return Pingresp()
    raise FrameError(f"packet type {kind} is not one a broker sends a 3.1.1 client")


class Decoder:
    """Packets out of a TCP byte stream, however it was cut: `feed` returns the whole ones."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Packet]:
        self._buffer += data
        packets = []
        while len(self._buffer) >= 2:
            size, shift, at = 0, 0, 1
            while True:
                if at >= len(self._buffer):
                    return packets  # the length bytes are not all here yet
                digit = self._buffer[at]
                size |= (digit & 0x7F) << shift
                at += 1
                if not digit & 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise FrameError("remaining length longer than four bytes")
            if len(self._buffer) < at + size:
                return packets
            head = self._buffer[0]
            body = bytes(self._buffer[at : at + size])
            del self._buffer[: at + size]
            packets.append(_parse(head >> 4, head & 0x0F, body))
        return packets
