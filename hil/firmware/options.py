"""A rig's `[firmware]` table: which image to put on the device, how, and for which chip.

`image` is relative to the rig file and may be left out (then only `--firmware` names one). It
is not required to exist when the rig file is checked: a build folder appears after the build,
and `--firmware` may name another; the image is verified when a run is about to write it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hil import schema

METHODS = ("serial", "ota")
ROM_BAUD = 115200  # the ROM loader's own rate, at which every esptool connection starts


def chip_names() -> tuple[str, ...]:
    """The chips esptool knows (`--chip` values), so a rig names one esptool can talk to."""
    from esptool.targets import CHIP_DEFS

    return tuple(CHIP_DEFS)


@dataclass(frozen=True)
class FirmwareOptions:
    image: str = ""  # an app .bin, a merged image, or an ESP-IDF build folder
    method: str = "serial"  # "serial": esptool over the console port; "ota": the MQTT sender
    chip: str = "esp32s3"  # esptool's name of the device's chip; images for another are refused
    stub: bool = True  # esptool's flasher stub (faster); false talks to the ROM loader only
    baud: int = ROM_BAUD  # above 115200, esptool switches to it after connecting

    def __post_init__(self) -> None:
        with schema.Checks() as check:
            check(schema.one_of, self.method, "method", METHODS)
            check(schema.one_of, self.chip, "chip", chip_names())
            check(schema.whole_range, self.baud, "baud", ROM_BAUD, what="a baud rate")


def load_firmware_table(table: dict[str, Any], rig_dir: Path) -> FirmwareOptions:
    """`[firmware]` validated, its `image` made absolute against the rig file's folder."""
    options = schema.load(FirmwareOptions, table, "firmware")
    if not options.image:
        return options
    image = Path(options.image).expanduser()
    image = image if image.is_absolute() else rig_dir / image
    return dataclasses.replace(options, image=str(image))
