"""esptool on the console's own port: a chip that never answers as a loader is one error
within the deadline, naming the port and the strap, and the console gets its port back with
its own settings; esptool's output lands on the log."""

from __future__ import annotations

import logging
import time

import pytest

from hil.console.serial import SerialConsole, SerialOptions
from hil.firmware.options import FirmwareOptions
from hil.firmware.serial import FlashError, connected, esptool_logging
from hil.profile import load_profile
from tests.core.conftest import PtyPort
from tests.waiting import until


@pytest.fixture
def console(tmp_path):
    port = PtyPort(tmp_path / "console")
    reader = SerialConsole(SerialOptions(port=str(port.link), baud=57600), load_profile())
    reader.open()
    yield reader, port
    reader.close()
    port.close()


def test_a_chip_that_is_no_loader_is_one_error_and_the_console_keeps_its_port(console) -> None:
    reader, port = console
    started = time.monotonic()
    with pytest.raises(FlashError) as caught, connected(reader, FirmwareOptions(), within=0.5):
        pytest.fail("connected to a loader that is not there")
    assert time.monotonic() - started < 15
    text = str(caught.value)
    assert "serial loader did not answer on serial console" in text and "[boot_strap]" in text
    with reader.lend_port() as lent:
        assert lent.is_open and lent.baudrate == 57600  # esptool's 115200 undone
    port.write_line("I (42) app: back to the console")
    until(lambda: reader.search("back to the console"), 5, "the console reading again")


def test_esptool_output_goes_to_the_log(caplog) -> None:
    from esptool.logger import log

    with caplog.at_level(logging.INFO, "hil.firmware"), esptool_logging():
        log.print("Detecting chip type...", end="")
        log.print(" ESP32-S3")
        with log.progress(total=1000, unit="B") as progress:
            for _ in range(10):
                progress.update(100, description="Writing at 0x00010000")
    lines = [r.getMessage() for r in caplog.records]
    assert "esptool: Detecting chip type... ESP32-S3" in lines
    shown = [line for line in lines if "Writing at 0x00010000" in line]
    assert 2 <= len(shown) <= 11 and shown[-1].startswith("esptool: Writing at 0x00010000 100 %")
