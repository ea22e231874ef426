"""LCUS-1/2/4 USB serial relay boards (CH340 at 9600 8N1): frame `A0 <channel> <state> <sum>`.

The port is a device path, or a pyserial URL (`rfc2217://host:port`) for a board served over
the network, such as a labgrid place's relay: the same frames go through.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from typing import ClassVar

import serial

from hil import schema
from hil.power import PowerDriver, PowerError

START = 0xA0
FRAME_GAP_S = 0.05  # many boards ignore a frame that follows the previous one within ~50 ms
MAX_CHANNEL = 8  # LCUS boards come with 1, 2, 4 or 8 channels on one port
REOPEN_POLL_S = 0.05


def encode_frame(channel: int, on: bool) -> bytes:
    """The 4-byte command that switches `channel` (from 1) on or off."""
    if not 1 <= channel <= 255:
        raise ValueError(f"relay channel must be 1 to 255, got {channel}")
    body = bytes((START, channel, 1 if on else 0))
    return body + bytes(((sum(body)) & 0xFF,))


def decode_frame(frame: bytes) -> tuple[int, bool]:
    """(channel, on) from a 4-byte frame; ValueError if it is not a valid LCUS command."""
    if len(frame) != 4 or frame[0] != START:
        raise ValueError(f"not an LCUS frame: {frame.hex(' ')}")
    if frame[2] not in (0, 1):
        raise ValueError(f"LCUS state byte must be 0 or 1: {frame.hex(' ')}")
    if (frame[0] + frame[1] + frame[2]) & 0xFF != frame[3]:
        raise ValueError(f"LCUS checksum mismatch: {frame.hex(' ')}")
    return frame[1], frame[2] == 1


@dataclass(frozen=True)
class LcusOptions:
    port: str  # a CH340 has no serial number: /dev/serial/by-path/... names its USB socket
    channel: int = 1
    baud: int = 9600
    reappear_s: float = 5.0  # how long the board may be away (re-enumerating) when switching

    def __post_init__(self) -> None:
        with schema.Checks() as check:
            check(schema.whole_range, self.baud, "baud", 1, what="a baud rate")
            check(schema.positive, self.reappear_s, "reappear_s")
            if not 1 <= self.channel <= MAX_CHANNEL:  # joins the failures above
                raise schema.ConfigError(
                    "channel",
                    f"channel must be 1 to {MAX_CHANNEL} (LCUS boards), got {self.channel}",
                )


class _Board:
    """One LCUS board's port, opened once for all its channels.

    `[power]` and `[board_power]` may be two channels of one board: each driver holds the
    board, and frames from both go through one port, one lock and one frame gap, so a frame
    for one channel never lands inside (or too close behind) a frame for the other. A board
    that re-enumerated (its port vanished and came back) is reopened by path.
    """

    _boards: ClassVar[dict[str, _Board]] = {}
    _boards_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, key: str, path: str, baud: int) -> None:
        self.key, self.path, self.baud = key, path, baud
        self.users = 0
        self.lock = threading.Lock()
        self.serial: serial.Serial | None = None
        self.last_frame = 0.0

    @classmethod
    def hold(cls, path: str, baud: int) -> _Board:
        key = path if "://" in path else os.path.realpath(path)
        with cls._boards_lock:
            board = cls._boards.get(key)
            if board is None:
                board = cls(key, path, baud)
                board.serial = board._open()
                cls._boards[key] = board
            elif board.baud != baud:
                raise PowerError(
                    f"LCUS board {path} is already open at {board.baud} baud; give both "
                    "channels the same baud"
                )
            board.users += 1
            return board

    def release(self) -> None:
        with self._boards_lock:
            self.users -= 1
            if self.users > 0:
                return
            self._boards.pop(self.key, None)
        with self.lock:
            self._close()

    def _open(self) -> serial.Serial:
        return serial.serial_for_url(self.path, self.baud, timeout=1)

    def _close(self) -> None:
        if self.serial is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                self.serial.close()
            self.serial = None

    def send(self, frame: bytes, reappear_s: float) -> None:
        """Write one frame, spaced from the last; reopen once if the board re-enumerated."""
        with self.lock:
            wait = self.last_frame + FRAME_GAP_S - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                self._write(frame)
            except (serial.SerialException, OSError):
                self._close()
                self._reopen(reappear_s)
                self._write(frame)
            self.last_frame = time.monotonic()

    def _write(self, frame: bytes) -> None:
        if self.serial is None:
            raise serial.SerialException(f"{self.path} is not open")
        self.serial.write(frame)
        self.serial.flush()

    def _reopen(self, reappear_s: float) -> None:
        deadline = time.monotonic() + reappear_s
        while True:
            try:
                self.serial = self._open()
                return
            except (serial.SerialException, OSError) as exc:
                if time.monotonic() >= deadline:
                    raise PowerError(
                        f"LCUS relay board {self.path} went away and did not come back within "
                        f"{reappear_s:g} s ({exc}); check its USB cable"
                    ) from None
            time.sleep(REOPEN_POLL_S)  # polling for the port to reappear, bounded above


class LcusRelay(PowerDriver):
    """One channel of a CH340 relay board; writes frames and never waits for a reply (most
    boards send none)."""

    Options = LcusOptions

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._board: _Board | None = None

    def open(self) -> None:
        try:
            self._board = _Board.hold(self.options.port, self.options.baud)
        except (serial.SerialException, OSError) as exc:
            raise PowerError(
                f"LCUS relay port {self.options.port} cannot be opened ({exc}); check "
                f"[{self.section}] port in the rig file and that the board is plugged in"
            ) from None

    def close(self) -> None:
        if self._board is not None:
            self._board.release()
            self._board = None

    def _energize(self, energized: bool) -> None:
        if self._board is None:
            raise PowerError("LCUS relay used before open()")
        try:
            self._board.send(encode_frame(self.options.channel, energized), self.options.reappear_s)
        except (serial.SerialException, OSError) as exc:
            raise PowerError(
                f"LCUS relay on {self.options.port} stopped answering: {exc}"
            ) from None

    def describe(self) -> str:
        return f"LCUS relay {self.options.port} channel {self.options.channel}"
