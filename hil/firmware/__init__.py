"""The firmware under test: which image a run puts on the device, and how.

`--firmware PATH` (or a rig's `[firmware]` table) names an ESP-IDF build output; the harness
verifies it, writes it (esptool over the console port, or the MQTT OTA sender), restarts the
device and requires `STATUS:ONLINE:<that image's version>` before the first suite test. What
was tested is kept as `FirmwareFacts` in the config stash, for run.json, JUnit and reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class FirmwareFacts:
    """The image a run tested, read from the image itself (its app descriptor)."""

    path: str
    version: str
    sha256: str  # of the app image, as esptool's image-info reports its "validation hash"
    project: str
    idf_version: str
    build_date: str
    build_time: str
    method: str  # "serial" or "ota"
    written: bool  # False when the device already ran this exact image


FIRMWARE_KEY = pytest.StashKey[FirmwareFacts]()
