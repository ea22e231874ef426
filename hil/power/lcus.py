"""LCUS-1/2/4 USB serial relay boards (CH340 at 9600 8N1): frame `A0 <channel> <state> <sum>`."""

from __future__ import annotations

import time
from dataclasses import dataclass

import serial

from hil.power import PowerDriver, PowerError

START = 0xA0
FRAME_GAP_S = 0.05  # many boards ignore a frame that follows the previous one within ~50 ms


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
    port: str
    channel: int = 1
    baud: int = 9600


class LcusRelay(PowerDriver):
    """A CH340 relay board; writes frames and never waits for a reply (most boards send none)."""

    Options = LcusOptions

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._serial: serial.Serial | None = None
        self._last_frame = 0.0

    def open(self) -> None:
        try:
            self._serial = serial.Serial(self.options.port, self.options.baud, timeout=1)
        except serial.SerialException as exc:
            raise PowerError(
                f"LCUS relay port {self.options.port} cannot be opened ({exc}); check [power] port"
                " in the rig file and that the board is plugged in"
            ) from None

    def close(self) -> None:
        if self._serial is not None:
            self._serial.close()
            self._serial = None

    def _energize(self, energized: bool) -> None:
        if self._serial is None:
            raise PowerError("LCUS relay used before open()")
        wait = self._last_frame + FRAME_GAP_S - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        try:
            self._serial.write(encode_frame(self.options.channel, energized))
            self._serial.flush()
        except serial.SerialException as exc:
            raise PowerError(
                f"LCUS relay on {self.options.port} stopped answering: {exc}"
            ) from None
        self._last_frame = time.monotonic()

    def describe(self) -> str:
        return f"LCUS relay {self.options.port} channel {self.options.channel}"
