"""A rig's [firmware] and [boot_strap] tables: validated with the rest of the rig file."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.rig import load_rig
from hil.schema import ConfigError

ROOT = Path(__file__).resolve().parents[2]
BASE = """
[rig]
name = "t"
[console]
driver = "serial"
port = "/dev/null"
[broker]
driver = "embedded"
"""


def rig(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "rig.toml"
    path.write_text(BASE + extra)
    return path


def test_the_virtual_rig_holds_gpio0_on_relay_channel_3_and_writes_without_stub() -> None:
    virtual = load_rig(ROOT / "rigs" / "sim.toml")
    assert virtual.boot_strap is not None
    assert (virtual.boot_strap.name, virtual.boot_strap.options.channel) == ("lcus", 3)
    assert virtual.boot_strap_common.normally_closed is False  # energized holds GPIO0 low
    assert virtual.firmware is not None
    assert (virtual.firmware.method, virtual.firmware.chip, virtual.firmware.stub) == (
        "serial",
        "esp32s3",
        False,
    )
    assert virtual.with_sim_dir(Path("/run/twin")).boot_strap.options.port == "/run/twin/relay"


def test_the_image_is_found_beside_the_rig_file(tmp_path) -> None:
    loaded = load_rig(rig(tmp_path, '[firmware]\nimage = "build"\nmethod = "ota"\n'))
    assert loaded.firmware.image == str(tmp_path / "build")
    assert any("firmware: " in line and "by ota" in line for line in loaded.summary())


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('method = "jtag"', r"\[firmware.method\] got 'jtag', expected serial or ota"),
        ('chip = "esp32s9"', r"\[firmware.chip\] got 'esp32s9', expected .*esp32s3"),
        ("baud = 9600", r"\[firmware.baud\] got 9600, expected a baud rate >= 115200"),
        ('flasher = "x"', r"\[firmware.flasher\] unknown key"),
    ],
)
def test_a_bad_firmware_table_names_the_key(tmp_path, table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_rig(rig(tmp_path, f"[firmware]\n{table}\n"))


def test_a_boot_strap_is_a_power_table(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"\[boot_strap.driver\] missing; installed: .*lcus"):
        load_rig(rig(tmp_path, "[boot_strap]\nchannel = 3\n"))
    with pytest.raises(ConfigError, match=r"\[boot_strap\] uses \{sim\} but the rig has no"):
        load_rig(rig(tmp_path, '[boot_strap]\ndriver = "lcus"\nport = "{sim}/relay"\n'))
