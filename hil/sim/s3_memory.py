"""The ESP32-S3's memory as the ROM loader's READ_REG and WRITE_REG reach it.

What esptool reads is answered as on an ESP32-S3 (QFN56) revision v0.2 with an external 4 MB
flash and no PSRAM: the ROM word esptool 3 and 4 took for the chip magic, the eFuse read
registers (MAC, package, revision, no flash encryption or secure boot), the strapping register
and the SPI1 user-command registers, through which esptool runs SPI flash commands (flash id,
SFDP, status). Other addresses read back what was written to them, else zero.
"""

from __future__ import annotations

from hil.sim.spi_flash import SpiFlash

CHIP_MAGIC_ADDR = 0x40001000
CHIP_MAGIC = 0x00000009
BASE_MAC = bytes.fromhex("7cdfa1e05a3c")  # an Espressif OUI

EFUSE_BASE = 0x60007000
EFUSE_BLOCK1 = EFUSE_BASE + 0x44  # MAC words, then the system data esptool decodes
EFUSE_BLOCK2 = EFUSE_BASE + 0x5C
GPIO_STRAP_REG = 0x60004038
STRAP_GPIO0 = 1 << 3  # high: boot from SPI flash

SPI1 = 0x60002000
SPI_CMD = SPI1 + 0x00
SPI_ADDR = SPI1 + 0x04
SPI_USER = SPI1 + 0x18
SPI_USER2 = SPI1 + 0x20
SPI_MOSI_DLEN = SPI1 + 0x24
SPI_MISO_DLEN = SPI1 + 0x28
SPI_W0 = SPI1 + 0x58
SPI_W_COUNT = 16
SPI_CMD_USR = 1 << 18
USR_COMMAND = 1 << 31
USR_ADDR = 1 << 30
USR_MISO = 1 << 28
USR_MOSI = 1 << 27

_REVISION_MINOR = 2  # v0.2: low bits in block 1 word 3, high bit in word 5
_BLOCK_VERSION = (1, 3)  # eFuse block version v1.3 (major in block 2 word 4, minor in 1/3)


def _efuse_words() -> dict[int, int]:
    mac0 = int.from_bytes(BASE_MAC[2:], "big")
    mac1 = int.from_bytes(BASE_MAC[:2], "big")
    word3 = (_REVISION_MINOR & 0x7) << 18 | _BLOCK_VERSION[1] << 24  # pkg 0, no embedded flash
    word5 = (_REVISION_MINOR >> 3) << 23  # major 0, no embedded PSRAM
    return {
        EFUSE_BLOCK1: mac0,
        EFUSE_BLOCK1 + 4: mac1,
        EFUSE_BLOCK1 + 12: word3,
        EFUSE_BLOCK1 + 20: word5,
        EFUSE_BLOCK2 + 16: _BLOCK_VERSION[0],
    }


class S3Memory:
    def __init__(self, flash: SpiFlash, download: bool) -> None:
        self._flash = flash
        self._words: dict[int, int] = {
            CHIP_MAGIC_ADDR: CHIP_MAGIC,
            GPIO_STRAP_REG: 0 if download else STRAP_GPIO0,
            **_efuse_words(),
        }
        self._readonly = set(self._words)

    def read(self, address: int) -> int:
        return self._words.get(address, 0)

    def write(self, address: int, value: int, mask: int) -> None:
        """A masked store; eFuse, strap and ROM words do not change."""
        if address in self._readonly:
            return
        self._words[address] = (self.read(address) & ~mask | value & mask) & 0xFFFFFFFF
        if address == SPI_CMD and self._words[address] & SPI_CMD_USR:
            self._spi_user_command()

    def _spi_user_command(self) -> None:
        """SPI1 runs its user command at once; the USR bit reads back clear when it is done."""
        user = self.read(SPI_USER)
        opcode = self.read(SPI_USER2) & 0xFF
        address = self.read(SPI_ADDR) if user & USR_ADDR else 0
        mosi = b""
        if user & USR_MOSI:
            length = (self.read(SPI_MOSI_DLEN) + 1 + 7) // 8
            words = b"".join(
                self.read(SPI_W0 + 4 * i).to_bytes(4, "little") for i in range(SPI_W_COUNT)
            )
            mosi = words[:length]
        miso_len = (self.read(SPI_MISO_DLEN) + 1 + 7) // 8 if user & USR_MISO else 0
        miso_len = min(miso_len, 4 * SPI_W_COUNT)
        if user & USR_COMMAND:
            reply = self._flash.command(opcode, address, mosi, miso_len)
            padded = reply + bytes(-len(reply) % 4)
            for i in range(0, len(padded), 4):
                self._words[SPI_W0 + i] = int.from_bytes(padded[i : i + 4], "little")
        self._words[SPI_CMD] &= ~SPI_CMD_USR
