"""A baud-limited in-process serial line: the ESP32-to-modem UART2 at 115200 baud.

Each byte costs 10 bit times (8N1) in each direction, so throughput through the twin is bounded
like on the real wire. Delivery times are computed per write instead of sleeping per byte.

A sender may also hold data back until the line is free (`write_when_idle`): a modem keeps its
unsolicited output in its own buffer and puts one piece on the wire at a time, so a command
answer that becomes ready meanwhile goes out before the URCs that have not started yet.
"""

from __future__ import annotations

import asyncio
from collections import deque

BITS_PER_BYTE = 10  # start bit, 8 data bits, stop bit


class UartEnd:
    """One side of the line: `write` to the peer, `read` what the peer wrote."""

    def __init__(self, baud: int) -> None:
        self.baud = baud
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._peer: UartEnd | None = None
        self._tx_free_at = 0.0
        self._held: deque[bytes] = deque()
        self._pump: asyncio.TimerHandle | None = None
        self._holding = False

    def write(self, data: bytes) -> None:
        """Queue `data` on the wire; the peer receives it once the last bit has been clocked out."""
        if not data or self._peer is None:
            return
        loop = asyncio.get_running_loop()
        start = max(loop.time(), self._tx_free_at)
        self._tx_free_at = start + len(data) * BITS_PER_BYTE / self.baud
        # Writes are serialized by _tx_free_at, so call_at order is delivery order.
        loop.call_at(self._tx_free_at, self._peer._inbox.put_nowait, data)

    def write_when_idle(self, data: bytes) -> None:
        """Send `data` whole once the line is free and the data held before it has gone.

        Plain `write`s made in the meantime go first; held pieces keep their order.
        """
        if not data or self._peer is None:
            return
        self._held.append(data)
        self._schedule()

    def _schedule(self) -> None:
        if self._pump is None and self._held and not self._holding:
            free_at = self._tx_free_at
            self._pump = asyncio.get_running_loop().call_at(free_at, self._release, free_at)

    def _release(self, free_at: float) -> None:
        """The line was to be free at `free_at`: send the next held piece, unless a plain
        write took the line meanwhile (then wait for that one to end)."""
        self._pump = None
        if self._tx_free_at <= free_at and self._held and not self._holding:
            self.write(self._held.popleft())
        self._schedule()

    def hold(self, holding: bool) -> None:
        """While holding, held data stays back even on a free line (a command is running)."""
        self._holding = holding
        if not holding:
            self._schedule()

    def drop_held(self) -> None:
        """Forget held data that has not started on the wire (the sender lost power)."""
        self._held.clear()
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None

    async def read(self) -> bytes:
        """The next bytes that arrived from the peer (at least one byte)."""
        return await self._inbox.get()

    def discard_input(self) -> None:
        """Drop whatever has arrived and not been read (a receiver that was not listening)."""
        while not self._inbox.empty():
            self._inbox.get_nowait()


def uart_pair(baud: int = 115200) -> tuple[UartEnd, UartEnd]:
    """Two connected ends: (ESP32 side, modem side)."""
    a, b = UartEnd(baud), UartEnd(baud)
    a._peer, b._peer = b, a
    return a, b
