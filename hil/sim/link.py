"""The cellular link between the modem and the broker: latency and TCP retransmissions.

Each direction is a FIFO like a TCP stream: a packet never overtakes the one before it. A lost
packet costs one retransmission timeout (one more RTT, at least 200 ms, as Linux's RTO floor).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

MIN_RTO_S = 0.2


class Direction:
    """One direction of the link: runs queued deliveries in order, each at its arrival time."""

    def __init__(self, one_way_s: float, rto_s: float, loss: float, rng: random.Random) -> None:
        self._one_way_s = one_way_s
        self._rto_s = rto_s
        self._loss = loss
        self._rng = rng
        self._last_arrival = 0.0
        self._queue: asyncio.Queue[tuple[float, Callable[[], Awaitable[None]]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def arrival(self, now: float) -> float:
        """When a packet sent `now` arrives, given losses and the packets ahead of it."""
        delay = self._one_way_s
        while self._loss and self._rng.random() < self._loss:
            delay += self._rto_s
        self._last_arrival = max(self._last_arrival, now + delay)
        return self._last_arrival

    def send(self, deliver: Callable[[], Awaitable[None]]) -> None:
        """Run `deliver` when the packet arrives, after every packet sent before it."""
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._run())
        self._queue.put_nowait((self.arrival(loop.time()), deliver))

    def clear(self) -> None:
        """Forget packets in flight (the connection they belonged to is gone)."""
        while not self._queue.empty():
            self._queue.get_nowait()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            at, deliver = await self._queue.get()
            wait = at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await deliver()

    async def close(self) -> None:
        self.clear()
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None


class Link:
    """Both directions of the modem's data link, seeded so a run can be repeated."""

    def __init__(self, rtt_ms: float = 0.0, loss: float = 0.0, seed: int = 0) -> None:
        rng = random.Random(seed)
        rtt_s = rtt_ms / 1000.0
        rto_s = max(rtt_s, MIN_RTO_S)
        self.up = Direction(rtt_s / 2, rto_s, loss, rng)
        self.down = Direction(rtt_s / 2, rto_s, loss, rng)

    def clear(self) -> None:
        self.up.clear()
        self.down.clear()

    async def close(self) -> None:
        await self.up.close()
        await self.down.close()
