"""The serial install's order on the rig's own drivers: the strap held across the board's
power cycle, the loader reached, the strap released whatever happened; a rig without a strap
starts the loader with its reset driver."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest

from hil.firmware import install
from hil.firmware import serial as flasher
from hil.firmware.install import Plan, _write_in_loader
from hil.firmware.serial import FlashError
from hil.firmware.source import read_source
from hil.rig import load_rig

from .conftest import make_build, ota_table

RIG = """
[rig]
name = "seq"
[console]
driver = "serial"
port = "/dev/null"
[board_power]
driver = "command"
on = "sh -c 'echo board-on >> {log}'"
off = "sh -c 'echo board-off >> {log}'"
off_s = 0.01
[boot_strap]
driver = "command"
on = "sh -c 'echo strap-on >> {log}'"
off = "sh -c 'echo strap-off >> {log}'"
[broker]
driver = "embedded"
[firmware]
stub = false
"""


class FakeLoader:
    """esptool's loader as far as the install uses it: a flash that holds `held` (MD5s by
    offset) and `otadata` (bytes by offset)."""

    def __init__(self, held: dict[int, str], otadata: dict[int, bytes] | None = None) -> None:
        self.held = held
        self.otadata = otadata or {}
        self.written: list[int] = []

    def flash_md5sum(self, offset: int, size: int) -> str:
        return self.held.get(offset, "ff" * 16)

    def read_flash(self, offset: int, length: int) -> bytes:
        return self.otadata.get(offset, b"\xff" * length)[:length]


@pytest.fixture
def rig_session(tmp_path: Path):
    log = tmp_path / "switched.log"
    rig_file = tmp_path / "rig.toml"
    rig_file.write_text(RIG.format(log=log))
    rig = load_rig(rig_file)
    board = rig.board_power.cls(rig.board_power.options, rig.board_power_common, tmp_path)
    session = SimpleNamespace(rig=rig, board_power=board, reset=None, console=object())
    source = read_source(make_build(tmp_path / "build"), "esp32s3")

    def switched() -> list[str]:
        return log.read_text().split() if log.exists() else []

    return session, Plan(source, rig.firmware, reflash=False), switched


def loader_at(monkeypatch, loader: FakeLoader | Exception) -> None:
    @contextlib.contextmanager
    def connected(console, options, within):
        if isinstance(loader, Exception):
            raise loader
        yield loader

    monkeypatch.setattr(flasher, "connected", connected)
    monkeypatch.setattr(
        flasher, "write", lambda esp, regions: esp.written.extend(r.offset for r in regions)
    )


def test_the_strap_is_held_across_the_power_cycle_and_released_after_writing(
    rig_session, monkeypatch
) -> None:
    session, plan, switched = rig_session
    loader = FakeLoader({})
    loader_at(monkeypatch, loader)
    assert _write_in_loader(session, plan) is True
    assert switched() == ["strap-on", "board-off", "board-on", "strap-off"]
    assert loader.written == [0x0, 0x8000, 0x10000]


def test_the_strap_is_released_when_the_loader_does_not_answer(rig_session, monkeypatch) -> None:
    session, plan, switched = rig_session
    loader_at(monkeypatch, FlashError("the chip's serial loader did not answer"))
    with pytest.raises(FlashError):
        _write_in_loader(session, plan)
    assert switched() == ["strap-on", "board-off", "board-on", "strap-off"]


def test_a_flash_that_holds_every_region_is_not_written(rig_session, monkeypatch) -> None:
    session, plan, switched = rig_session
    loader = FakeLoader({r.offset: r.md5 for r in plan.source.regions})
    loader_at(monkeypatch, loader)
    assert _write_in_loader(session, plan) is False
    assert loader.written == []
    assert switched()[-1] == "strap-off"


def test_one_region_that_differs_writes_them_all_and_reflash_writes_regardless(
    rig_session, monkeypatch
) -> None:
    session, plan, _ = rig_session
    held = {r.offset: r.md5 for r in plan.source.regions[:-1]}  # the app differs
    loader = FakeLoader(held)
    loader_at(monkeypatch, loader)
    assert _write_in_loader(session, plan) is True
    again = FakeLoader({r.offset: r.md5 for r in plan.source.regions})
    loader_at(monkeypatch, again)
    assert _write_in_loader(session, Plan(plan.source, plan.options, reflash=True)) is True
    assert again.written == [0x0, 0x8000, 0x10000]


def test_without_a_strap_the_reset_driver_starts_the_loader(rig_session, monkeypatch) -> None:
    session, plan, switched = rig_session
    calls: list[str] = []
    session.rig = dataclasses.replace(session.rig, boot_strap=None)
    session.reset = SimpleNamespace(
        enter_bootloader=lambda: calls.append("loader"), describe=lambda: "fake reset"
    )
    loader_at(monkeypatch, FakeLoader({}))
    assert _write_in_loader(session, plan) is True
    assert calls == ["loader"]
    assert switched() == []
    assert install.unusable(session.rig, plan.options, plan.source) is not None  # no esp-serial


# ota_seq 1 selects ota_0, 2 selects ota_1; the CRCs are the values ESP-IDF's bootloader accepts
SELECTS_OTA_0 = struct.pack("<I20sII", 1, b"\xff" * 20, 2, 0x4743989A)
SELECTS_OTA_1 = struct.pack("<I20sII", 2, b"\xff" * 20, 2, 0x55F63774)


def app_image_plan(plan: Plan) -> Plan:
    app = read_source(plan.source.path / "demo.bin", "esp32s3")
    return Plan(app, plan.options, reflash=False)


def test_an_app_already_at_ota_0_is_written_with_erased_otadata_when_ota_1_boots(
    rig_session, monkeypatch, caplog
) -> None:
    session, plan, _ = rig_session
    plan = app_image_plan(plan)
    (app,) = plan.source.regions
    loader = FakeLoader({0x10000: app.md5}, {0xD000: SELECTS_OTA_0, 0xE000: SELECTS_OTA_1})
    loader_at(monkeypatch, loader)
    with caplog.at_level(logging.INFO, "hil.firmware"):
        assert _write_in_loader(session, plan) is True
    assert loader.written == [0xD000, 0x10000]
    lines = [r.getMessage() for r in caplog.records]
    assert (
        "otadata at 0xD000 is ota_seq 2, selecting ota_1, which does not start the app in flash"
        in lines
    )
    assert any(
        "demo.bin brings no otadata: erasing otadata at 0xD000 (0x2000 bytes) with it, as "
        "idf.py flash writes ota_data_initial.bin" in line
        for line in lines
    ), lines


@pytest.mark.parametrize("otadata", [{}, {0xD000: SELECTS_OTA_0}], ids=["erased", "ota_0"])
def test_an_app_at_ota_0_that_boots_is_not_written(rig_session, monkeypatch, otadata) -> None:
    session, plan, _ = rig_session
    plan = app_image_plan(plan)
    (app,) = plan.source.regions
    loader = FakeLoader({0x10000: app.md5}, otadata)
    loader_at(monkeypatch, loader)
    assert _write_in_loader(session, plan) is False
    assert loader.written == []


def test_a_build_with_its_own_otadata_writes_it_and_is_not_compared_by_it(
    rig_session, monkeypatch, tmp_path
) -> None:
    session, plan, _ = rig_session
    build = make_build(tmp_path / "ota-build", table=ota_table(), otadata=0xD000)
    plan = Plan(read_source(build, "esp32s3"), plan.options, reflash=False)
    held = {r.offset: r.md5 for r in plan.source.regions if r.offset != 0xD000}
    booted = FakeLoader(held, {0xD000: SELECTS_OTA_0})  # the bootloader rewrote otadata
    loader_at(monkeypatch, booted)
    assert _write_in_loader(session, plan) is False
    updated = FakeLoader(held, {0xD000: SELECTS_OTA_0, 0xE000: SELECTS_OTA_1})
    loader_at(monkeypatch, updated)
    assert _write_in_loader(session, plan) is True
    assert updated.written == [0x0, 0x8000, 0xD000, 0x10000]  # its own ota_data_initial.bin
