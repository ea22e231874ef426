"""The firmware's OTA receiver of PROTOCOL.md as pure logic: messages in, answers out, no I/O.

The firmware feeds it `firmware/update` payloads and the clock; it returns what to publish and
print. Faults switch on the named bugs (accepting gaps, never requesting, skipping verify).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hil.profile import OtaContract
from hil.protocol import ota
from hil.protocol.image import ImageError, parse_image


@dataclass
class Step:
    """What one message makes the firmware do."""

    replies: list[str] = field(default_factory=list)  # on the status topic, in order
    console: list[str] = field(default_factory=list)
    image: bytes | None = None  # a complete image to boot (after OTA:SUCCESS)
    # A chunk was written and the one reply is its PROGRESS, which is cumulative: a later written
    # chunk's PROGRESS says the same and more, so the firmware may send only that one.
    written: bool = False


@dataclass
class _Update:
    size: int
    total: int
    data: bytearray = field(default_factory=bytearray)
    expected: int = 0
    last_progress: str | None = None
    last_activity: float = 0.0


class OtaReceiver:
    def __init__(self, contract: OtaContract, faults: set[str]) -> None:
        self._contract = contract
        self._faults = faults
        self._update: _Update | None = None

    @property
    def active(self) -> bool:
        return self._update is not None

    def deadline(self) -> float | None:
        """When the running update times out for lack of chunks (None when idle)."""
        if self._update is None:
            return None
        return self._update.last_activity + self._contract.chunk_timeout_s

    def handle(self, payload: bytes, now: float) -> Step:
        text = payload.decode("ascii", "replace").strip()
        if text.startswith("OTA:BEGIN:"):
            return self._begin(text.removeprefix("OTA:BEGIN:"), now)
        if text == ota.END:
            return self._end()
        return self._chunk(payload, now)

    def abort(self, reason: str) -> Step:
        """Give up the running update (timeout, network) and say why."""
        self._update = None
        return Step([ota.error(reason)], [f"OTA failed: {reason}"])

    def _begin(self, size_text: str, now: float) -> Step:
        if self._update is not None:
            return Step([ota.error("busy")])
        # Firmware's strtoul reads ASCII digits only ('٣' or '²' are no size), of sane length.
        ascii_number = size_text.isascii() and size_text.isdigit() and len(size_text) <= 10
        size = int(size_text) if ascii_number else 0
        if not 0 < size <= self._contract.partition_size:
            return Step([ota.error("size")], ["OTA failed: size"])
        total = math.ceil(size / self._contract.chunk_data_size)
        self._update = _Update(size=size, total=total, last_activity=now)
        return Step([ota.ready(size)], [f"OTA: begin {size} bytes, {total} chunks"])

    def _chunk(self, payload: bytes, now: float) -> Step:
        update = self._update
        if update is None:
            return Step()  # a stray chunk with no update running: nothing to write it to
        update.last_activity = now
        try:
            number, data = ota.decode_chunk(payload, self._contract.chunk_data_size)
        except ota.ChunkError:
            return self.abort("invalid_chunk")
        if number < update.expected:
            return Step([update.last_progress] if update.last_progress else [])
        if number > update.expected and "ota_accept_gaps" not in self._faults:
            if "ota_no_request" in self._faults:
                return Step()
            return Step([ota.request(update.expected)])
        if len(update.data) + len(data) > update.size:
            return self.abort("invalid_chunk")
        update.data += data
        update.expected = number + 1
        update.last_progress = ota.progress(number, update.total)
        return Step([update.last_progress], [f"OTA: chunk {number}/{update.total}"], written=True)

    def _end(self) -> Step:
        update = self._update
        if update is None:
            return Step()
        self._update = None
        image = bytes(update.data)
        if "ota_skip_verify" not in self._faults:
            if len(image) != update.size:
                return Step([ota.error("size_mismatch")], ["OTA failed: size_mismatch"])
            try:
                parse_image(image)
            except ImageError:
                return Step([ota.error("verify")], ["OTA failed: verify"])
        return Step([ota.SUCCESS], ["OTA Complete"], image=image)
