"""MQTT 3.1, 3.1.1 and 5 control packets, as far as a proxy needs to read and act on them.

No maintained Python library parses all three levels from bytes: amqtt's packet classes know
3.1.1 alone (a v5 CONNECT's properties break them, an empty client id is replaced by a random
one), paho's and aiomqtt's parsers live inside their clients, and the v5 codecs know only v5.
So this is the small codec of the specification's fixed header, remaining length and the
variable headers of each packet type (MQTT 3.1.1 §2-3, MQTT 5.0 §2-3). Version 5 properties
are skipped by their length; payloads are kept as bytes and never decoded.

A packet is read as a fixed-header byte and its body; `parse` then names its fields. The
level of the connection (from its CONNECT) decides how the other packets are laid out.
Anything that does not follow the specification's structure is a `MalformedPacket` saying what.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from typing import Any, NamedTuple

MAX_REMAINING = 268_435_455  # four bytes of variable-length integer
PROTOCOL_NAMES = {3: "MQIsdp", 4: "MQTT", 5: "MQTT"}  # by protocol level
DUP = 0x08
# CONNACK return codes of MQTT 3.1/3.1.1 and the MQTT 5 reason codes that say the same.
V5_REASONS = {1: 0x84, 2: 0x85, 3: 0x88, 4: 0x86, 5: 0x87}


class MalformedPacket(ValueError):
    """Bytes that are not an MQTT packet of the connection's level; the message says why."""


class PacketType(enum.IntEnum):
    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


# Fixed-header flags each type must carry (MQTT 3.1.1 §2.2.2); PUBLISH's are its own.
_FLAGS = {t: 0 for t in PacketType} | {
    PacketType.PUBREL: 2,
    PacketType.SUBSCRIBE: 2,
    PacketType.UNSUBSCRIBE: 2,
}
_ACKS = (PacketType.PUBACK, PacketType.PUBREC, PacketType.PUBREL, PacketType.PUBCOMP)


class Will(NamedTuple):
    topic: str
    qos: int
    retain: bool


@dataclass(frozen=True)
class Packet:
    """One control packet: its type, fixed-header flags, body and the fields read from it."""

    type: PacketType
    flags: int
    body: bytes = field(repr=False)
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def raw(self) -> bytes:
        """The packet as it travels: fixed header, remaining length, body."""
        return bytes([self.type << 4 | self.flags]) + remaining_length(len(self.body)) + self.body

    @property
    def name(self) -> str:
        return self.type.name


def remaining_length(n: int) -> bytes:
    """The variable-length integer of MQTT's fixed header."""
    if not 0 <= n <= MAX_REMAINING:
        raise ValueError(f"remaining length {n} is outside 0..{MAX_REMAINING}")
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def split(data: bytes) -> tuple[int, bytes, bytes] | None:
    """The first packet of `data` as (fixed-header byte, body, rest), or None while incomplete."""
    if not data:
        return None
    length, shift, at = 0, 0, 1
    while True:
        if at >= len(data):
            return None
        byte = data[at]
        length |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            break
        shift += 7
        if at > 4:
            raise MalformedPacket("remaining length runs past four bytes")
    if len(data) < at + length:
        return None
    return data[0], data[at : at + length], data[at + length :]


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes] | None:
    """The next packet's fixed-header byte and body; None when the peer closed between packets.

    A connection that closes within a packet is malformed: its last packet never completed.
    """
    first = await reader.read(1)
    if not first:
        return None
    length, shift = 0, 0
    try:
        for _ in range(4):
            byte = (await reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
        else:
            raise MalformedPacket("remaining length runs past four bytes")
        return first[0], await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise MalformedPacket(
            f"connection closed within a packet (fixed header {first[0]:#04x}, "
            f"{len(exc.partial)} bytes of its body)"
        ) from None


class _Body:
    """A cursor over one packet's body; every read past its end is a MalformedPacket."""

    def __init__(self, kind: PacketType, data: bytes) -> None:
        self.kind = kind
        self.data = data
        self.at = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.at

    def take(self, n: int, what: str) -> bytes:
        if n > self.left:
            raise MalformedPacket(
                f"{self.kind.name}: {what} needs {n} bytes but only {self.left} remain of the "
                f"packet's {len(self.data)}"
            )
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "big")

    def binary(self, what: str) -> bytes:
        return self.take(self.u16(f"{what}'s length"), what)

    def text(self, what: str) -> str:
        raw = self.binary(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedPacket(
                f"{self.kind.name}: {what} is not UTF-8 (byte {exc.start} is {raw[exc.start]:#04x})"
            ) from None

    def varint(self, what: str) -> int:
        value, shift = 0, 0
        for _ in range(4):
            byte = self.byte(what)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
        raise MalformedPacket(f"{self.kind.name}: {what} runs past four bytes")

    def properties(self, what: str = "properties") -> None:
        """Skip an MQTT 5 property block by its length."""
        self.take(self.varint(f"{what} length"), what)

    def rest(self) -> bytes:
        return self.take(self.left, "the rest")

    def end(self) -> None:
        if self.left:
            raise MalformedPacket(
                f"{self.kind.name}: {self.left} bytes left over after its last field"
            )


def parse(header: int, body: bytes, level: int | None) -> Packet:
    """Name the fields of one packet; `level` is the connection's (None before its CONNECT)."""
    try:
        kind = PacketType(header >> 4)
    except ValueError:
        raise MalformedPacket(f"packet type 0 is reserved (fixed header {header:#04x})") from None
    flags = header & 0x0F
    strict = level is None or level >= 4  # MQTT 3.1 did not fix these flags
    if kind is PacketType.PUBLISH:
        if flags & 0x06 == 0x06:
            raise MalformedPacket(f"PUBLISH: QoS 3 does not exist (fixed header {header:#04x})")
    elif strict and flags != _FLAGS[kind]:
        raise MalformedPacket(
            f"{kind.name}: fixed-header flags {flags:#x}, the specification requires "
            f"{_FLAGS[kind]:#x}"
        )
    if kind is PacketType.AUTH and level != 5:
        raise MalformedPacket(f"AUTH exists only in MQTT 5, not at protocol level {level}")
    cursor = _Body(kind, body)
    v5 = level == 5
    fields = _READERS[kind](cursor, flags, v5)
    cursor.end()
    return Packet(kind, flags, body, fields)


def _connect(b: _Body, flags: int, v5: bool) -> dict[str, Any]:
    """The level is read here: CONNECT is what sets it."""
    name = b.text("protocol name")
    level = b.byte("protocol level")
    bits = b.byte("connect flags")
    keepalive = b.u16("keepalive")
    v5 = level == 5  # the packet says its own level
    if bits & 0x01:
        raise MalformedPacket("CONNECT: the reserved connect flag is set")
    will_flag, will_qos, will_retain = bool(bits & 0x04), (bits >> 3) & 3, bool(bits & 0x20)
    if will_qos == 3:
        raise MalformedPacket("CONNECT: will QoS 3 does not exist")
    if not will_flag and (will_qos or will_retain):
        raise MalformedPacket("CONNECT: will QoS or retain set without the will flag")
    if v5:
        b.properties()
    client_id = b.text("client id")
    will = None
    if will_flag:
        if v5:
            b.properties("will properties")
        will = Will(b.text("will topic"), will_qos, will_retain)
        b.binary("will message")
    username = b.text("username") if bits & 0x80 else None
    password = bool(bits & 0x40)
    if password:
        b.binary("password")  # skipped unread: it never leaves the codec
    return {
        "protocol_name": name,
        "level": level,
        "client_id": client_id,
        "clean_session": bool(bits & 0x02),
        "keepalive": keepalive,
        "will": will,
        "username": username,
        "password": password,
    }


def _connack(b: _Body, flags: int, v5: bool) -> dict[str, Any]:
    ack = b.byte("acknowledge flags")
    code = b.byte("return code")
    if v5:
        b.properties()
    return {"session_present": bool(ack & 1), "return_code": code}


def _publish(b: _Body, flags: int, v5: bool) -> dict[str, Any]:
    qos = (flags >> 1) & 3
    topic = b.text("topic")
    packet_id = b.u16("packet id") if qos else None
    if v5:
        b.properties()
    payload = b.rest()
    return {
        "topic": topic,
        "qos": qos,
        "retain": bool(flags & 1),
        "dup": bool(flags & DUP),
        "packet_id": packet_id,
        "size": len(payload),
    }


def _ack(b: _Body, flags: int, v5: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {"packet_id": b.u16("packet id")}
    if v5 and b.left:
        fields["reason_code"] = b.byte("reason code")
        if b.left:
            b.properties()
    return fields


def _subscribe(b: _Body, flags: int, v5: bool) -> dict[str, Any]:
    packet_id = b.u16("packet id")
    if v5:
        b.properties()
    topics = []
    while b.left:
        topic = b.text("topic filter")
        topics.append([topic, b.byte("requested QoS") & 3])
    if not topics:
        raise MalformedPacket("SUBSCRIBE: no topic filter")
    return {"packet_id": packet_id, "topics": topics}


def _suback(b: _Body, flags: int, v5: bool) -> dict[str, Any]:
    packet_id = b.u16("packet id")
    if v5:
        b.properties()
    return {"packet_id": packet_id, "return_codes": list(b.rest())}


def _unsubscribe(b: _Body, flags: int, v5: bool) -> dict[str, Any]:
    packet_id = b.u16("packet id")
    if v5:
        b.properties()
    topics = []
    while b.left:
        topics.append(b.text("topic filter"))
    if not topics:
        raise MalformedPacket("UNSUBSCRIBE: no topic filter")
    return {"packet_id": packet_id, "topics": topics}


def _unsuback(b: _Body, flags: int, v5: bool) -> dict[str, Any]:
    packet_id = b.u16("packet id")
    if not v5:
        return {"packet_id": packet_id}
    b.properties()
    return {"packet_id": packet_id, "return_codes": list(b.rest())}


def _empty(b: _Body, flags: int, v5: bool) -> dict[str, Any]:
    return {}


def _reason(b: _Body, flags: int, v5: bool) -> dict[str, Any]:
    """DISCONNECT and AUTH: in MQTT 5 an optional reason code and properties."""
    if not v5 or not b.left:
        return {}
    code = b.byte("reason code")
    if b.left:
        b.properties()
    return {"reason_code": code}


_READERS = {
    PacketType.CONNECT: _connect,
    PacketType.CONNACK: _connack,
    PacketType.PUBLISH: _publish,
    **dict.fromkeys(_ACKS, _ack),
    PacketType.SUBSCRIBE: _subscribe,
    PacketType.SUBACK: _suback,
    PacketType.UNSUBSCRIBE: _unsubscribe,
    PacketType.UNSUBACK: _unsuback,
    PacketType.PINGREQ: _empty,
    PacketType.PINGRESP: _empty,
    PacketType.DISCONNECT: _reason,
    PacketType.AUTH: _reason,
}


def connack(return_code: int, level: int) -> bytes:
    """A CONNACK without a session; a 3.1/3.1.1 code is sent as its MQTT 5 reason code there."""
    if level == 5:
        code = V5_REASONS.get(return_code, return_code)
        return bytes([PacketType.CONNACK << 4, 3, 0, code, 0])
    return bytes([PacketType.CONNACK << 4, 2, 0, return_code])


def with_dup(packet: Packet) -> bytes:
    """A QoS 1 or 2 PUBLISH as it is sent again: the same bytes with the DUP flag set."""
    if packet.type is not PacketType.PUBLISH or not packet.fields["qos"]:
        raise ValueError("only a QoS 1 or 2 PUBLISH is redelivered with DUP")
    raw = bytearray(packet.raw)
    raw[0] |= DUP
    return bytes(raw)


def topic_matches(pattern: str, topic: str) -> bool:
    """Whether `topic` is one `pattern` names, with MQTT's `+` and `#` wildcards."""
    want, have = pattern.split("/"), topic.split("/")
    for i, part in enumerate(want):
        if part == "#":
            return True
        if i >= len(have) or (part != "+" and part != have[i]):
            return False
    return len(want) == len(have)
