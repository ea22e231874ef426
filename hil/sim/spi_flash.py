"""The device's SPI NOR flash chip as bytes: erased to 0xFF by sectors, programmed by clearing
bits, and answering the few SPI commands a host sends it through the ESP32-S3's SPI1.

It holds whatever was written to it, by the ROM loader (esptool) or by the firmware (OTA), and
outlives resets and power cuts. The part is a 4 MB GigaDevice GD25Q32 (JEDEC id C8 40 16), a
common companion of ESP32-S3 modules.
"""

from __future__ import annotations

import hashlib

SIZE = 4 * 1024 * 1024
SECTOR = 0x1000
ERASED = 0xFF
JEDEC_ID = bytes((0xC8, 0x40, 0x16))  # manufacturer GigaDevice, memory type, 2^0x16 bytes

# SPI NOR opcodes (JEDEC JESD216 and the GD25Q32 datasheet).
READ_DATA = 0x03
WRITE_STATUS = 0x01
WRITE_STATUS_2 = 0x31
WRITE_STATUS_3 = 0x11
WRITE_DISABLE = 0x04
READ_STATUS = 0x05
READ_STATUS_2 = 0x35
READ_STATUS_3 = 0x15
WRITE_ENABLE = 0x06
VOLATILE_WRITE_ENABLE = 0x50
READ_SFDP = 0x5A
READ_ID = 0x9F
STATUS_READS = (READ_STATUS, READ_STATUS_2, READ_STATUS_3)
STATUS_WRITES = (WRITE_STATUS, WRITE_STATUS_2, WRITE_STATUS_3)

# The SFDP header (signature "SFDP", revision 1.6, one parameter header) and its JEDEC basic
# parameter header (16 dwords at 0x30). The parameter tables themselves are not modelled:
# reading them gives erased bytes.
_SFDP = b"SFDP\x06\x01\x00\xff" + b"\x00\x06\x01\x10\x30\x00\x00\xff"


class FlashRangeError(ValueError):
    """An access that runs past the end of the chip."""


class SpiFlash:
    def __init__(self, size: int = SIZE, contents: bytes | None = None) -> None:
        """An erased chip, or one holding `contents` (exactly `size` bytes)."""
        if contents is not None and len(contents) != size:
            raise ValueError(f"contents of {len(contents)} bytes for a {size}-byte chip")
        self.size = size
        self._data = bytearray(contents) if contents is not None else bytearray([ERASED]) * size
        self.changes = 0  # erases and programs so far: a copy kept elsewhere knows it is stale
        self._status = [0, 0, 0]  # status registers 1 to 3: nothing protected, not busy
        self._write_enabled = False
        self._volatile_enabled = False

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise FlashRangeError(
                f"0x{offset:x}+0x{length:x} lies outside the {self.size // 1024} KB flash"
            )

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        return bytes(self._data[offset : offset + length])

    def md5(self, offset: int, length: int) -> str:
        self._check(offset, length)
        return hashlib.md5(self._data[offset : offset + length]).hexdigest()

    def erase(self, offset: int, length: int) -> None:
        """Erase every sector that [offset, offset + length) touches."""
        if length == 0:
            return
        start = offset // SECTOR * SECTOR
        end = -(-(offset + length) // SECTOR) * SECTOR
        self._check(start, end - start)
        self._data[start:end] = bytes([ERASED]) * (end - start)
        self.changes += 1

    def program(self, offset: int, data: bytes) -> bool:
        """NOR programming only clears bits; True if the flash now holds `data` there."""
        self._check(offset, len(data))
        for i, byte in enumerate(data):
            self._data[offset + i] &= byte
        self.changes += 1
        return self._data[offset : offset + len(data)] == data

    def write(self, offset: int, data: bytes) -> None:
        """Erase the sectors under `data` and program it, as esp_partition_write after an erase."""
        self.erase(offset, len(data))
        self.program(offset, data)

    def command(self, opcode: int, address: int, mosi: bytes, miso_len: int) -> bytes:
        """One SPI transaction: the opcode, its address and data out; `miso_len` bytes back.

        Unknown opcodes leave MISO undriven, which reads as ones. Resets, deep power-down and
        its release change nothing here.
        """
        if opcode == READ_ID:
            reply = JEDEC_ID
        elif opcode in STATUS_READS:
            reply = bytes((self._status[STATUS_READS.index(opcode)],))
        elif opcode == READ_SFDP:
            reply = _SFDP[address : address + miso_len]
        elif opcode == READ_DATA and address < self.size:
            reply = self.read(address, min(miso_len, self.size - address))
        else:
            self._control(opcode, mosi)
            reply = b""
        reply = reply[:miso_len]
        return reply + bytes([ERASED]) * (miso_len - len(reply))

    def _control(self, opcode: int, mosi: bytes) -> None:
        if opcode == WRITE_ENABLE:
            self._write_enabled = True
        elif opcode == VOLATILE_WRITE_ENABLE:
            self._volatile_enabled = True
        elif opcode == WRITE_DISABLE:
            self._write_enabled = self._volatile_enabled = False
        elif opcode in STATUS_WRITES:
            if not (self._write_enabled or self._volatile_enabled):
                return  # the chip ignores a status write without WREN or WEVSR
            first = STATUS_WRITES.index(opcode)
            for i, byte in enumerate(mosi[: 3 - first]):
                self._status[first + i] = byte
            self._write_enabled = self._volatile_enabled = False
