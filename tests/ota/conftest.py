"""An in-process device that follows the OTA table of PROTOCOL.md, wired to a sender by queues.

Each direction is a delay line that keeps message order (as MQTT does for one publisher),
so a latency models the round trip a window has to hide.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from hil.ota import OtaSender
from hil.protocol import ota
from hil.protocol.image import ImageError, parse_image
from hil.protocol.ota import ChunkError, OtaReply, Progress

PARTITION = 1966080


@dataclass
class FakeDevice:
    """The firmware's OTA handler: in-order writes, REQUEST on a gap, verify at END."""

    request_gaps: bool = True  # False: discard a chunk above the expected one silently
    answer_begin: bool = True
    answer_chunks: bool = True
    busy: bool = False  # an update already in progress
    partition: int = PARTITION
    written: bytearray = field(default_factory=bytearray)
    received: list[int] = field(default_factory=list)  # chunk numbers, in arrival order
    size = expected = total = 0
    last_progress = ""

    def handle(self, payload: str) -> list[str]:
        """The answers to one message on the firmware topic."""
        if payload.startswith("OTA:BEGIN:"):
            return self._begin(int(payload.removeprefix("OTA:BEGIN:")))
        if payload == ota.END:
            return self._end()
        try:
            number, data = ota.decode_chunk(payload)
        except ChunkError:
            return self._abort("invalid_chunk")
        self.received.append(number)
        if not self.answer_chunks:
            return []
        if number > self.expected:
            return [ota.request(self.expected)] if self.request_gaps else []
        if number < self.expected:
            return [self.last_progress] if self.last_progress else []
        if len(self.written) + len(data) > self.size:
            return self._abort("invalid_chunk")
        self.written += data
        self.expected += 1
        self.last_progress = ota.progress(number, self.total)
        return [self.last_progress]

    def _begin(self, size: int) -> list[str]:
        if not self.answer_begin:
            return []
        if self.busy:
            return [ota.error("busy")]
        if not 0 < size <= self.partition:
            return [ota.error("size")]
        self.busy = True
        self.size, self.expected, self.total = size, 0, ota.chunk_count(size)
        self.written.clear()
        return [ota.ready(size)]

    def _end(self) -> list[str]:
        if not self.busy:
            return []  # no update open (after SUCCESS the device restarted): nothing to end
        self.busy = False
        if len(self.written) != self.size:
            return [ota.error("size_mismatch")]
        try:
            parse_image(bytes(self.written))
        except ImageError:
            return [ota.error("verify")]
        return [ota.SUCCESS]

    def _abort(self, reason: str) -> list[str]:
        self.busy = False
        return [ota.error(reason)]


class DelayLine:
    """Delivers items `latency` seconds after they are put, in order."""

    def __init__(
        self, latency: float, deliver: Callable[[Any], None], spacing: float = 0.0
    ) -> None:
        self.latency = latency
        self.spacing = spacing  # at most one item per this many seconds: a narrow end's queue
        self.last_due = 0.0
        self.deliver = deliver
        self.pending: asyncio.Queue[tuple[float, Any]] = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    def put(self, item: Any, extra: float = 0.0) -> None:
        """`extra` seconds more for this item; the ones behind it wait for it, in order."""
        due = asyncio.get_running_loop().time() + self.latency + extra
        self.last_due = due = max(due, self.last_due + self.spacing)
        self.pending.put_nowait((due, item))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, item = await self.pending.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            self.deliver(item)


class Bench:
    """A sender's publish and reply queue, connected to a FakeDevice through two delay lines.

    It watches both directions to know how many chunks are in flight at every publish. `lose`
    counts messages to lose on the way, either way, by how they start: {"OTA:END": 1} loses
    the first END, {"OTA:READY": 2} the first two READYs. `slow` delays the first answer
    starting so by that many seconds more. `spacing` is the time each message takes towards
    the device, so more in flight than the link holds queue there, as in the modem.
    """

    def __init__(
        self,
        device: FakeDevice,
        latency: float,
        lose: dict[str, int],
        slow: dict[str, float],
        spacing: float = 0.0,
    ) -> None:
        self.device = device
        self.lose = Counter(lose)
        self.slow = dict(slow)
        self.lost: list[str] = []  # what was lost, in order
        self.replies: asyncio.Queue[OtaReply] = asyncio.Queue()
        self.acked = -1  # highest PROGRESS the sender has been handed
        self.outstanding: set[int] = set()  # chunk numbers published, not yet acknowledged
        self.events: list[str] = []  # "send:<n>" and the answers, as the sender sees them
        self.in_flight: list[tuple[int, int]] = []  # (index in events, chunks unacknowledged)
        self.down = DelayLine(latency, self._to_device, spacing)
        self.up = DelayLine(latency, self._to_sender)

    async def publish(self, payload: str) -> None:
        if not payload.startswith("OTA:"):
            number, _ = ota.decode_chunk(payload)
            self.outstanding.add(number)
            self.in_flight.append((len(self.events), len(self.outstanding)))
            self.events.append(f"send:{number}")
        if not self._lost(payload):
            self.down.put(payload)

    def _lost(self, message: str) -> bool:
        for start, left in self.lose.items():
            if left and message.startswith(start):
                self.lose[start] -= 1
                self.lost.append(message)
                return True
        return False

    def _to_device(self, payload: str) -> None:
        for answer in self.device.handle(payload):
            if not self._lost(answer):
                start = next((s for s in self.slow if answer.startswith(s)), None)
                self.up.put(answer, self.slow.pop(start) if start else 0.0)

    def _to_sender(self, answer: str) -> None:
        reply = ota.parse_reply(answer)
        assert reply is not None, answer
        if isinstance(reply, Progress):
            self.acked = max(self.acked, reply.number)
            self.outstanding = {n for n in self.outstanding if n > self.acked}
        self.events.append(answer)
        self.replies.put_nowait(reply)

    def sender(self, **options: Any) -> OtaSender:
        return OtaSender(self.publish, self.replies, **options)

    def close(self) -> None:
        self.down.task.cancel()
        self.up.task.cancel()


MakeBench = Callable[..., Bench]


@pytest.fixture
async def bench() -> AsyncIterator[MakeBench]:
    """Factory: bench(latency=0.001, lose={}, slow={}, spacing=0, **FakeDevice fields) ->
    Bench, closed after the test."""
    made: list[Bench] = []

    def make(
        latency: float = 0.001,
        lose: dict[str, int] | None = None,
        slow: dict[str, float] | None = None,
        spacing: float = 0.0,
        **device: Any,
    ) -> Bench:
        made.append(Bench(FakeDevice(**device), latency, lose or {}, slow or {}, spacing))
        return made[-1]

    yield make
    for b in made:
        b.close()
        for task in (b.down.task, b.up.task):
            with contextlib.suppress(asyncio.CancelledError):
                await task
