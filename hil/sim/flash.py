"""The device's flash as its bootloader and OTA code see it: two OTA app slots and the otadata
that chooses between them, all kept in the SPI flash's bytes.

The partition table is the common 4 MB two-slot layout without a factory app (ota_0 at 0x10000,
ota_1 at 0x1F0000, otadata at 0xD000), with app rollback enabled. Selection follows ESP-IDF
v5's bootloader_utility.c: the valid otadata entry with the highest sequence number picks slot
(seq - 1) % 2; with both entries erased it tries ota_0. A NEW image becomes PENDING_VERIFY when
it boots, and one still pending at the next boot is ABORTED (the previous app runs again). What
the ROM loader writes over serial lands in the same bytes, so an image written at 0x10000 boots
when otadata is erased or selects ota_0.

The bootloader logs at warning level, so only its E lines reach the console.

What the app learns of a rollback it learns from flash too: esp_ota_get_last_invalid_partition
(ESP-IDF v5 esp_ota_ops.c) finds the otadata entry marked INVALID or ABORTED, the lower sequence
number of two, and the app in the slot it maps to, if that app still verifies. The reference
firmware reports it once, keeping in NVS which one it last reported: the entry's sequence
number and the app's esp_app_desc_t (a later update may fail in the same slot with the same
number). The twin does not model NVS's page format: it keeps that one value as a record of its
own at the start of the nvs partition (0x9000), so it outlives power as NVS does and an erased
flash forgets it.

With a flash file (`[sim] flash`), the whole 4 MB image outlives the twin as a board's flash
outlives power cycles and runs: loaded at start (the factory state when the file is missing)
and kept after every operation that changed it, replaced in one step, so a twin killed at any
moment leaves a whole image: the one before the change or the one after it. One board's flash
is one twin's: a twin holds the file's lock (`<file>.lock`, an flock that dies with it) while
it runs, and a second twin on the same file is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from hil.protocol.image import build_image
from hil.sim.esp_image import App, verify
from hil.sim.spi_flash import SECTOR, SIZE, SpiFlash

SELFTEST_FAIL_SUFFIX = "-selftest-fail"
DEFAULT_PROJECT = "esp32-sim7600"

OTADATA = 0xD000
NVS = 0x9000  # the nvs partition: the firmware's "rollback reported" value (see above)
REPORTED = struct.Struct("<4sI")  # magic, CRC-32 of the reported entry's seq and app descriptor
REPORTED_MAGIC = b"RBK1"
APP_DESC = 0x20, 256  # where esp_app_desc_t lies in an app image, and its size
SLOTS = ((0x10000, 0x1E0000), (0x1F0000, 0x1E0000))  # (offset, size) of ota_0 and ota_1
ENTRY = struct.Struct("<I20sII")  # esp_ota_select_entry_t: seq, label, state, crc
ERASED_SEQ = 0xFFFFFFFF

FRESH_FIX = "delete it for a factory-fresh device"
CLAIM_WAIT_S = 5.0  # for a twin on the same file that is stopping, as the run before ends
CLAIM_POLL_S = 0.05
P = ParamSpec("P")
R = TypeVar("R")

# esp_ota_img_states_t
NEW = 0x0
PENDING_VERIFY = 0x1
VALID = 0x2
INVALID = 0x3
ABORTED = 0x4


def _crc(seq: int) -> int:
    """bootloader_common_ota_select_crc: esp_rom_crc32_le(UINT32_MAX, &ota_seq, 4)."""
    return zlib.crc32(struct.pack("<I", seq), 0xFFFFFFFF)


class FlashFileError(ValueError):
    """A flash file that cannot hold the twin's flash; the message names it and the fix."""


def _unreadable(file: Path, exc: OSError) -> FlashFileError:
    if isinstance(exc, IsADirectoryError):
        return FlashFileError(f"the twin's flash file {file} is a folder; {FRESH_FIX}")
    return FlashFileError(f"cannot read the twin's flash file {file}: {exc.strerror}")


def _check_size(file: Path, size: int) -> None:
    if size != SIZE:
        raise FlashFileError(
            f"the twin's flash file {file} holds {size} bytes, not a whole "
            f"{SIZE // 2**20} MB flash image (cut short, or not the twin's); {FRESH_FIX}"
        )


def check_file(file: Path) -> None:
    """FlashFileError unless `file` is missing (a factory-fresh device) or a whole image."""
    try:
        with file.open("rb") as opened:
            size = os.fstat(opened.fileno()).st_size
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _unreadable(file, exc) from None
    _check_size(file, size)


def _load(file: Path) -> bytes | None:
    """The image kept in `file`, or None when there is none yet."""
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _unreadable(file, exc) from None
    _check_size(file, len(data))
    return data


def _claim(file: Path) -> int:
    """The flash file's lock, held for as long as the returned descriptor is open."""
    lock = file.with_name(file.name + ".lock")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise FlashFileError(f"cannot lock the twin's flash file {file}: {exc.strerror}") from None
    deadline = time.monotonic() + CLAIM_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise FlashFileError(
                    f"the twin's flash file {file} is another running twin's (pid {holder}): "
                    "one board's flash is one twin's; wait for that run to end, or give this "
                    "rig its own [sim] flash"
                ) from None
            time.sleep(CLAIM_POLL_S)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _kept(method: Callable[Concatenate[Flash, P], R]) -> Callable[Concatenate[Flash, P], R]:
    """A flash operation whose changes reach the flash file when it returns."""

    @functools.wraps(method)
    def run(self: Flash, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        finally:
            self.keep()

    return run


@dataclass(frozen=True)
class Entry:
    seq: int
    state: int
    crc: int

    @property
    def valid(self) -> bool:
        """bootloader_common_ota_select_valid."""
        return (
            self.seq != ERASED_SEQ
            and self.state not in (INVALID, ABORTED)
            and self.crc == _crc(self.seq)
        )


@dataclass(frozen=True)
class Rollback:
    """The app the bootloader or the app itself gave up on, by its otadata sequence number."""

    seq: int
    app: App
    desc: bytes  # its esp_app_desc_t as the slot holds it

    @property
    def key(self) -> int:
        """What the firmware keeps in NVS to know this rollback again."""
        return zlib.crc32(struct.pack("<I", self.seq) + self.desc)


@dataclass(frozen=True)
class Boot:
    """One run of the bootloader: the app it started (None: none bootable) and what it logged."""

    app: App | None
    lines: list[str]


class Flash:
    def __init__(self, version: str, file: Path | None = None) -> None:
        """A factory-fresh device (`version` in ota_0), or with `file` the flash kept there
        (factory-fresh, and kept, when the file is missing)."""
        self.file = file
        self._claim = _claim(file) if file is not None else None
        try:
            contents = _load(file) if file is not None else None
        except FlashFileError:
            self.close()
            raise
        self.chip = SpiFlash(contents=contents)
        self._kept_changes = self.chip.changes
        if contents is None:
            self.chip.write(SLOTS[0][0], build_image(version, project=DEFAULT_PROJECT))
            self.keep()
        self.running = App(version, DEFAULT_PROJECT)
        self.slot = 0
        self._clock_ms = 0

    def close(self) -> None:
        """Give the flash file up for another twin; safe to call more than once."""
        claim, self._claim = self._claim, None
        if claim is not None:
            with contextlib.suppress(OSError):
                os.close(claim)

    def keep(self) -> None:
        """Write the flash to its file if it changed since it was last kept."""
        if self.file is None or self.chip.changes == self._kept_changes:
            return
        temporary = self.file.with_name(self.file.name + ".tmp")
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_bytes(self.chip.read(0, self.chip.size))
            os.replace(temporary, self.file)
        except OSError as exc:
            raise FlashFileError(
                f"cannot write the twin's flash file {self.file}: {exc.strerror}"
            ) from None
        self._kept_changes = self.chip.changes

    # -- otadata ------------------------------------------------------------------------------

    def _entry(self, index: int) -> Entry:
        seq, _label, state, crc = ENTRY.unpack(self.chip.read(OTADATA + index * SECTOR, ENTRY.size))
        return Entry(seq, state, crc)

    def _write_entry(self, index: int, seq: int, state: int) -> None:
        raw = ENTRY.pack(seq, b"\xff" * 20, state, _crc(seq))
        self.chip.write(OTADATA + index * SECTOR, raw)

    def _active(self) -> int | None:
        """The otadata entry in force: the valid one with the higher sequence number."""
        entries = [self._entry(0), self._entry(1)]
        valid = [i for i in (0, 1) if entries[i].valid]
        if not valid:
            return None
        return max(valid, key=lambda i: entries[i].seq)

    def _selected(self) -> tuple[int, bool]:
        """bootloader_utility_get_selected_boot_partition with rollback: (slot, from otadata)."""
        for index in (0, 1):  # an app still pending since the last boot never confirmed itself
            entry = self._entry(index)
            if entry.state == PENDING_VERIFY:
                self._write_entry(index, entry.seq, ABORTED)
        active = self._active()
        if active is None:
            return 0, False  # "No factory image, trying OTA 0"
        entry = self._entry(active)
        if entry.state == NEW:
            self._write_entry(active, entry.seq, PENDING_VERIFY)
        return (entry.seq - 1) % len(SLOTS), True

    # -- the bootloader -----------------------------------------------------------------------

    def _log(self, tag: str, message: str) -> str:
        self._clock_ms += 6
        return f"E ({self._clock_ms}) {tag}: {message}"

    @_kept
    def boot(self) -> Boot:
        """bootloader_utility_load_boot_image: the selected slot, else the others in turn."""
        self._clock_ms = 300
        start, from_otadata = self._selected()
        lines: list[str] = []
        order = [start, *range(start - 1, -1, -1), *range(start + 1, len(SLOTS))]
        for slot in order:
            verdict = verify(self.chip, *SLOTS[slot])
            if verdict.app is not None:
                if not from_otadata:
                    self._write_entry(0, slot + 1, VALID)  # "Set actual ota_seq=1 in otadata[0]"
                self.slot, self.running = slot, verdict.app
                return Boot(verdict.app, lines)
            lines += [self._log(tag, message) for tag, message in verdict.errors]
            lines.append(self._log("boot", f"OTA app partition slot {slot} is not bootable"))
        lines.append(self._log("boot", "No bootable app partitions in the partition table"))
        return Boot(None, lines)

    # -- the app's OTA API --------------------------------------------------------------------

    @_kept
    def stage(self, image: bytes) -> None:
        """esp_ota_write to the other slot, then esp_ota_set_boot_partition: the next boot tries
        it (state NEW, a sequence number that maps to that slot)."""
        target = 1 - self.slot
        offset, _size = SLOTS[target]
        self.chip.erase(offset, len(image))
        self.chip.program(offset, image)
        active = self._active()
        seq = 0 if active is None else self._entry(active).seq
        new = seq + 1
        while (new - 1) % len(SLOTS) != target:
            new += 1
        self._write_entry(1 if active == 0 else 0, new, NEW)

    def _running_entry(self) -> int | None:
        active = self._active()
        if active is None or (self._entry(active).seq - 1) % len(SLOTS) != self.slot:
            return None
        return active

    def self_test_fails(self) -> bool:
        """A freshly updated app whose project name marks it as failing its self-test."""
        index = self._running_entry()
        pending = index is not None and self._entry(index).state == PENDING_VERIFY
        return pending and self.running.project.endswith(SELFTEST_FAIL_SUFFIX)

    @_kept
    def confirm(self) -> None:
        """esp_ota_mark_app_valid_cancel_rollback."""
        index = self._running_entry()
        if index is not None and self._entry(index).state == PENDING_VERIFY:
            self._write_entry(index, self._entry(index).seq, VALID)

    @_kept
    def rollback(self) -> None:
        """esp_ota_mark_app_invalid_rollback_and_reboot, before its reboot."""
        index = self._running_entry()
        if index is not None:
            self._write_entry(index, self._entry(index).seq, INVALID)

    def last_invalid(self) -> Rollback | None:
        """esp_ota_get_last_invalid_partition and the app description of that slot: None when
        no entry is INVALID or ABORTED, or its slot holds no app that verifies."""
        entries = [self._entry(0), self._entry(1)]
        invalid = [
            entry
            for entry in entries
            if entry.seq != ERASED_SEQ
            and entry.crc == _crc(entry.seq)
            and entry.state in (INVALID, ABORTED)
        ]
        if not invalid:
            return None
        seq = min(entry.seq for entry in invalid)  # bootloader_common_select_otadata(.., false)
        offset, size = SLOTS[(seq - 1) % len(SLOTS)]
        app = verify(self.chip, offset, size).app
        if app is None:
            return None
        return Rollback(seq, app, self.chip.read(offset + APP_DESC[0], APP_DESC[1]))

    def unreported_rollback(self) -> Rollback | None:
        """The last invalid app, unless the firmware already reported it (its NVS value)."""
        rollback = self.last_invalid()
        magic, key = REPORTED.unpack(self.chip.read(NVS, REPORTED.size))
        if rollback is None or (magic == REPORTED_MAGIC and key == rollback.key):
            return None
        return rollback

    @_kept
    def rollback_reported(self, rollback: Rollback) -> None:
        """nvs_set_blob and nvs_commit of what identifies the rollback just reported."""
        self.chip.erase(NVS, SECTOR)
        self.chip.program(NVS, REPORTED.pack(REPORTED_MAGIC, rollback.key))
