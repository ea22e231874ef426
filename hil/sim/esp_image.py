"""The second-stage bootloader's check of an app image in flash (ESP-IDF v5
`esp_image_format.c` and `bootloader_common.c`), with the error lines it logs.

The checks run in the bootloader's order and stop at the first failure: magic byte, chip id,
segment count, each segment header (length a multiple of 4 below 16 MB, a flash-mapped segment
at the same offset within its 64 KB MMU page as its load address), the checksum byte, the
appended SHA-256, and the image fitting its partition. Load-address overlaps with the
bootloader's own RAM and eFuse revision ranges are not modelled.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from hil.protocol.image import APP_DESC, APP_DESC_MAGIC, CHECKSUM_SEED, HASH_SIZE, MAGIC
from hil.sim.spi_flash import FlashRangeError, SpiFlash

S3_CHIP_ID = 9
MAX_SEGMENTS = 16
SIXTEEN_MB = 0x1000000
MMU_PAGE = 0x10000
HEADER = struct.Struct("<BBBBIB3sHBHH4sB")  # esp_image_header_t, 24 bytes
SEGMENT = struct.Struct("<II")  # load address, data length
# Address ranges the ESP32-S3 maps from flash through its cache (soc.h: IROM, DROM).
_MAPPED = ((0x42000000, 0x44000000), (0x3C000000, 0x3E000000))


@dataclass(frozen=True)
class App:
    """What a bootable image says about itself (its esp_app_desc_t)."""

    version: str
    project: str


@dataclass(frozen=True)
class Verdict:
    """An image's check: the app when it boots, else the lines the bootloader logged."""

    app: App | None
    errors: tuple[tuple[str, str], ...] = ()  # (log tag, message), ESP_LOGE lines


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _mapped(address: int) -> bool:
    return any(low <= address < high for low, high in _MAPPED)


def _fail(tag: str, message: str) -> Verdict:
    return Verdict(None, ((tag, message),))


def verify(flash: SpiFlash, offset: int, size: int) -> Verdict:
    """Check the image in the partition at `offset` of `size` bytes, as bootloader_load_image."""
    try:
        return _verify(flash, offset, size)
    except FlashRangeError:
        return _fail("esp_image", f"bootloader_flash_read failed at 0x{offset:08x}")


def _verify(flash: SpiFlash, offset: int, size: int) -> Verdict:
    header = HEADER.unpack(flash.read(offset, HEADER.size))
    magic, count, chip_id, hash_appended = header[0], header[1], header[7], header[12]
    if magic != MAGIC:
        return _fail(
            "esp_image", f"image at 0x{offset:x} has invalid magic byte (nothing flashed here?)"
        )
    if chip_id != S3_CHIP_ID:
        return _fail("boot_comm", f"mismatch chip ID, expected {S3_CHIP_ID}, found {chip_id}")
    if count > MAX_SEGMENTS:
        return _fail(
            "esp_image",
            f"image at 0x{offset:x} segment count {count} exceeds max {MAX_SEGMENTS}",
        )
    position = offset + HEADER.size
    checksum = CHECKSUM_SEED
    first = b""
    for index in range(count):
        load, length = SEGMENT.unpack(flash.read(position, SEGMENT.size))
        data_at = position + SEGMENT.size
        if length & 3 or length >= SIXTEEN_MB:
            return _fail("esp_image", f"invalid segment length 0x{length:x}")
        if _mapped(load) and data_at % MMU_PAGE != load % MMU_PAGE:
            return _fail(
                "esp_image",
                f"Segment {index} load address 0x{load:08x}, doesn't match data 0x{data_at:08x}",
            )
        data = flash.read(data_at, length)
        if index == 0:
            first = data
        for byte in data:
            checksum ^= byte
        position = data_at + length
    unpadded = position - offset
    padded = (unpadded + 1 + 15) & ~15
    stored = flash.read(offset + padded - 1, 1)[0]
    if stored != checksum:
        return _fail("esp_image", f"Checksum failed. Calculated 0x{checksum:x} read 0x{stored:x}")
    length = padded
    if hash_appended:
        digest = hashlib.sha256(flash.read(offset, padded)).digest()
        if flash.read(offset + padded, HASH_SIZE) != digest:
            return _fail("esp_image", "Image hash failed - image is corrupt")
        length += HASH_SIZE
    if length > size:
        return _fail("esp_image", f"Image length {length} doesn't fit in partition length {size}")
    version = project = ""
    if len(first) >= APP_DESC.size and struct.unpack_from("<I", first)[0] == APP_DESC_MAGIC:
        fields = APP_DESC.unpack_from(first)
        version, project = _cstr(fields[3]), _cstr(fields[4])
    return Verdict(App(version, project))
