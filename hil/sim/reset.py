"""Why the chip starts, and the line its ROM prints about it before anything else runs.

The ROM reads the strapping pins at reset: GPIO0 high boots from flash (boot:0x8), GPIO0 held
low enters the serial download mode (boot:0x0), where an ESP32-S3 prints its ROM version and
`waiting for download`.
"""

from __future__ import annotations

from enum import Enum

BOOT_FLASH = "boot:0x8 (SPI_FAST_FLASH_BOOT)"
BOOT_DOWNLOAD = "boot:0x0 (DOWNLOAD(USB/UART0))"
ROM_VERSION = ("ESP-ROM:esp32s3-20210327", "Build:Mar 27 2021")
WAITING = "waiting for download"


class Reset(Enum):
    """A reset's code and name as the ROM prints them (value: flash boot, download mode)."""

    POWERON = ("rst:0x1 (POWERON_RESET)", "rst:0x1 (POWERON)")
    SW_CPU = ("rst:0xc (RTC_SW_CPU_RST)", "rst:0xc (RTC_SW_CPU_RST)")  # esp_restart()
    SW_SYS = ("rst:0x3 (RTC_SW_SYS_RST)", "rst:0x3 (RTC_SW_SYS_RST)")  # bootloader_reset()
    NONE = ("", "")  # the ROM loader jumped to the flash boot: no reset, no banner


def banner(reset: Reset, download: bool) -> list[str]:
    """What the ROM prints for `reset` in flash boot or, with `download`, in download mode."""
    if reset is Reset.NONE:
        return []
    flash, rom = reset.value
    if download:
        return [*ROM_VERSION, f"{rom},{BOOT_DOWNLOAD}", WAITING]
    return [f"{flash},{BOOT_FLASH}"]
