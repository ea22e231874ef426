"""ESP32 application images: read, verify as the bootloader does, and build valid test images.

Layout (esptool's `image-info` reads the same): an 8-byte header and a 16-byte extended header,
segments (load address, length, data), zero padding so that the checksum byte ends a 16-byte
block, the checksum (0xEF XOR every segment data byte), then the SHA-256 of all before it.
The first segment starts with the 256-byte `esp_app_desc_t` that carries the version.
"""

from __future__ import annotations

import hashlib
import random
import struct
from dataclasses import dataclass

MAGIC = 0xE9
APP_DESC_MAGIC = 0xABCD5432
HEADER = struct.Struct("<BBBBI")  # magic, segment count, SPI mode, size/freq, entry
EXT_HEADER = struct.Struct("<B3sHBHH4sB")  # wp pin, drive, chip id, revs, reserved, hash flag
SEGMENT = struct.Struct("<II")  # load address, length
APP_DESC = struct.Struct("<III4x32s32s16s16s32s32s")  # magic, secure ver, reserved, strings
APP_DESC_SIZE = 256
CHECKSUM_SEED = 0xEF
HASH_SIZE = 32
CHIP_IDS = {0: "ESP32", 2: "ESP32-S2", 5: "ESP32-C3", 9: "ESP32-S3", 13: "ESP32-C6"}

# Load addresses of an ESP32-S3 app: DROM (rodata, where the app descriptor lives) and IRAM.
_S3_DROM = 0x3C000020
_S3_IRAM = 0x40374000
_OVERHEAD = HEADER.size + EXT_HEADER.size + 2 * SEGMENT.size + 1 + HASH_SIZE
_IRAM_LEN = 16
MIN_SIZE = -(-(_OVERHEAD + _IRAM_LEN + APP_DESC_SIZE) // 16) * 16


class ImageError(ValueError):
    """An image the bootloader would refuse; `reason` is a short code, the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Segment:
    address: int
    length: int


@dataclass(frozen=True)
class ImageInfo:
    """What a verified image says about itself."""

    size: int
    chip_id: int
    entry: int
    segments: tuple[Segment, ...]
    checksum: int
    sha256: str
    version: str = ""
    project_name: str = ""
    idf_version: str = ""

    @property
    def chip(self) -> str:
        return CHIP_IDS.get(self.chip_id, f"chip id {self.chip_id}")


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def parse_image(data: bytes) -> ImageInfo:
    """Verify `data` as an ESP32 app image and return what it declares; raise ImageError if not."""
    if len(data) < HEADER.size + EXT_HEADER.size:
        raise ImageError("truncated", f"{len(data)} bytes is shorter than an image header")
    magic, count, _mode, _sizefreq, entry = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise ImageError("magic", f"first byte is 0x{magic:02X}, an ESP32 image starts with 0xE9")
    ext = EXT_HEADER.unpack_from(data, HEADER.size)
    chip_id, hash_appended = ext[2], ext[7]
    if not 1 <= count <= 16:
        raise ImageError("segments", f"header declares {count} segments (1 to 16 are valid)")
    pos = HEADER.size + EXT_HEADER.size
    checksum = CHECKSUM_SEED
    segments = []
    first_data = b""
    for index in range(count):
        if pos + SEGMENT.size > len(data):
            raise ImageError("truncated", f"segment {index} header lies past the end of the file")
        address, length = SEGMENT.unpack_from(data, pos)
        pos += SEGMENT.size
        if pos + length > len(data):
            raise ImageError(
                "truncated", f"segment {index} ({length} bytes) runs past the end of the file"
            )
        chunk = data[pos : pos + length]
        if index == 0:
            first_data = chunk
        for byte in chunk:
            checksum ^= byte
        segments.append(Segment(address, length))
        pos += length
    pos += 15 - (pos % 16)
    if pos >= len(data):
        raise ImageError("truncated", "the file ends before the checksum byte")
    if data[pos] != checksum:
        raise ImageError(
            "checksum", f"checksum byte is 0x{data[pos]:02X}, the segments sum to 0x{checksum:02X}"
        )
    pos += 1
    digest = hashlib.sha256(data[:pos]).hexdigest()
    if hash_appended:
        stored = data[pos : pos + HASH_SIZE]
        if len(stored) != HASH_SIZE:
            raise ImageError("truncated", "the file ends inside the appended SHA-256")
        if stored.hex() != digest:
            raise ImageError("sha256", "appended SHA-256 does not match the image contents")
        pos += HASH_SIZE
    if pos != len(data):
        raise ImageError("size", f"{len(data) - pos} stray bytes after the end of the image")
    version = project = idf = ""
    if (
        len(first_data) >= APP_DESC.size
        and struct.unpack_from("<I", first_data)[0] == APP_DESC_MAGIC
    ):
        fields = APP_DESC.unpack_from(first_data)
        version, project, idf = _cstr(fields[3]), _cstr(fields[4]), _cstr(fields[7])
    return ImageInfo(
        size=len(data),
        chip_id=chip_id,
        entry=entry,
        segments=tuple(segments),
        checksum=checksum,
        sha256=digest,
        version=version,
        project_name=project,
        idf_version=idf,
    )


def _app_desc(version: str, project: str) -> bytes:
    def text(value: str, size: int, what: str) -> bytes:
        raw = value.encode()
        if len(raw) >= size:
            raise ValueError(f"{what} {value!r} is longer than {size - 1} bytes")
        return raw

    desc = APP_DESC.pack(
        APP_DESC_MAGIC,
        0,
        0,
        text(version, 32, "version"),
        text(project, 32, "project name"),
        b"00:00:00",
        b"Jan  1 2026",
        b"v5.3-hil",
        bytes(32),
    )
    return desc.ljust(APP_DESC_SIZE, b"\0")


def build_image(
    version: str, size: int | None = None, project: str = "hil-test", seed: int = 0
) -> bytes:
    """Build a valid ESP32-S3 app image carrying `version`.

    `size` is the exact file size wanted, rounded up to a multiple of 16 (the format ends every
    image on a 16-byte boundary plus the 32-byte hash); the default is the smallest image.
    The filler bytes are pseudo-random from `seed`, so two images of one size differ by seed.
    """
    target = MIN_SIZE if size is None else max(MIN_SIZE, -(-size // 16) * 16)
    room = target - _OVERHEAD - _IRAM_LEN
    drom_len = room // 4 * 4
    pad = room - drom_len
    rng = random.Random(seed)
    drom = _app_desc(version, project) + rng.randbytes(drom_len - APP_DESC_SIZE)
    iram = rng.randbytes(_IRAM_LEN)
    header = HEADER.pack(MAGIC, 2, 2, 0x20, _S3_IRAM)
    ext = EXT_HEADER.pack(0xEE, bytes(3), 9, 0, 0, 99, bytes(4), 1)
    body = bytearray(header + ext)
    checksum = CHECKSUM_SEED
    for address, data in ((_S3_DROM, drom), (_S3_IRAM, iram)):
        body += SEGMENT.pack(address, len(data)) + data
        for byte in data:
            checksum ^= byte
    body += bytes(pad)
    assert len(body) % 16 == 15, "checksum must end a 16-byte block"
    body.append(checksum)
    body += hashlib.sha256(body).digest()
    assert len(body) == target
    return bytes(body)
