"""The twin's flash as its bootloader sees it: which slot boots after serial writes, OTA updates,
an unconfirmed app and an erased otadata, as ESP-IDF's bootloader with rollback decides."""

from __future__ import annotations

from hil.protocol.image import build_image
from hil.sim.flash import OTADATA, SLOTS, Flash
from hil.sim.spi_flash import SECTOR

OTA_0 = SLOTS[0][0]


def booted(flash: Flash) -> str:
    boot = flash.boot()
    assert boot.app is not None, boot.lines
    return boot.app.version


def test_a_fresh_device_boots_ota_0_and_a_serial_write_there_replaces_it():
    flash = Flash("1.0.0")
    assert booted(flash) == "1.0.0"
    flash.chip.write(OTA_0, build_image("1.1.0"))
    assert booted(flash) == "1.1.0"


def test_after_an_ota_the_bootloader_keeps_the_updated_slot_until_otadata_is_erased():
    flash = Flash("1.0.0")
    booted(flash)
    flash.stage(build_image("2.0.0"))
    assert booted(flash) == "2.0.0"
    flash.confirm()
    flash.chip.write(OTA_0, build_image("3.0.0"))
    assert booted(flash) == "2.0.0", "otadata still selects ota_1"
    flash.chip.erase(OTADATA, 2 * SECTOR)  # what writing ota_data_initial.bin does
    assert booted(flash) == "3.0.0"


def test_an_update_that_never_confirms_itself_is_aborted_at_the_next_boot():
    flash = Flash("1.0.0")
    booted(flash)
    flash.stage(build_image("2.0.0"))
    assert booted(flash) == "2.0.0"
    assert booted(flash) == "1.0.0"
    assert booted(flash) == "1.0.0"


def test_a_rolled_back_update_stays_rolled_back_and_the_next_update_takes_its_slot():
    flash = Flash("1.0.0")
    booted(flash)
    flash.stage(build_image("2.0.0", project="hil-selftest-fail"))
    assert booted(flash) == "2.0.0"
    assert flash.self_test_fails()
    flash.rollback()
    assert booted(flash) == "1.0.0"
    assert not flash.self_test_fails()
    flash.stage(build_image("2.0.1"))
    assert booted(flash) == "2.0.1"
    flash.confirm()
    assert booted(flash) == "2.0.1"


def test_an_erased_slot_is_reported_as_nothing_flashed_and_the_other_slot_boots():
    flash = Flash("1.0.0")
    booted(flash)
    flash.stage(build_image("2.0.0"))
    booted(flash)
    flash.confirm()
    flash.chip.erase(*SLOTS[1])
    boot = flash.boot()
    assert boot.app is not None and boot.app.version == "1.0.0"
    assert [line.split(": ", 1)[1] for line in boot.lines] == [
        f"image at 0x{SLOTS[1][0]:x} has invalid magic byte (nothing flashed here?)",
        "OTA app partition slot 1 is not bootable",
    ]
