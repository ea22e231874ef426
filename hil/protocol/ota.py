"""OTA-over-MQTT messages: the server's BEGIN/chunk/END and the device's status answers.

A chunk on `firmware/update` is base64 of a big-endian u32 chunk number followed by at most
508 data bytes. Device answers are `OTA:<WORD>[:<args>]` lines; `parse_reply` turns them into
typed events so senders and suites never split strings themselves.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
import struct
from dataclasses import dataclass

CHUNK_DATA_SIZE = 508
NUMBER = struct.Struct(">I")

log = logging.getLogger("hil.ota")


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

    def __str__(self) -> str:
        return ready(self.size)


@dataclass(frozen=True)
class Progress:
    number: int
    total: int

    def __str__(self) -> str:
        return progress(self.number, self.total)


@dataclass(frozen=True)
class Request:
    number: int

    def __str__(self) -> str:
        return request(self.number)


@dataclass(frozen=True)
class Success:
    def __str__(self) -> str:
        return SUCCESS


@dataclass(frozen=True)
class Error:
    reason: str

    def __str__(self) -> str:
        return error(self.reason)


OtaReply = Ready | Progress | Request | Success | Error

# Numbers are ASCII digits and at most 10 of them (a u32): `\d` and int() also take other
# scripts' digits, and int() raises on more than 4300. A reason is one short printable line.
_NUMBER = r"[0-9]{1,10}"
MAX_REASON = 200
_REPLY = re.compile(
    rf"OTA:(?:READY:(?P<ready>{_NUMBER})|PROGRESS:(?P<num>{_NUMBER})/(?P<total>{_NUMBER})"
    rf"|REQUEST:(?P<req>{_NUMBER})|(?P<success>SUCCESS)"
    rf"|ERROR:(?P<reason>[^\x00-\x1f\x7f]{{0,{MAX_REASON}}}))"
)
_ANSWER_WORDS = ("OTA:READY:", "OTA:PROGRESS:", "OTA:REQUEST:", "OTA:SUCCESS", "OTA:ERROR:")


def _text(payload: str | bytes) -> str:
    return (payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload).strip()


def is_answer_shaped(payload: str | bytes) -> bool:
    """Whether the text starts like a device OTA answer, well-formed or not.

    A malformed answer is still the device's OTA channel talking, never an echo reply.
    """
    return _text(payload).startswith(_ANSWER_WORDS)


def parse_reply(payload: str | bytes) -> OtaReply | None:
    """The OTA event a status message carries, or None when it is not an OTA answer.

    Never raises: device text is untrusted. An answer-shaped line that does not parse is
    logged on "hil.ota" as unparsed, so a firmware bug shows instead of vanishing.
    """
    text = _text(payload)
    m = _REPLY.fullmatch(text)
    if not m:
        if text.startswith(_ANSWER_WORDS):
            log.warning("unparsed OTA answer from the device (%d chars): %r", len(text), text[:80])
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
