"""A baud-limited in-process serial line: the ESP32-to-modem UART2 at 115200 baud.

Each byte costs 10 bit times (8N1) in each direction, so throughput through the twin is bounded
like on the real wire. Delivery times are computed per write instead of sleeping per byte.
"""

from __future__ import annotations

import asyncio

BITS_PER_BYTE = 10  # start bit, 8 data bits, stop bit


class UartEnd:
    """One side of the line: `write` to the peer, `read` what the peer wrote."""

    def __init__(self, baud: int) -> None:
        self.baud = baud
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._peer: UartEnd | None = None
        self._tx_free_at = 0.0

    def write(self, data: bytes) -> None:
        """Queue `data` on the wire; the peer receives it once the last bit has been clocked out."""
        if not data or self._peer is None:
            return
        loop = asyncio.get_running_loop()
        start = max(loop.time(), self._tx_free_at)
        self._tx_free_at = start + len(data) * BITS_PER_BYTE / self.baud
        # Writes are serialized by _tx_free_at, so call_at order is delivery order.
        loop.call_at(self._tx_free_at, self._peer._inbox.put_nowait, data)

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
