"""The OTA sender: BEGIN, chunks through a sliding window, END, as PROTOCOL.md describes.

The device writes chunks strictly in order, so `OTA:PROGRESS:n/total` acknowledges every chunk
up to n (cumulative), and `OTA:REQUEST:n` says all below n are written and n is missing. The
sender therefore runs go-back-N: on a request or a silent `reply_timeout` it resends from the
oldest missing chunk. Every chunk in flight above a gap draws its own REQUEST for it; those
are counted off, so only a REQUEST beyond them (the resent chunk lost again) resends again. A
lost last chunk draws no REQUEST: after PROBE_RTTS round trips of silence it is sent again,
before the reply timeout. How many chunks are in flight, and after a loss at what pace, is
`hil.ota.window`'s: sized from the link by default, or a fixed number (1 is the seed server's
stop-and-wait). The sender knows nothing of MQTT: it gets a `publish` coroutine for the
firmware topic and a queue of parsed answers, and runs the coroutine that fills that queue as a
task it watches and always collects.

BEGIN and END are lost like chunks (each is one more message on the firmware topic), so each
is resent after `reply_timeout` without its answer, up to the retry budget. What a resend
meets depends on which was lost:

- BEGIN lost: the resent BEGIN draws READY. Its READY lost: the device holds the update open
  and answers the resent BEGIN `OTA:ERROR:busy`. `busy` to a resent BEGIN is therefore taken
  as this update's READY (to the first BEGIN it stays a refusal). It cannot tell an update
  left open by another sender whose `busy` to the first BEGIN was lost too; that costs no
  wrong image: the device counts the chunks of its own size in every PROGRESS, which the
  sender checks, and verifies the image's SHA-256 at END. Answers to BEGINs still due when
  the transfer runs (a late READY, `busy` to the resend) are set aside.
- END lost: the resent END draws the final answer. Its answer lost: after `OTA:SUCCESS` the
  device has restarted into the image (after a refusal it has closed the update) and ignores
  the next END, so no answer comes; once the budget is spent the `OtaTimeout` says both, and
  the version the device reports online tells which.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from hil.ota.faults import FaultPlan
from hil.ota.window import AUTO, MAX_WINDOW, Window, make_window
from hil.profile import DeviceProfile
from hil.protocol.ota import (
    CHUNK_DATA_SIZE,
    END,
    SUCCESS,
    Error,
    OtaReply,
    Progress,
    Ready,
    Request,
    Success,
    begin,
    chunk_count,
    encode_chunk,
    error,
    split_image,
)

log = logging.getLogger("hil.ota")

DEFAULT_WINDOW: Window = AUTO
PROBE_RTTS = 2  # silence, in shortest chunk round trips, before the last chunk goes again

Publish = Callable[[str], Awaitable[None]]
ProgressCallback = Callable[[int, int, int], None]  # bytes acknowledged, total, retransmissions
Feed = Coroutine[Any, Any, None]  # puts the device's parsed answers on the reply queue

REASONS = {
    "busy": "an update is already in progress",
    "size": "the size is 0 or larger than the OTA partition",
    "verify": "the image failed verification at OTA:END",
    "size_mismatch": "the bytes received differ from the size announced at OTA:BEGIN",
    "invalid_chunk": "a chunk could not be decoded or overflowed the announced size",
    "network": "the network dropped during the update",
    "timeout": "the device waited too long for a chunk",
}


class OtaError(Exception):
    """An update that did not complete."""


class OtaRefused(OtaError):
    """The device answered `OTA:ERROR:<reason>`; `reason` is the device's word for it."""

    def __init__(self, reason: str, step: str) -> None:
        meaning = REASONS.get(reason, "a reason PROTOCOL.md does not list")
        self.reason = reason
        self.step = step
        self.reply = error(reason)  # the device's answer as it was published
        super().__init__(
            f"device refused the update at {step}: it answered {self.reply!r} "
            f"(reason {reason!r}: {meaning})"
        )


class OtaTimeout(OtaError):
    """The device stopped answering; `chunk` is None when it was BEGIN or END it ignored."""

    def __init__(self, message: str, chunk: int | None, waited: float) -> None:
        super().__init__(message)
        self.chunk = chunk
        self.waited = waited


@dataclass(frozen=True)
class OtaResult:
    """What one completed push cost."""

    size: int
    chunks: int
    seconds: float
    retransmissions: int
    requests_seen: int
    window: int  # chunks allowed in flight when the transfer ended
    answer: OtaReply
    peak_window: int = 0  # the most chunks in flight at once
    rtt: float | None = None  # the shortest chunk round trip measured, seconds

    @property
    def throughput(self) -> float:
        """Image bytes per second, BEGIN to the device's final answer."""
        return self.size / self.seconds if self.seconds > 0 else math.inf

    def __repr__(self) -> str:
        """The device's final answer as sent first: what a caller expecting a refusal got."""
        return (
            f"OtaResult(answer={str(self.answer)!r}, size={self.size}, chunks={self.chunks}, "
            f"seconds={self.seconds:.2f}, retransmissions={self.retransmissions}, "
            f"requests_seen={self.requests_seen}, window={self.window})"
        )


class OtaSender:
    """Pushes images to one device; holds the settings, each push gets a fresh transfer."""

    def __init__(
        self,
        publish: Publish,
        replies: asyncio.Queue[OtaReply],
        *,
        data_size: int = CHUNK_DATA_SIZE,
        window: Window = DEFAULT_WINDOW,
        max_window: int = MAX_WINDOW,
        reply_timeout: float = 20.0,
        max_retries: int = 10,
        faults: FaultPlan | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        if data_size < 1 or max_window < 1 or max_retries < 0 or reply_timeout <= 0:
            raise ValueError(
                f"need data_size >= 1, max_window >= 1, max_retries >= 0, reply_timeout > 0; "
                f"got {data_size}, {max_window}, {max_retries}, {reply_timeout}"
            )
        make_window(window, max_window)  # refuses a bad setting here, not at the first push
        self.publish = publish
        self.replies = replies
        self.data_size = data_size
        self.window = window
        self.max_window = max_window
        self.reply_timeout = reply_timeout
        self.max_retries = max_retries
        self.faults = faults or FaultPlan()
        self.on_progress = on_progress

    @classmethod
    def for_profile(
        cls,
        profile: DeviceProfile,
        publish: Publish,
        replies: asyncio.Queue[OtaReply],
        **options: Any,
    ) -> OtaSender:
        """A sender with the profile's chunk size, reply limit and retry budget."""
        settings: dict[str, Any] = {
            "data_size": profile.ota.chunk_data_size,
            "reply_timeout": profile.limits.ota_reply_s,
            "max_retries": profile.limits.ota_retries,
        }
        return cls(publish, replies, **(settings | options))

    async def push(self, image: bytes, *, feed: Feed | None = None) -> OtaResult:
        """Deliver `image`; raise OtaRefused, OtaTimeout or OtaError if the device does not take it.

        Answers already queued from an earlier exchange are discarded first: they would be
        read as this update's. `feed` is the coroutine that fills the reply queue: it runs as
        a task for this push only, and if it ends early the push fails at once, naming why,
        instead of waiting out every retransmission for answers that can no longer come.
        """
        while not self.replies.empty():
            self.replies.get_nowait()
        try:
            transfer = _Transfer(self, image)
        except BaseException:
            if feed is not None:
                feed.close()  # never started: no "coroutine was never awaited" warning
            raise
        if feed is None:
            return await transfer.run()
        async with _Feeding(feed, transfer):
            return await transfer.run()


class _Feeding:
    """The answer task of one push: started with it, watched during it, collected after it.

    If the task ends while the push runs, the push's task is cancelled (as asyncio.timeout
    does) and the cancellation becomes an OtaError naming the cause. On every exit, also the
    caller's cancellation, the task is cancelled and awaited and its exception retrieved.
    """

    def __init__(self, feed: Feed, transfer: _Transfer) -> None:
        self.feed = feed
        self.transfer = transfer
        self.task: asyncio.Task[None] | None = None
        self.pusher: asyncio.Task[Any] | None = None
        self.cause: BaseException | None = None
        self.lost: str | None = None  # how the task ended, when it ended during the push

    async def __aenter__(self) -> None:
        self.pusher = asyncio.current_task()
        self.task = asyncio.create_task(self.feed, name="hil-ota-answers")
        self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        exc = None if task.cancelled() else task.exception()  # retrieved: never logged as lost
        if self.pusher is None:  # the push is over: nothing waits for answers any more
            if exc is not None:
                log.warning("OTA answer task failed after its push: %r", exc)
            return
        self.cause = exc
        if task.cancelled():
            self.lost = "was cancelled"
        elif exc is not None:
            self.lost = f"raised {type(exc).__name__}: {exc}"[:300]
        else:
            self.lost = "returned"
        self.pusher.cancel()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: Any, tb: Any) -> None:
        pusher, self.pusher = self.pusher, None
        assert self.task is not None and pusher is not None
        self.task.cancel()
        await asyncio.wait({self.task})
        if self.lost is None:
            return
        if exc_type is not asyncio.CancelledError:  # the body ended before our cancel landed
            pusher.uncancel()
            return
        if pusher.uncancel() == 0:  # ours alone: the caller was not cancelled as well
            t = self.transfer
            raise OtaError(
                f"the task feeding device answers to the OTA sender {self.lost}; the push "
                f"was abandoned at chunk {t.base} of {t.total}: no answer can reach it now"
            ) from self.cause


class _Transfer:
    """The state of one push: window edges, timers, counters."""

    def __init__(self, sender: OtaSender, image: bytes) -> None:
        self.s = sender
        self.image = image
        self.chunks = split_image(image, sender.data_size)
        self.total = chunk_count(len(image), sender.data_size)
        sender.faults.check(self.total)
        self.limit = sender.faults.chunk_limit(self.total)
        self.loop = asyncio.get_running_loop()
        self.base = 0  # oldest chunk not acknowledged
        self.next = 0  # next chunk to put on the wire
        self.fresh = 0  # first chunk never sent
        self.window = make_window(sender.window, sender.max_window)
        self.peak = 0  # the most chunks in flight at once
        self.sent_at: dict[int, float] = {}
        self.resent: set[int] = set()
        self.echoes: Counter[int] = Counter()  # REQUESTs for a chunk still due from before
        self.retries: Counter[int] = Counter()
        self.retransmissions = 0
        self.requests_seen = 0
        self.progress_at = self.timer_at = 0.0
        self.last_answer: OtaReply | None = None
        self.begins_unanswered = 0  # BEGINs sent whose answer (READY or busy) has not come
        self.probed_at: float | None = None  # the silence (its timer_at) already probed
        self.send_at = 0.0  # when the window's pace lets the next chunk go

    async def run(self) -> OtaResult:
        started = self.loop.time()
        await self._begin()
        self.progress_at = self.timer_at = self.loop.time()
        while self.base < self.limit:
            await self._fill()
            timeout_at = self.timer_at + self.s.reply_timeout
            probe_at = self._probe_at()
            wake = timeout_at if probe_at is None else probe_at
            paced = self.next < min(self.limit, self.base + self.window.size)
            reply = await self._reply(min(wake, self.send_at) if paced else wake)
            if reply is not None:
                self._handle(reply)
            elif paced and self.loop.time() < wake:
                pass  # the next chunk's turn
            elif probe_at is not None:
                await self._probe()
            else:
                log.debug("no answer for %g s: back to chunk %d", self.s.reply_timeout, self.base)
                self._go_back(self.base, self.next - self.base - 1)
                self.window.timed_out()
        answer = await self._end()
        return OtaResult(
            size=len(self.image),
            chunks=self.total,
            seconds=self.loop.time() - started,
            retransmissions=self.retransmissions,
            requests_seen=self.requests_seen,
            window=self.window.size,
            answer=answer,
            peak_window=self.peak,
            rtt=self.window.rtt,
        )

    async def _reply(self, deadline: float) -> OtaReply | None:
        """The next answer, or None once `deadline` (loop time) passes without one."""
        try:
            async with asyncio.timeout_at(deadline):
                reply = await self.s.replies.get()
        except TimeoutError:
            return None
        self.last_answer = reply
        return reply

    async def _begin(self) -> None:
        """Send BEGIN until the device answers it, up to the retry budget.

        A `busy` answer to the first BEGIN is a refusal; to a resent one it says the device
        holds an update open, taken to be this one: an earlier BEGIN arrived, its READY did not.
        """
        command = begin(len(self.image))
        first = self.loop.time()
        for sent in range(1, self.s.max_retries + 2):
            deadline = self.loop.time() + self.s.reply_timeout
            await self.s.publish(command)
            self.begins_unanswered = sent
            while (reply := await self._reply(deadline)) is not None:
                match reply:
                    case Ready(size=size) if size == len(self.image):
                        self.begins_unanswered -= 1
                        return
                    case Ready(size=size):
                        raise OtaError(f"device answered OTA:READY:{size} to {command}")
                    case Error(reason="busy") if sent > 1:
                        log.info("%s resent; busy: the update is open, its READY lost", command)
                        self.begins_unanswered -= 1
                        return
                    case Error(reason=reason):
                        raise OtaRefused(reason, "OTA:BEGIN")
            log.info(
                "no answer to %s within %g s, sent %d times", command, self.s.reply_timeout, sent
            )
        raise OtaTimeout(
            f"no answer to {command} within {self.s.reply_timeout:g} s, sent "
            f"{self.s.max_retries + 1} times",
            chunk=None,
            waited=self.loop.time() - first,
        )

    def _begin_answered(self, reply: OtaReply) -> bool:
        """Whether `reply` is the late answer to a resent BEGIN, nothing to act on."""
        if self.begins_unanswered and reply in (Ready(len(self.image)), Error("busy")):
            self.begins_unanswered -= 1
            return True
        return False

    async def _end(self) -> OtaReply:
        """Send END until the device gives its final answer, up to the retry budget.

        Answers to chunks arriving meanwhile are late ones (every chunk is acknowledged).
        """
        first = self.loop.time()
        for sent in range(1, self.s.max_retries + 2):
            await self.s.publish(END)
            deadline = self.loop.time() + self.s.reply_timeout
            while (reply := await self._reply(deadline)) is not None:
                match reply:
                    case Success():
                        return reply
                    case Error() if self._begin_answered(reply):
                        pass
                    case Error(reason=reason):
                        raise OtaRefused(reason, END)
            log.info("no answer to %s within %g s, sent %d times", END, self.s.reply_timeout, sent)
        raise OtaTimeout(
            f"no answer to {END} within {self.s.reply_timeout:g} s, sent "
            f"{self.s.max_retries + 1} times after all {self.limit} chunks were acknowledged: "
            f"every {END} was lost, or the device's answer was (after {SUCCESS} it restarts "
            "into the image and ignores the next: the version it reports online tells)",
            chunk=None,
            waited=self.loop.time() - first,
        )

    async def _fill(self) -> None:
        """Send until the window is full; a plan's reordered pair or dropped run may go beyond."""
        plan = self.s.faults
        while self.next < min(self.limit, self.base + self.window.size):
            now = self.loop.time()
            if now < self.send_at:
                break
            gap = self.window.pace(now)
            self.send_at = now + gap if gap else now
            if self.next < self.fresh:
                await self._send(self.next)
                self.resent.add(self.next)
                self.retransmissions += 1
                self.next += 1
                continue
            consumed, wire = plan.first_emission(self.next, self.limit)
            now = self.loop.time()
            for number in range(self.next, self.next + consumed):
                self.sent_at[number] = now
            for number in wire:
                await self._send(number)
            self.next = self.fresh = self.next + consumed
        self.peak = max(self.peak, self.next - self.base)

    def _probe_at(self) -> float | None:
        """When to send the last chunk again: all are sent and the answers stopped coming.

        A lost last chunk has no later one to draw a REQUEST, so the device stays silent; so
        does a device that lost the resent last chunks. After PROBE_RTTS shortest round trips
        without an answer the last chunk goes again, once per silence, as TCP's tail loss
        probe: to a device that has it, it is a duplicate, answered with its PROGRESS.
        """
        rtt = self.window.rtt
        if self.next < self.limit or rtt is None or self.probed_at == self.timer_at:
            return None
        return min(self.timer_at + PROBE_RTTS * rtt, self.timer_at + self.s.reply_timeout)

    async def _probe(self) -> None:
        self.probed_at = self.timer_at
        await self._send(self.limit - 1)
        self.resent.add(self.limit - 1)
        self.retransmissions += 1

    async def _send(self, number: int) -> None:
        data = self.s.faults.data(number, self.chunks[number])
        await self.s.publish(encode_chunk(number, data))

    def _handle(self, reply: OtaReply) -> None:
        if self._begin_answered(reply):
            return
        match reply:
            case Progress(number=number, total=total):
                if total != self.total:
                    raise OtaError(
                        f"device counts {total} chunks, the image has {self.total} "
                        f"of {self.s.data_size} bytes"
                    )
                self._acknowledge(number)
            case Request(number=number):
                self.requests_seen += 1
                self._acknowledge(number - 1)
                if number < self.base:
                    pass  # answered already
                elif self.echoes[number]:
                    self.echoes[number] -= 1
                else:  # the one REQUEST of chunks sent after the last resend of this chunk
                    log.debug(
                        "REQUEST:%d, %d sent above it: going back", number, self.next - number
                    )
                    self._go_back(number, self.next - number - 2)
                    self.window.went_back(self.loop.time())
            case Error(reason=reason):
                raise OtaRefused(reason, f"chunk {self.base} of {self.total}")
            case Success():
                raise OtaError(f"device answered OTA:SUCCESS before {END}")

    def _acknowledge(self, number: int) -> None:
        """Everything up to `number` is written: slide the window, sample the round trip."""
        if number < self.base:
            return
        if number >= self.fresh:
            raise OtaError(f"device acknowledged chunk {number}, which was never sent")
        now = self.loop.time()
        rtt = None
        if number not in self.resent:  # Karn: a resent chunk's answer is ambiguous
            rtt = now - self.sent_at[number]
        self.window.acknowledged(now, number + 1 - self.base, rtt)
        self.base = number + 1
        self.next = max(self.next, self.base)
        self.progress_at = self.timer_at = now
        if self.s.on_progress:
            acked = min(self.base * self.s.data_size, len(self.image))
            self.s.on_progress(acked, len(self.image), self.retransmissions)

    def _go_back(self, number: int, echoes: int) -> None:
        """Resend from `number` on the next fill, or give up once its retries are spent.

        Each of the `echoes` chunks in flight above it that reaches the device draws its own
        REQUEST for it: those are answered by this resend. Only a REQUEST beyond them says the
        resent chunk was lost too. Counting, not timing: the echoes arrive over as long as the
        queue in front of the device takes to drain, which can outlast a round trip.
        """
        now = self.loop.time()
        if self.retries[number] >= self.s.max_retries:
            raise OtaTimeout(
                f"gave up on chunk {number} of {self.total} after {self.retries[number]} "
                f"retransmissions: no progress for {now - self.progress_at:.1f} s "
                f"(reply timeout {self.s.reply_timeout:g} s, "
                f"last answer: {self.last_answer or 'none'})",
                chunk=number,
                waited=now - self.progress_at,
            )
        self.retries[number] += 1
        self.echoes[number] = max(0, echoes)
        self.timer_at = now
        self.next = number
