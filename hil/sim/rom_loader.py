"""The ESP32-S3 ROM's serial download protocol, as pure logic: host bytes in, reply bytes out.

Framing is SLIP (0xC0 ends a packet, 0xDB 0xDC and 0xDB 0xDD stand for 0xC0 and 0xDB). A
request is `00 op size:u16 checksum:u32 data`; every reply is `01 op size:u16 value:u32 data`
ending in the ROM's four status bytes (status, error, two reserved), where status 1 and an
error code mean failure. Taken from esptool's loader.py and targets/esp32s3.py and its serial
protocol documentation:

- SYNC is answered eight times, each with the value 0x20120707.
- READ_REG puts the word in the value field; GET_SECURITY_INFO gives 20 bytes (flags, flash
  crypt count, seven key purposes, chip id 9, API version).
- Flash commands need SPI_ATTACH first. FLASH_BEGIN carries the S3's fifth word (encrypted
  write) and erases every sector the region touches; FLASH_DATA must come in order (a repeat of
  the last block is taken again, as esptool retries one) and its header's checksum field must
  be 0xEF XOR the data, else error 0x07; a block that does not read back as written is error
  0x08. The compressed FLASH_DEFL_* variants inflate as they go (error 0x0B on a bad stream).
- SPI_FLASH_MD5 answers 32 lowercase hex characters; READ_FLASH_SLOW a 64-byte block.
- FLASH_END leaves the loader: 0 reboots, 1 runs the app in flash.
- Unknown commands, malformed requests, and RAM loading (MEM_*: the twin runs no code loaded
  into RAM, so esptool needs --no-stub) get error 0x05, "received message is invalid".
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Callable
from enum import Enum

from hil.sim.s3_memory import S3Memory
from hil.sim.spi_flash import FlashRangeError, SpiFlash

log = logging.getLogger("hil.sim.rom_loader")

END = 0xC0
ESC = 0xDB
ESC_END = 0xDC
ESC_ESC = 0xDD

FLASH_BEGIN = 0x02
FLASH_DATA = 0x03
FLASH_END = 0x04
MEM_BEGIN = 0x05
MEM_END = 0x06
MEM_DATA = 0x07
SYNC = 0x08
WRITE_REG = 0x09
READ_REG = 0x0A
SPI_SET_PARAMS = 0x0B
SPI_ATTACH = 0x0D
READ_FLASH_SLOW = 0x0E
CHANGE_BAUDRATE = 0x0F
FLASH_DEFL_BEGIN = 0x10
FLASH_DEFL_DATA = 0x11
FLASH_DEFL_END = 0x12
SPI_FLASH_MD5 = 0x13
GET_SECURITY_INFO = 0x14

# ROM loader error codes (the byte after status 1)
INVALID_MESSAGE = 0x05
FAILED_TO_ACT = 0x06
BAD_CHECKSUM = 0x07
FLASH_WRITE_ERROR = 0x08
FLASH_READ_ERROR = 0x09
READ_LENGTH_ERROR = 0x0A
DEFLATE_ERROR = 0x0B

HEADER = struct.Struct("<BBHI")
REQUEST, RESPONSE = 0x00, 0x01
SYNC_PAYLOAD = b"\x07\x07\x12\x20" + b"\x55" * 32
SYNC_VALUE = 0x20120707
SYNC_REPLIES = 8
CHECKSUM_SEED = 0xEF
READ_SLOW_BLOCK = 64
CHIP_ID = 9
API_VERSION = 0
MAX_FRAME = 0x4000 + 64  # a 16 KB data block and its headers: beyond that it is noise


def slip_encode(packet: bytes) -> bytes:
    body = packet.replace(bytes([ESC]), bytes([ESC, ESC_ESC])).replace(
        bytes([END]), bytes([ESC, ESC_END])
    )
    return bytes([END]) + body + bytes([END])


class SlipDecoder:
    """Packets from a byte stream. Bytes between packets are dropped, as the ROM drops them; a
    packet with an invalid escape or longer than MAX_FRAME is dropped whole."""

    def __init__(self) -> None:
        self._packet: bytearray | None = None
        self._escape = False
        self._broken = False

    def feed(self, data: bytes) -> list[bytes]:
        packets = []
        for byte in data:
            if byte == END:
                if self._packet and not self._broken:
                    packets.append(bytes(self._packet))
                self._packet, self._escape, self._broken = bytearray(), False, False
            elif self._packet is None:
                continue  # noise before the first delimiter
            elif self._escape:
                self._escape = False
                if byte in (ESC_END, ESC_ESC):
                    self._packet.append(END if byte == ESC_END else ESC)
                else:
                    self._broken = True
            elif byte == ESC:
                self._escape = True
            elif len(self._packet) < MAX_FRAME:
                self._packet.append(byte)
            else:
                self._broken = True
        return packets


def checksum(data: bytes) -> int:
    value = CHECKSUM_SEED
    for byte in data:
        value ^= byte
    return value


class Exit(Enum):
    """How the host ended the download (FLASH_END)."""

    REBOOT = 0
    RUN_APP = 1


class LoaderError(Exception):
    """A request the ROM answers with status 1 and this error code."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


class _Write:
    """A FLASH_BEGIN (or FLASH_DEFL_BEGIN) in progress."""

    def __init__(self, offset: int, size: int, blocks: int, block_size: int, deflate: bool):
        self.offset, self.size = offset, size
        self.blocks, self.block_size = blocks, block_size
        self.next_seq = 0
        self.written = 0  # bytes written so far (inflated, for a compressed write)
        self.inflate = zlib.decompressobj() if deflate else None


class RomLoader:
    """One stay in download mode. `receive(bytes)` returns what the chip sends back; `exit` is
    set once FLASH_END asked to leave."""

    def __init__(self, flash: SpiFlash, memory: S3Memory) -> None:
        self._flash = flash
        self._memory = memory
        self._slip = SlipDecoder()
        self._attached = False
        self._flash_size = flash.size
        self._write: _Write | None = None
        self.exit: Exit | None = None
        self._handlers: dict[int, Callable[[bytes, int], tuple[int, bytes]]] = {
            SYNC: self._sync,
            READ_REG: self._read_reg,
            WRITE_REG: self._write_reg,
            GET_SECURITY_INFO: self._security_info,
            SPI_ATTACH: self._spi_attach,
            SPI_SET_PARAMS: self._spi_set_params,
            CHANGE_BAUDRATE: self._change_baudrate,
            FLASH_BEGIN: lambda data, _chk: self._begin(data, deflate=False),
            FLASH_DATA: lambda data, chk: self._data(data, chk, deflate=False),
            FLASH_END: self._end,
            FLASH_DEFL_BEGIN: lambda data, _chk: self._begin(data, deflate=True),
            FLASH_DEFL_DATA: lambda data, chk: self._data(data, chk, deflate=True),
            FLASH_DEFL_END: self._end,
            SPI_FLASH_MD5: self._md5,
            READ_FLASH_SLOW: self._read_slow,
        }

    def receive(self, data: bytes) -> bytes:
        out = bytearray()
        for packet in self._slip.feed(data):
            if self.exit is not None:
                break  # the chip has left the loader
            out += self._request(packet)
        return bytes(out)

    def _request(self, packet: bytes) -> bytes:
        if len(packet) < HEADER.size:
            return b""
        direction, op, size, chk = HEADER.unpack_from(packet)
        if direction != REQUEST:
            return b""
        data = packet[HEADER.size :]
        handler = self._handlers.get(op)
        try:
            if size != len(data):
                raise LoaderError(INVALID_MESSAGE, f"size field {size}, {len(data)} data bytes")
            if handler is None:
                if op in (MEM_BEGIN, MEM_DATA, MEM_END):
                    log.warning(
                        "ROM loader: op 0x%02x loads code into RAM, which the twin cannot run; "
                        "use esptool --no-stub",
                        op,
                    )
                raise LoaderError(INVALID_MESSAGE, f"unknown command 0x{op:02x}")
            value, body = handler(data, chk)
        except LoaderError as exc:
            log.info("ROM loader: op 0x%02x refused with 0x%02x: %s", op, exc.code, exc)
            return self._reply(op, 0, b"", exc.code)
        if op == SYNC:
            return self._reply(op, value, body) * SYNC_REPLIES
        return self._reply(op, value, body)

    @staticmethod
    def _reply(op: int, value: int, body: bytes, error: int = 0) -> bytes:
        status = bytes((1 if error else 0, error, 0, 0))
        data = body + status
        return slip_encode(HEADER.pack(RESPONSE, op, len(data), value) + data)

    # -- commands -----------------------------------------------------------------------------

    @staticmethod
    def _words(data: bytes, count: int) -> tuple[int, ...]:
        if len(data) != 4 * count:
            raise LoaderError(INVALID_MESSAGE, f"{len(data)} bytes where {4 * count} belong")
        return struct.unpack(f"<{count}I", data)

    def _sync(self, data: bytes, _chk: int) -> tuple[int, bytes]:
        if data != SYNC_PAYLOAD:
            raise LoaderError(INVALID_MESSAGE, "not the sync pattern")
        return SYNC_VALUE, b""

    def _read_reg(self, data: bytes, _chk: int) -> tuple[int, bytes]:
        (address,) = self._words(data, 1)
        return self._memory.read(address), b""

    def _write_reg(self, data: bytes, _chk: int) -> tuple[int, bytes]:
        if not data or len(data) % 16:
            raise LoaderError(
                INVALID_MESSAGE, f"{len(data)} bytes of (address, value, mask, delay)"
            )
        for address, value, mask, _delay_us in struct.iter_unpack("<IIII", data):
            self._memory.write(address, value, mask)
        return 0, b""

    def _security_info(self, data: bytes, _chk: int) -> tuple[int, bytes]:
        self._words(data, 0)
        return 0, struct.pack("<IB7BII", 0, 0, *bytes(7), CHIP_ID, API_VERSION)

    def _spi_attach(self, data: bytes, _chk: int) -> tuple[int, bytes]:
        pins, _legacy = self._words(data, 2)
        if pins != 0:
            log.info("ROM loader: SPI_ATTACH with pins 0x%08x; the twin's flash answers any", pins)
        self._attached = True
        return 0, b""

    def _spi_set_params(self, data: bytes, _chk: int) -> tuple[int, bytes]:
        _id, total, _block, sector, _page, _mask = self._words(data, 6)
        if sector == 0 or total == 0:
            raise LoaderError(INVALID_MESSAGE, f"flash size {total}, sector size {sector}")
        self._flash_size = total
        return 0, b""

    def _change_baudrate(self, data: bytes, _chk: int) -> tuple[int, bytes]:
        new, _old = self._words(data, 2)
        if new == 0:
            raise LoaderError(INVALID_MESSAGE, "baud rate 0")
        return 0, b""  # a pty carries bytes at any rate

    def _need_flash(self, offset: int, length: int) -> None:
        if not self._attached:
            raise LoaderError(FAILED_TO_ACT, "flash used before SPI_ATTACH")
        if offset + length > min(self._flash_size, self._flash.size):
            raise LoaderError(
                FAILED_TO_ACT, f"0x{offset:x}+0x{length:x} lies beyond the flash size set"
            )

    def _begin(self, data: bytes, deflate: bool) -> tuple[int, bytes]:
        size, blocks, block_size, offset, encrypted = self._words(data, 5)
        if encrypted:
            raise LoaderError(FAILED_TO_ACT, "encrypted write, but flash encryption is off")
        if block_size == 0 and blocks:
            raise LoaderError(INVALID_MESSAGE, "block size 0")
        self._need_flash(offset, size)
        self._flash.erase(offset, size)
        self._write = _Write(offset, size, blocks, block_size, deflate)
        return 0, b""

    def _data(self, data: bytes, chk: int, deflate: bool) -> tuple[int, bytes]:
        write = self._write
        if write is None or (write.inflate is not None) != deflate:
            raise LoaderError(FAILED_TO_ACT, "data without its BEGIN")
        if len(data) < 16:
            raise LoaderError(INVALID_MESSAGE, "data header missing")
        length, seq, _zero1, _zero2 = struct.unpack_from("<IIII", data)
        block = data[16:]
        if length != len(block) or length > write.block_size:
            raise LoaderError(INVALID_MESSAGE, f"block of {len(block)} bytes says {length}")
        if checksum(block) != chk & 0xFF:
            raise LoaderError(BAD_CHECKSUM, f"block {seq} checksum 0x{chk & 0xFF:02x}")
        if seq >= write.blocks or seq > write.next_seq or seq < write.next_seq - 1:
            raise LoaderError(INVALID_MESSAGE, f"block {seq} where {write.next_seq} was due")
        if write.inflate is not None:
            if seq < write.next_seq:
                return 0, b""  # a resent block already inflated
            try:
                plain = write.inflate.decompress(block)
            except zlib.error as exc:
                raise LoaderError(DEFLATE_ERROR, str(exc)) from None
            address = write.offset + write.written
            if write.written + len(plain) > write.size:
                raise LoaderError(DEFLATE_ERROR, "inflates past the erased region")
        else:
            plain, address = block, write.offset + seq * write.block_size
        try:
            if not self._flash.program(address, plain):
                raise LoaderError(FLASH_WRITE_ERROR, f"block {seq} does not read back")
        except FlashRangeError as exc:
            raise LoaderError(FAILED_TO_ACT, str(exc)) from None
        if seq == write.next_seq:
            write.next_seq += 1
            write.written += len(plain)
        return 0, b""

    def _end(self, data: bytes, _chk: int) -> tuple[int, bytes]:
        (run_app,) = self._words(data, 1)
        self._write = None
        self.exit = Exit.RUN_APP if run_app else Exit.REBOOT
        return 0, b""

    def _md5(self, data: bytes, _chk: int) -> tuple[int, bytes]:
        address, size, _zero1, _zero2 = self._words(data, 4)
        self._need_flash(address, size)
        return 0, self._flash.md5(address, size).encode()

    def _read_slow(self, data: bytes, _chk: int) -> tuple[int, bytes]:
        address, length = self._words(data, 2)
        if length > READ_SLOW_BLOCK:
            raise LoaderError(READ_LENGTH_ERROR, f"{length} bytes in one read")
        try:
            self._need_flash(address, length)
        except LoaderError:
            raise LoaderError(FLASH_READ_ERROR, f"0x{address:x}+{length}") from None
        return 0, self._flash.read(address, length).ljust(READ_SLOW_BLOCK, b"\xff")
