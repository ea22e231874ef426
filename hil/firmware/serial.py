"""Writing the device's flash with esptool's Python API, over the console's own port.

esptool is the field's flasher (what `idf.py flash` runs), used here through `esptool.cmds`:
`detect_chip` connects to the chip's serial loader (which the caller has started: a held boot
strap, or the reset driver's loader sequence), `attach_flash`, `flash_md5sum` (the loader's
SPI_FLASH_MD5) to tell whether the image is already there, `read_flash` for otadata, and
`write_flash`, which checks
what it wrote by the same MD5. The port is the console's (`lend_port`): its reader pauses,
nothing opens the port a second time, and the port's settings are put back afterwards. A
native USB port comes back after the restart into the loader; until it answers, connecting is
retried within a deadline. esptool's output goes to the `hil.firmware` log.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import serial
from esptool.cmds import attach_flash, detect_chip, run_stub, write_flash
from esptool.logger import EspLog, TemplateLogger
from esptool.logger import log as esptool_log
from esptool.targets import CHIP_DEFS
from esptool.util import FatalError

from hil.console.serial import ConsoleError
from hil.firmware.options import ROM_BAUD, FirmwareOptions
from hil.firmware.source import Region

log = logging.getLogger("hil.firmware")

CONNECT_ATTEMPTS = 3  # esptool's sync attempts per try; the deadline bounds the tries
RETRY_S = 0.1


class FlashError(RuntimeError):
    """esptool could not reach the chip's loader or write its flash; the message says why."""


class EsptoolLog(TemplateLogger):
    """esptool's output, through its custom-logger interface, as lines on the `hil.firmware`
    log; progress every tenth."""

    def __init__(self) -> None:
        self._partial = ""
        self._shown = -1

    def print(self, *args: Any, sep: str = " ", end: str = "\n", **_: Any) -> None:
        self._partial += sep.join(str(a) for a in args) + end
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            if line.strip():
                log.info("esptool: %s", line.strip())

    def note(self, message: str) -> None:
        log.info("esptool: note: %s", message)

    def warning(self, message: str) -> None:
        log.warning("esptool: %s", message)

    def error(self, message: str) -> None:
        log.error("esptool: %s", message)

    def stage(self, finish: bool = False) -> None:
        """Collapsible stages are a terminal nicety; a log keeps every line."""

    def progress_bar(
        self,
        cur_iter: int,
        total_iters: int,
        prefix: str = "",
        suffix: str = "",
        bar_length: int = 30,
    ) -> None:
        tenth = cur_iter * 10 // total_iters if total_iters else 10
        if cur_iter == 0 or tenth < self._shown:
            self._shown = -1  # a new bar
        if tenth > self._shown:
            self._shown = tenth
            log.info("esptool: %s%d %%%s", prefix, tenth * 10, suffix)

    def set_verbosity(self, verbosity: str) -> None:
        """The log's own level decides what is kept."""


@contextlib.contextmanager
def esptool_logging() -> Iterator[None]:
    """esptool's output on the log for the duration, then its own logger again."""
    previous = EspLog.instance
    esptool_log.set_logger(EsptoolLog())
    try:
        yield
    finally:
        EspLog.instance = previous


@contextlib.contextmanager
def _settings_kept(port: serial.Serial) -> Iterator[None]:
    """esptool changes the port's rate and timeouts; the console gets its own back."""
    settings = port.get_settings()
    try:
        yield
    finally:
        # esptool closes the port when it gives up connecting; one that went away meanwhile
        # is the reader's to find again.
        with contextlib.suppress(serial.SerialException, OSError):
            if not port.is_open:
                port.open()
            port.apply_settings(settings)
            port.reset_input_buffer()  # the loader's last replies are no console lines


@contextlib.contextmanager
def connected(console: Any, options: FirmwareOptions, within: float) -> Iterator[Any]:
    """esptool connected to the chip's serial loader on the console's port, ready to write.

    The caller has restarted the chip into its loader; the port may be away for a moment (a
    native USB port re-enumerating), so connecting is tried again until `within` seconds pass.
    """
    deadline = time.monotonic() + within
    with esptool_logging():
        while True:
            with contextlib.ExitStack() as stack:
                try:
                    port = stack.enter_context(console.lend_port())
                    stack.enter_context(_settings_kept(port))
                    esp = detect_chip(port, ROM_BAUD, "no-reset", connect_attempts=CONNECT_ATTEMPTS)
                except (ConsoleError, FatalError, serial.SerialException, OSError) as exc:
                    problem = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                else:
                    yield _ready(esp, options)
                    return
            if time.monotonic() >= deadline:
                raise FlashError(
                    f"the chip's serial loader did not answer on {console.describe()} within "
                    f"{within:g} s (last: {problem}); check that the boot strap holds GPIO0 low "
                    "while the board restarts ([boot_strap]), or the [reset] driver's mode"
                )
            time.sleep(RETRY_S)  # the port is away or the loader not up yet: try again, bounded


def _ready(esp: Any, options: FirmwareOptions) -> Any:
    """The connected loader checked for the rig's chip, sped up as the rig says, flash attached."""
    chip_name = esp.CHIP_NAME
    expected = CHIP_DEFS[options.chip].CHIP_NAME
    if chip_name != expected:
        raise FlashError(
            f"the chip on the console port is an {chip_name}, not the {expected} the "
            "firmware is for ([firmware] chip); check the rig's console port"
        )
    if esp.secure_download_mode:
        raise FlashError(
            "the chip's loader is in Secure Download Mode, which cannot tell what its flash "
            'holds; use [firmware] method = "ota"'
        )
    if options.stub:
        esp = run_stub(esp)
    if options.baud > ROM_BAUD:
        esp.change_baud(options.baud)
    attach_flash(esp)
    return esp


def already_written(esp: Any, regions: Sequence[Region]) -> bool:
    """Whether the flash holds every region already, by the loader's MD5 of each."""
    for region in regions:
        found = esp.flash_md5sum(region.offset, len(region.written))
        if found != region.md5:
            log.info("%s: flash MD5 %s, the file's %s", region.describe(), found, region.md5)
            return False
    return True


def read(esp: Any, offset: int, length: int) -> bytes:
    """Bytes of the flash, by the loader's READ_FLASH (the ROM's READ_FLASH_SLOW without stub)."""
    return esp.read_flash(offset, length)


def write(esp: Any, regions: Sequence[Region]) -> None:
    """Write every region; esptool verifies each by its flash MD5 and raises if one differs."""
    files = []
    for region in regions:
        data = io.BytesIO(region.data)
        data.name = region.name  # esptool names the file in its progress lines
        files.append((region.offset, data))
    write_flash(esp, files)
