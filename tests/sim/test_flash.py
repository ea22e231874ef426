"""The twin's flash as its bootloader sees it: which slot boots after serial writes, OTA updates,
an unconfirmed app and an erased otadata, as ESP-IDF's bootloader with rollback decides; and
the flash file that makes all of it outlive the twin, read back by `esptool image-info`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hil.protocol.image import build_image
from hil.rig import load_rig
from hil.schema import ConfigError
from hil.sim import flash as flash_module
from hil.sim.flash import OTADATA, SLOTS, Flash, FlashFileError
from hil.sim.spi_flash import SECTOR
from tests.firmware.conftest import image_info

ROOT = Path(__file__).resolve().parents[2]
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


# -- the flash file: the flash outlives the twin ------------------------------------------------


def slot_version(file: Path, slot: int, tmp_path: Path) -> str:
    """The app version `esptool image-info` reads in a slot of the kept flash image."""
    offset, size = SLOTS[slot]
    app = tmp_path / f"slot{slot}.bin"
    app.write_bytes(file.read_bytes()[offset : offset + size])
    return image_info(app)["version"]


def test_a_missing_flash_file_is_made_factory_fresh_and_holds_the_whole_chip(tmp_path):
    file = tmp_path / "state" / "flash.bin"
    Flash("1.0.0", file)
    assert file.stat().st_size == 4 * 1024 * 1024
    assert slot_version(file, 0, tmp_path) == "1.0.0"
    assert file.read_bytes()[OTADATA : OTADATA + 2 * SECTOR] == b"\xff" * 2 * SECTOR


def test_what_an_update_and_its_boots_left_in_flash_is_what_the_next_twin_boots(tmp_path):
    file = tmp_path / "flash.bin"
    flash = Flash("1.0.0", file)
    booted(flash)
    flash.stage(build_image("2.0.0"))
    assert slot_version(file, 1, tmp_path) == "2.0.0", "the OTA slot write is kept at once"
    assert booted(flash) == "2.0.0"
    flash.confirm()
    flash.close()

    again = Flash("1.0.0", file)  # its factory version does not matter: the flash is there
    assert booted(again) == "2.0.0"
    again.close()
    assert booted(Flash("1.0.0", file)) == "2.0.0"


def test_an_update_never_confirmed_before_the_twin_stopped_is_rolled_back_by_the_next(
    tmp_path,
):
    file = tmp_path / "flash.bin"
    flash = Flash("1.0.0", file)
    booted(flash)
    flash.stage(build_image("2.0.0"))
    assert booted(flash) == "2.0.0"  # PENDING_VERIFY, kept; the twin stops before confirming
    flash.close()
    assert booted(Flash("1.0.0", file)) == "1.0.0"


def rolled_back_from(flash: Flash) -> str | None:
    """What the app, started on `flash`, would report as the version it was rolled back from."""
    booted(flash)
    flash.confirm()
    rollback = flash.unreported_rollback()
    return rollback.app.version if rollback else None


def test_a_rollback_is_reported_from_flash_after_a_power_cycle_and_only_once(tmp_path):
    file = tmp_path / "flash.bin"
    flash = Flash("1.0.0", file)
    booted(flash)
    flash.stage(build_image("2.0.0", project="hil-selftest-fail"))
    assert booted(flash) == "2.0.0" and flash.self_test_fails()
    flash.rollback()
    flash.close()  # power goes before the old app, booted again, could say so

    again = Flash("1.0.0", file)
    assert rolled_back_from(again) == "2.0.0"
    assert slot_version(file, 1, tmp_path) == "2.0.0", "what it reports is what ota_1 holds"
    again.close()  # and again before the report went out
    again = Flash("1.0.0", file)
    rollback = again.unreported_rollback()
    assert rollback is not None and booted(again) == "1.0.0"
    again.rollback_reported(rollback)
    again.close()

    reported = Flash("1.0.0", file)
    assert rolled_back_from(reported) is None, "reported once"
    reported.stage(build_image("2.0.1", project="hil-selftest-fail"))
    assert booted(reported) == "2.0.1"
    reported.rollback()
    assert rolled_back_from(reported) == "2.0.1", "a new rollback is news again"


def test_an_update_aborted_by_the_bootloader_is_a_rollback_too_unless_its_slot_is_gone():
    flash = Flash("1.0.0")
    booted(flash)
    flash.stage(build_image("2.0.0"))
    assert booted(flash) == "2.0.0"  # never confirmed: ABORTED at the next boot
    assert rolled_back_from(flash) == "2.0.0"
    flash.chip.erase(*SLOTS[1])  # esp_ota_get_last_invalid_partition validates the image
    assert flash.unreported_rollback() is None


def test_a_serial_write_is_kept_when_the_twin_keeps_the_flash(tmp_path):
    file = tmp_path / "flash.bin"
    flash = Flash("1.0.0", file)
    flash.chip.write(OTA_0, build_image("1.1.0"))  # what the ROM loader does for esptool
    assert slot_version(file, 0, tmp_path) == "1.0.0", "the loader's writes wait for keep()"
    flash.keep()
    assert slot_version(file, 0, tmp_path) == "1.1.0"


def test_the_file_is_replaced_in_one_step_never_rewritten_in_place(tmp_path):
    file = tmp_path / "flash.bin"
    flash = Flash("1.0.0", file)
    before = file.read_bytes()
    with file.open("rb") as old:  # a reader of the old file keeps a whole old image
        flash.stage(build_image("2.0.0"))
        assert old.read() == before
    assert file.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flash.bin", "flash.bin.lock"]


def test_a_flash_that_did_not_change_is_not_written_again(tmp_path):
    file = tmp_path / "flash.bin"
    flash = Flash("1.0.0", file)
    booted(flash)  # the first boot writes otadata ("Set actual ota_seq=1")
    written = file.stat().st_mtime_ns, file.stat().st_ino
    booted(flash)
    flash.confirm()
    assert (file.stat().st_mtime_ns, file.stat().st_ino) == written


def test_a_second_twin_on_the_same_flash_file_is_refused_until_the_first_gives_it_up(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(flash_module, "CLAIM_WAIT_S", 0.3)
    file = tmp_path / "flash.bin"
    first = Flash("1.0.0", file)
    with pytest.raises(FlashFileError) as raised:
        Flash("1.0.0", file)
    assert str(raised.value) == (
        f"the twin's flash file {file} is another running twin's (pid {os.getpid()}): one "
        "board's flash is one twin's; wait for that run to end, or give this rig its own "
        "[sim] flash"
    )
    first.close()
    assert booted(Flash("1.0.0", file)) == "1.0.0"


KEEP_AND_HANG = """
import sys, time
from pathlib import Path
from hil.protocol.image import build_image
from hil.sim.flash import Flash
flash = Flash("1.0.0", Path(sys.argv[1]))
flash.boot()
flash.stage(build_image("2.0.0"))
print("staged", flush=True)
time.sleep(60)
"""


def test_a_twin_killed_outright_leaves_its_last_flash_and_its_lock_free(tmp_path):
    file = tmp_path / "flash.bin"
    twin = subprocess.Popen(
        [sys.executable, "-c", KEEP_AND_HANG, str(file)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert twin.stdout is not None and twin.stdout.readline() == "staged\n"
    finally:
        twin.kill()
        twin.wait(10)
    assert booted(Flash("1.0.0", file)) == "2.0.0"


def test_without_a_file_each_flash_is_factory_fresh(tmp_path):
    flash = Flash("1.0.0")
    flash.stage(build_image("2.0.0"))
    assert flash.file is None and list(tmp_path.iterdir()) == []
    assert booted(Flash("1.0.0")) == "1.0.0"


@pytest.mark.parametrize("size", [0, 4096, 4 * 1024 * 1024 + 1])
def test_a_flash_file_of_another_size_is_one_error_naming_it_and_the_fix(tmp_path, size):
    file = tmp_path / "flash.bin"
    file.write_bytes(b"\xff" * size)
    with pytest.raises(FlashFileError) as raised:
        Flash("1.0.0", file)
    assert str(raised.value) == (
        f"the twin's flash file {file} holds {size} bytes, not a whole 4 MB flash image (cut "
        "short, or not the twin's); delete it for a factory-fresh device"
    )
    assert file.stat().st_size == size, "the file is left as it was"


def test_a_folder_where_the_flash_file_goes_is_one_error(tmp_path):
    with pytest.raises(FlashFileError, match=r"flash file .* is a folder; delete it"):
        Flash("1.0.0", tmp_path)


def test_the_rig_file_places_the_flash_file_beside_itself_and_checks_it(tmp_path):
    text = (ROOT / "rigs" / "sim.toml").read_text()
    rig = tmp_path / "copy" / "sim.toml"
    rig.parent.mkdir()
    rig.write_text(text)
    assert load_rig(rig).sim.flash == tmp_path / "copy" / ".state" / "sim-flash.bin"
    assert not (tmp_path / "copy" / ".state").exists(), "checking a rig writes nothing"

    (tmp_path / "copy" / ".state").mkdir()
    (tmp_path / "copy" / ".state" / "sim-flash.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(ConfigError) as raised:
        load_rig(rig)
    assert str(raised.value) == (
        f"{rig}: [sim.flash] the twin's flash file {rig.parent / '.state' / 'sim-flash.bin'} "
        "holds 100 bytes, not a whole 4 MB flash image (cut short, or not the twin's); delete "
        "it for a factory-fresh device"
    )

    home = rig.with_name("home.toml")
    home.write_text(text.replace('".state/sim-flash.bin"', '"~/bench/flash.bin"'))
    assert load_rig(home).sim.flash == Path.home() / "bench" / "flash.bin"


def test_hil_sim_refuses_a_short_flash_file_before_it_starts(tmp_path):
    file = tmp_path / "flash.bin"
    file.write_bytes(b"\xff" * 10)
    result = subprocess.run(
        [sys.executable, "-m", "hil.sim", "--dir", str(tmp_path / "ports"), "--flash", str(file)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().endswith(
        f"hil sim: the twin's flash file {file} holds 10 bytes, not a whole 4 MB flash image "
        "(cut short, or not the twin's); delete it for a factory-fresh device"
    )
    assert not (tmp_path / "ports").exists() or not any((tmp_path / "ports").iterdir())
