"""Which app otadata makes ESP-IDF's bootloader start, and where a firmware's otadata lies.

Entries are esp_ota_select_entry_t bytes made by hand, their CRCs the known values ESP-IDF's
bootloader accepts (ota_seq 1: 0x4743989A, ota_seq 2: 0x55F63774), not computed here.
"""

from __future__ import annotations

import struct

import pytest

from hil.firmware.otadata import BootLayout, boot_layout, selected_ota
from hil.firmware.source import Region, read_source

from .conftest import (
    APP_TYPE,
    DATA_TYPE,
    OTA_0,
    default_table,
    make_build,
    ota_table,
    partition_table,
)

CRC = {1: 0x4743989A, 2: 0x55F63774}
ERASED = b"\xff" * 32
UNDEFINED, NEW, PENDING_VERIFY, VALID, INVALID, ABORTED = 0xFFFFFFFF, 0, 1, 2, 3, 4
TWIN = BootLayout(0xD000, 0x2000, ota_apps=2, factory=False, app_ota=0)


def entry(seq: int, state: int, crc: int | None = None) -> bytes:
    return struct.pack("<I20sII", seq, b"\xff" * 20, state, CRC[seq] if crc is None else crc)


@pytest.mark.parametrize(
    ("entries", "selected"),
    [
        ((ERASED, ERASED), None),
        ((entry(1, VALID), ERASED), 1),  # the bootloader's "Set actual ota_seq=1"
        ((entry(1, UNDEFINED), ERASED), 1),  # an app built without rollback
        ((entry(1, VALID), entry(2, NEW)), 2),  # an update staged for ota_1
        ((entry(1, VALID), entry(2, VALID)), 2),
        ((entry(1, VALID), entry(2, PENDING_VERIFY)), 1),  # never confirmed: aborted at boot
        ((entry(1, VALID), entry(2, ABORTED)), 1),
        ((entry(1, VALID), entry(2, INVALID)), 1),  # rolled back
        ((entry(1, VALID), entry(2, VALID, crc=CRC[1])), 1),  # a torn write: CRC wrong
        ((entry(2, VALID), entry(1, VALID)), 2),  # the higher sequence wins in either sector
    ],
)
def test_the_entry_the_bootloader_goes_by(entries, selected) -> None:
    assert selected_ota(entries) == selected


def test_the_app_at_ota_0_runs_from_erased_otadata_or_one_selecting_ota_0_only() -> None:
    assert TWIN.boots_app((ERASED, ERASED))
    assert TWIN.boots_app((entry(1, VALID), ERASED))
    assert not TWIN.boots_app((entry(1, VALID), entry(2, VALID)))
    assert TWIN.boots_app((entry(1, VALID), entry(2, PENDING_VERIFY)))
    assert TWIN.describe((entry(1, VALID), entry(2, VALID))) == "ota_seq 2, selecting ota_1"
    assert TWIN.describe((ERASED, ERASED)) == "erased (the bootloader starts ota_0)"


def test_a_factory_app_runs_only_from_erased_otadata() -> None:
    factory = BootLayout(0xD000, 0x2000, ota_apps=2, factory=True, app_ota=None)
    assert factory.boots_app((ERASED, ERASED))
    assert not factory.boots_app((entry(1, VALID), ERASED))


def test_an_app_image_alone_is_taken_for_ota_0_with_esp_idfs_default_otadata(tmp_path) -> None:
    build = make_build(tmp_path / "build")
    assert boot_layout(read_source(build / "demo.bin", "esp32s3")) == TWIN


def test_a_build_finds_otadata_and_the_apps_slot_in_its_partition_table(tmp_path) -> None:
    build = make_build(tmp_path / "ota", table=ota_table(), otadata=0xD000)
    assert boot_layout(read_source(build, "esp32s3")) == TWIN
    second = make_build(tmp_path / "second", table=ota_table(), app_offset=0x1F0000)
    assert boot_layout(read_source(second, "esp32s3")).app_ota == 1


def test_a_table_without_otadata_has_nothing_that_chooses_the_app(tmp_path) -> None:
    build = make_build(tmp_path / "build", table=default_table())
    assert boot_layout(read_source(build, "esp32s3")) is None


def test_otadata_elsewhere_and_a_factory_app_come_from_the_table(tmp_path) -> None:
    table = partition_table(
        ("nvs", DATA_TYPE, 0x02, 0x9000, 0x5000),
        ("otadata", DATA_TYPE, 0x00, 0xE000, 0x2000),
        ("factory", APP_TYPE, 0x00, 0x10000, 0x100000),
        ("ota_0", APP_TYPE, OTA_0, 0x110000, 0x100000),
        ("ota_1", APP_TYPE, OTA_0 + 1, 0x210000, 0x100000),
    )
    build = make_build(tmp_path / "build", table=table)
    assert boot_layout(read_source(build, "esp32s3")) == BootLayout(
        0xE000, 0x2000, ota_apps=2, factory=True, app_ota=None
    )


def test_otadata_is_left_out_of_what_is_compared_and_its_erase_is_ota_data_initial() -> None:
    merged = Region(0, bytes(range(256)) * 0x100 + b"\x01" * 0x1000, "merged.bin")  # to 0x11000
    app = Region(0x10000, b"\x02" * 100, "demo.bin")
    assert TWIN.covered_by([merged]) and not TWIN.covered_by([app])
    pieces = TWIN.outside([merged, app])
    assert [(p.offset, len(p.data)) for p in pieces] == [
        (0x0, 0xD000),
        (0xF000, 0x2000),
        (0x10000, 100),
    ]
    assert pieces[0].data == merged.data[:0xD000] and pieces[1].data == merged.data[0xF000:]
    erased = TWIN.erased()
    assert (erased.offset, erased.data, erased.name) == (
        0xD000,
        b"\xff" * 0x2000,
        "ota_data_initial.bin (erased otadata)",
    )
