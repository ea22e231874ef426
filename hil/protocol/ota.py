"""OTA-over-MQTT messages: the server's BEGIN/chunk/END and the device's status answers.

A chunk on `firmware/update` is base64 of a big-endian u32 chunk number followed by at most
508 data bytes. Device answers are `OTA:<WORD>[:<args>]` lines; `parse_reply` turns them into
typed events so senders and suites never split strings themselves.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from dataclasses import dataclass

CHUNK_DATA_SIZE = 508
NUMBER = struct.Struct(">I")


class ChunkError(ValueError):
    """A chunk payload the device must refuse (`OTA:ERROR:invalid_chunk`)."""


def chunk_count(size: int, data_size: int = CHUNK_DATA_SIZE) -> int:
    return math.ceil(size / data_size)


def split_image(image: bytes, data_size: int = CHUNK_DATA_SIZE) -> list[bytes]:
    """The image's chunks' data, in order."""
    return [image[i : i + data_size] for i in range(0, len(image), data_size)]


def encode_chunk(number: int, data: bytes) -> str:
    return base64.b64encode(NUMBER.pack(number) + data).decode("ascii")


def decode_chunk(payload: str | bytes, data_size: int = CHUNK_DATA_SIZE) -> tuple[int, bytes]:
    """Return (chunk number, data); raise ChunkError as the device would refuse it."""
    raw = payload.encode() if isinstance(payload, str) else payload
    try:
        blob = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ChunkError("chunk is not valid base64") from None
    if len(blob) < NUMBER.size + 1:
        raise ChunkError(f"chunk is {len(blob)} bytes, shorter than 5")
    if len(blob) > NUMBER.size + data_size:
        raise ChunkError(f"chunk is {len(blob)} bytes, longer than {NUMBER.size + data_size}")
    return NUMBER.unpack_from(blob)[0], blob[NUMBER.size :]


def begin(size: int) -> str:
    return f"OTA:BEGIN:{size}"


END = "OTA:END"


@dataclass(frozen=True)
class Ready:
    size: int


@dataclass(frozen=True)
class Progress:
    number: int
    total: int


@dataclass(frozen=True)
class Request:
    number: int


@dataclass(frozen=True)
class Success:
    pass


@dataclass(frozen=True)
class Error:
    reason: str


OtaReply = Ready | Progress | Request | Success | Error

_REPLY = re.compile(
    r"OTA:(?:READY:(?P<ready>\d+)|PROGRESS:(?P<num>\d+)/(?P<total>\d+)"
    r"|REQUEST:(?P<req>\d+)|(?P<success>SUCCESS)|ERROR:(?P<reason>.*))"
)


def parse_reply(payload: str | bytes) -> OtaReply | None:
    """The OTA event a status message carries, or None when it is not an OTA answer."""
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    m = _REPLY.fullmatch(text.strip())
    if not m:
        return None
    if m["ready"] is not None:
        return Ready(int(m["ready"]))
    if m["num"] is not None:
        return Progress(int(m["num"]), int(m["total"]))
    if m["req"] is not None:
        return Request(int(m["req"]))
    if m["success"]:
        return Success()
    return Error(m["reason"])


def ready(size: int) -> str:
    return f"OTA:READY:{size}"


def progress(number: int, total: int) -> str:
    return f"OTA:PROGRESS:{number}/{total}"


def request(number: int) -> str:
    return f"OTA:REQUEST:{number}"


SUCCESS = "OTA:SUCCESS"


def error(reason: str) -> str:
    return f"OTA:ERROR:{reason}"
