"""The device's flash as its bootloader and OTA code see it: two OTA app slots and the otadata
that chooses between them, all kept in the SPI flash's bytes.

The partition table is the common 4 MB two-slot layout without a factory app (ota_0 at 0x10000,
ota_1 at 0x1F0000, otadata at 0xD000), with app rollback enabled. Selection follows ESP-IDF
v5's bootloader_utility.c: the valid otadata entry with the highest sequence number picks slot
(seq - 1) % 2; with both entries erased it tries ota_0. A NEW image becomes PENDING_VERIFY when
it boots, and one still pending at the next boot is ABORTED (the previous app runs again). What
the ROM loader writes over serial lands in the same bytes, so an image written at 0x10000 boots
when otadata is erased or selects ota_0.

The bootloader logs at warning level, so only its E lines reach the console.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from hil.protocol.image import build_image
from hil.sim.esp_image import App, verify
from hil.sim.spi_flash import SECTOR, SpiFlash

SELFTEST_FAIL_SUFFIX = "-selftest-fail"
DEFAULT_PROJECT = "esp32-sim7600"

OTADATA = 0xD000
SLOTS = ((0x10000, 0x1E0000), (0x1F0000, 0x1E0000))  # (offset, size) of ota_0 and ota_1
ENTRY = struct.Struct("<I20sII")  # esp_ota_select_entry_t: seq, label, state, crc
ERASED_SEQ = 0xFFFFFFFF

# esp_ota_img_states_t
NEW = 0x0
PENDING_VERIFY = 0x1
VALID = 0x2
INVALID = 0x3
ABORTED = 0x4


def _crc(seq: int) -> int:
    """bootloader_common_ota_select_crc: esp_rom_crc32_le(UINT32_MAX, &ota_seq, 4)."""
    return zlib.crc32(struct.pack("<I", seq), 0xFFFFFFFF)


@dataclass(frozen=True)
class Entry:
    seq: int
    state: int
    crc: int

    @property
    def valid(self) -> bool:
        """bootloader_common_ota_select_valid."""
        return (
            self.seq != ERASED_SEQ
            and self.state not in (INVALID, ABORTED)
            and self.crc == _crc(self.seq)
        )


@dataclass(frozen=True)
class Boot:
    """One run of the bootloader: the app it started (None: none bootable) and what it logged."""

    app: App | None
    lines: list[str]


class Flash:
    def __init__(self, version: str) -> None:
        self.chip = SpiFlash()
        self.chip.write(SLOTS[0][0], build_image(version, project=DEFAULT_PROJECT))
        self.running = App(version, DEFAULT_PROJECT)
        self.slot = 0
        self._clock_ms = 0

    # -- otadata ------------------------------------------------------------------------------

    def _entry(self, index: int) -> Entry:
        seq, _label, state, crc = ENTRY.unpack(self.chip.read(OTADATA + index * SECTOR, ENTRY.size))
        return Entry(seq, state, crc)

    def _write_entry(self, index: int, seq: int, state: int) -> None:
        raw = ENTRY.pack(seq, b"\xff" * 20, state, _crc(seq))
        self.chip.write(OTADATA + index * SECTOR, raw)

    def _active(self) -> int | None:
        """The otadata entry in force: the valid one with the higher sequence number."""
        entries = [self._entry(0), self._entry(1)]
        valid = [i for i in (0, 1) if entries[i].valid]
        if not valid:
            return None
        return max(valid, key=lambda i: entries[i].seq)

    def _selected(self) -> tuple[int, bool]:
        """bootloader_utility_get_selected_boot_partition with rollback: (slot, from otadata)."""
        for index in (0, 1):  # an app still pending since the last boot never confirmed itself
            entry = self._entry(index)
            if entry.state == PENDING_VERIFY:
                self._write_entry(index, entry.seq, ABORTED)
        active = self._active()
        if active is None:
            return 0, False  # "No factory image, trying OTA 0"
        entry = self._entry(active)
        if entry.state == NEW:
            self._write_entry(active, entry.seq, PENDING_VERIFY)
        return (entry.seq - 1) % len(SLOTS), True

    # -- the bootloader -----------------------------------------------------------------------

    def _log(self, tag: str, message: str) -> str:
        self._clock_ms += 6
        return f"E ({self._clock_ms}) {tag}: {message}"

    def boot(self) -> Boot:
        """bootloader_utility_load_boot_image: the selected slot, else the others in turn."""
        self._clock_ms = 300
        start, from_otadata = self._selected()
        lines: list[str] = []
        order = [start, *range(start - 1, -1, -1), *range(start + 1, len(SLOTS))]
        for slot in order:
            verdict = verify(self.chip, *SLOTS[slot])
            if verdict.app is not None:
                if not from_otadata:
                    self._write_entry(0, slot + 1, VALID)  # "Set actual ota_seq=1 in otadata[0]"
                self.slot, self.running = slot, verdict.app
                return Boot(verdict.app, lines)
            lines += [self._log(tag, message) for tag, message in verdict.errors]
            lines.append(self._log("boot", f"OTA app partition slot {slot} is not bootable"))
        lines.append(self._log("boot", "No bootable app partitions in the partition table"))
        return Boot(None, lines)

    # -- the app's OTA API --------------------------------------------------------------------

    def stage(self, image: bytes) -> None:
        """esp_ota_write to the other slot, then esp_ota_set_boot_partition: the next boot tries
        it (state NEW, a sequence number that maps to that slot)."""
        target = 1 - self.slot
        offset, _size = SLOTS[target]
        self.chip.erase(offset, len(image))
        self.chip.program(offset, image)
        active = self._active()
        seq = 0 if active is None else self._entry(active).seq
        new = seq + 1
        while (new - 1) % len(SLOTS) != target:
            new += 1
        self._write_entry(1 if active == 0 else 0, new, NEW)

    def _running_entry(self) -> int | None:
        active = self._active()
        if active is None or (self._entry(active).seq - 1) % len(SLOTS) != self.slot:
            return None
        return active

    def self_test_fails(self) -> bool:
        """A freshly updated app whose project name marks it as failing its self-test."""
        index = self._running_entry()
        pending = index is not None and self._entry(index).state == PENDING_VERIFY
        return pending and self.running.project.endswith(SELFTEST_FAIL_SUFFIX)

    def confirm(self) -> None:
        """esp_ota_mark_app_valid_cancel_rollback."""
        index = self._running_entry()
        if index is not None and self._entry(index).state == PENDING_VERIFY:
            self._write_entry(index, self._entry(index).seq, VALID)

    def rollback(self) -> None:
        """esp_ota_mark_app_invalid_rollback_and_reboot, before its reboot."""
        index = self._running_entry()
        if index is not None:
            self._write_entry(index, self._entry(index).seq, INVALID)
