"""The OTA data partition: which app ESP-IDF's bootloader starts, and the erased otadata a
serial install writes so that it starts the app just written.

otadata is two sectors, each starting with an esp_ota_select_entry_t (ota_seq, seq_label[20],
ota_state, crc). The bootloader (ESP-IDF v5, bootloader_utility.c and bootloader_common.c)
takes the valid entry with the highest ota_seq (ota_seq not 0xFFFFFFFF, crc the CRC-32 of
ota_seq from UINT32_MAX, state neither INVALID nor ABORTED) and boots OTA app
(ota_seq - 1) % <the number of OTA apps>; with app rollback, an entry still PENDING_VERIFY at
boot (an update that never confirmed itself) is ABORTED first. With no valid entry it boots the
factory app, else ota_0, and with rollback it then writes ota_seq 1 into the first entry: a
device that booted ota_0 from erased otadata no longer has erased otadata, but selects ota_0.

So an app written at ota_0 starts only while otadata is erased or selects ota_0; after an OTA
update to ota_1 it would never run. `idf.py flash` writes ota_data_initial.bin (the erased
partition) every time for this reason, and the serial install does the same when the firmware
brings no otadata of its own. The partition's place is the firmware's partition table's, else
that of ESP-IDF's OTA tables (0xD000, 0x2000 bytes), with the app at 0x10000 taken as ota_0 of
two.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from hil.firmware.source import APP_TYPE, FACTORY, OTA_0, FirmwareSource, Partition, Region

DATA_TYPE, OTA_SUBTYPE = 0x01, 0x00  # the otadata partition: data, ota
OTA_APPS = range(OTA_0, OTA_0 + 16)  # app subtypes ota_0 .. ota_15
DEFAULT_OFFSET, DEFAULT_SIZE = 0xD000, 0x2000
SECTOR = 0x1000
ENTRY = struct.Struct("<I20sII")  # esp_ota_select_entry_t
ERASED_SEQ = 0xFFFFFFFF
PENDING_VERIFY, INVALID, ABORTED = 0x1, 0x3, 0x4  # esp_ota_img_states_t
ERASED_NAME = "ota_data_initial.bin (erased otadata)"


def _crc(seq: int) -> int:
    """bootloader_common_ota_select_crc: esp_rom_crc32_le(UINT32_MAX, &ota_seq, 4)."""
    return zlib.crc32(struct.pack("<I", seq), 0xFFFFFFFF)


def selected_ota(entries: Sequence[bytes]) -> int | None:
    """The ota_seq the bootloader goes by, read from otadata's two entries; None when no
    entry is valid (then it boots the factory app, else ota_0)."""
    valid = []
    for raw in entries:
        seq, _label, state, crc = ENTRY.unpack(raw[: ENTRY.size])
        if seq == ERASED_SEQ or crc != _crc(seq) or state in (INVALID, ABORTED, PENDING_VERIFY):
            continue  # a PENDING_VERIFY entry is aborted as the bootloader starts
        valid.append(seq)
    return max(valid) if valid else None


@dataclass(frozen=True)
class BootLayout:
    """Where otadata lies, and what it must select for the firmware's app to be the one run."""

    offset: int
    size: int
    ota_apps: int  # how many OTA app partitions the table has
    factory: bool  # the table has a factory app, which erased otadata boots
    app_ota: int | None  # the OTA index of the app's partition; None: it is the factory app

    @property
    def entry_offsets(self) -> tuple[int, int]:
        return self.offset, self.offset + SECTOR

    def erased(self) -> Region:
        """The erased partition, as ESP-IDF's ota_data_initial.bin holds it."""
        return Region(self.offset, b"\xff" * self.size, ERASED_NAME)

    def covered_by(self, regions: Sequence[Region]) -> bool:
        """Whether the firmware writes any of otadata itself (its own ota_data_initial.bin,
        or a merged image that spans it)."""
        end = self.offset + self.size
        return any(r.offset < end and self.offset < r.offset + len(r.data) for r in regions)

    def outside(self, regions: Sequence[Region]) -> list[Region]:
        """The regions with otadata cut out: the bootloader rewrites otadata, so those bytes
        are not compared with the firmware's."""
        end = self.offset + self.size
        pieces = []
        for region in regions:
            start, stop = region.offset, region.offset + len(region.data)
            if stop <= self.offset or start >= end:
                pieces.append(region)
                continue
            if start < self.offset:
                pieces.append(Region(start, region.data[: self.offset - start], region.name))
            if stop > end:
                pieces.append(Region(end, region.data[end - start :], region.name))
        return pieces

    def boots_app(self, entries: Sequence[bytes]) -> bool:
        """Whether otadata as read makes the bootloader start the firmware's app."""
        seq = selected_ota(entries)
        if seq is None:
            return self.app_ota is None if self.factory else self.app_ota == 0
        return self.ota_apps > 0 and (seq - 1) % self.ota_apps == self.app_ota

    def describe(self, entries: Sequence[bytes]) -> str:
        seq = selected_ota(entries)
        if seq is None:
            return "erased (the bootloader starts " + ("factory)" if self.factory else "ota_0)")
        if not self.ota_apps:
            return f"ota_seq {seq}, with no OTA app in the partition table"
        return f"ota_seq {seq}, selecting ota_{(seq - 1) % self.ota_apps}"


def boot_layout(source: FirmwareSource) -> BootLayout | None:
    """otadata's place and the app's slot, by the firmware's partition table (ESP-IDF's
    defaults without one); None when its table has no otadata: nothing chooses the app."""
    if source.partitions is None:
        return BootLayout(DEFAULT_OFFSET, DEFAULT_SIZE, ota_apps=2, factory=False, app_ota=0)
    table: tuple[Partition, ...] = source.partitions
    otadata = next((p for p in table if (p.type, p.subtype) == (DATA_TYPE, OTA_SUBTYPE)), None)
    if otadata is None:
        return None
    ota_apps = [p for p in table if p.type == APP_TYPE and p.subtype in OTA_APPS]
    app = next((p for p in table if p.type == APP_TYPE and p.offset == source.app_offset), None)
    # the bootloader's bs->ota[] is indexed by subtype, its app_count the OTA apps it found
    app_ota = app.subtype - OTA_0 if app is not None and app.subtype in OTA_APPS else None
    return BootLayout(
        otadata.offset,
        otadata.size,
        ota_apps=len(ota_apps),
        factory=any(p.type == APP_TYPE and p.subtype == FACTORY for p in table),
        app_ota=app_ota,
    )
