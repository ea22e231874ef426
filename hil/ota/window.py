"""How many OTA chunks the sender keeps in flight: a fixed number, or sized from the link.

The link to a cellular device is a long pipe with a narrow end: the round trip is hundreds of
milliseconds, and the device takes chunks no faster than its 115200-baud UART brings them.
Enough chunks must be in flight to cover the round trip at that rate (the bandwidth-delay
product), or the UART idles; more only wait in the modem, and every one of them is resent
when a chunk before it is lost, because the device writes strictly in order.

`AutoWindow` measures both from the device's answers, as BBR does for TCP: the shortest round
trip of a chunk (send to the PROGRESS covering it; resent chunks are ambiguous and not sampled,
Karn's rule) and the highest answer rate (chunks acknowledged per second over at least that
round trip). Its window is twice their product, because the device's answers come late and in
bursts: one cumulative PROGRESS covers the chunks that arrived while it published the last one,
and that publish waits behind chunk blocks on the UART (BBR keeps twice the bandwidth-delay
product in flight for delayed and aggregated acknowledgements, for the same reason); and
`MARGIN` chunks more, what the device's own side holds while it answers, the window that keeps
its UART busy with no link latency at all. It moves towards that size by at most the chunks
each answer acknowledges, so it at most doubles per round trip, shrinks by half that, and never
exceeds its cap.

On a lossy link that queue costs: the device discards every chunk after a lost one until the
resent one arrives, and the resent one waits behind all queued in front of it, so a lost chunk
idles the device for the queue's time as well as a round trip. For DRAIN_RTTS round trips after
a loss the chunks are therefore paced at the highest answer rate (DRAIN_PACE of it), as BBR
paces at the measured bandwidth: the queue drains and stays short. A clean link is never paced.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Literal

AUTO = "auto"
Window = int | Literal["auto"]  # a sender's setting: chunks in flight, or sized from the link

INITIAL_WINDOW = 8  # before any measurement: ~580 ms of UART time, a short LTE round trip
MAX_WINDOW = 64  # 32 kB in flight, ~4.6 s of UART time: well within a 20 s answer limit
GAIN = 2.0  # chunks in flight per chunk of bandwidth-delay product
MARGIN = INITIAL_WINDOW  # chunks in flight besides: window 8 keeps the UART busy at 50 ms
DRAIN_RTTS = 8  # round trips after a lost chunk in which chunks are paced
DRAIN_PACE = 0.9  # chunks sent per chunk acknowledged while paced: a queue drains
RATE_SPAN_RTTS = 10  # answer-rate samples older than this many round trips are forgotten


class FixedWindow:
    """Always `size` chunks in flight (1 is the seed server's stop-and-wait)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a window is at least 1 chunk, not {size}")
        self.size = size
        self.rtt: float | None = None  # shortest chunk round trip seen, seconds

    def acknowledged(self, now: float, chunks: int, rtt: float | None) -> None:
        """Only the round trip is kept, for the record: the size is the caller's."""
        if rtt is not None and (self.rtt is None or rtt < self.rtt):
            self.rtt = rtt

    def pace(self, now: float) -> float | None:
        """No pace: the window alone says when."""
        return None

    def went_back(self, now: float) -> None:
        """A gap resent: the size stays."""

    def timed_out(self) -> None:
        """No answer within the reply timeout: the size stays."""


class AutoWindow:
    """Chunks in flight sized from the measured round trip and answer rate, within `cap`."""

    def __init__(self, cap: int = MAX_WINDOW, initial: int = INITIAL_WINDOW) -> None:
        if cap < 1:
            raise ValueError(f"the window's cap is at least 1 chunk, not {cap}")
        self.cap = cap
        self.window = float(min(initial, cap))
        self.rtt: float | None = None  # shortest chunk round trip seen, seconds
        self._acked = 0  # chunks acknowledged in all
        self._answers: deque[tuple[float, int]] = deque()  # (time, chunks acknowledged by then)
        self._rates: deque[tuple[float, float]] = deque()  # (time, chunks per second)
        self._drain_until = -math.inf  # loop time until which chunks are paced

    @property
    def size(self) -> int:
        return max(1, int(self.window))

    @property
    def rate(self) -> float | None:
        """The highest recent answer rate, chunks per second (None until one round trip)."""
        return max(rate for _, rate in self._rates) if self._rates else None

    @property
    def target(self) -> float | None:
        """The window the measurements ask for (None until both are measured)."""
        rate = self.rate
        if rate is None or self.rtt is None:
            return None
        return min(float(self.cap), GAIN * rate * self.rtt + MARGIN)

    def acknowledged(self, now: float, chunks: int, rtt: float | None) -> None:
        """`chunks` more were written by `now`; `rtt` is the round trip of the newest of them,
        or None when it was sent more than once."""
        if rtt is not None and (self.rtt is None or rtt < self.rtt):
            self.rtt = rtt
        self._acked += chunks
        self._answers.append((now, self._acked))
        self._sample_rate(now)
        target = self.target
        if target is None:  # nothing measured yet: grow as TCP's slow start does
            self.window = min(float(self.cap), self.window + chunks)
        elif self.window < target:
            self.window = min(target, self.window + chunks)
        else:
            self.window = max(target, self.window - chunks / 2)

    def pace(self, now: float) -> float | None:
        """Seconds from one chunk to the next for a while after a loss, else None (no pace).

        Sent at the answer rate, chunks cross the link as fast as the device takes them and
        no queue builds in front of it, while the window still covers late answers.
        """
        rate = self.rate
        if rate is None or now >= self._drain_until:
            return None
        return 1 / (DRAIN_PACE * rate)

    def went_back(self, now: float) -> None:
        """A gap resent after a REQUEST: the device lost a chunk, not a measure of the link.

        Every chunk in flight after the lost one was discarded and is resent, so the window
        is halved for the resend; it grows back towards the measured size as answers come.
        For DRAIN_RTTS round trips the chunks are then paced (see `pace`).
        """
        self.window = max(1.0, self.window / 2)
        if self.rtt is not None:
            self._drain_until = now + DRAIN_RTTS * self.rtt

    def timed_out(self) -> None:
        """No answer within the reply timeout: the link is not the one measured.

        Back to one chunk in flight, and the answer rate is measured afresh.
        """
        self.window = 1.0
        self._answers.clear()
        self._rates.clear()

    def _sample_rate(self, now: float) -> None:
        """Chunks acknowledged per second since the newest answer at least one round trip old.

        A shorter span would read one cumulative PROGRESS as a burst of speed.
        """
        if self.rtt is None:
            return
        answers = self._answers
        while len(answers) > 2 and now - answers[1][0] >= self.rtt:
            answers.popleft()
        start, acked = answers[0]
        span = now - start
        if span >= self.rtt and span > 0:
            self._rates.append((now, (self._acked - acked) / span))
        horizon = now - RATE_SPAN_RTTS * self.rtt
        while self._rates and self._rates[0][0] < horizon:
            self._rates.popleft()


def make_window(setting: Window, cap: int = MAX_WINDOW) -> FixedWindow | AutoWindow:
    """The window for a sender's setting: `"auto"` or a number of chunks."""
    if setting == AUTO:
        return AutoWindow(cap)
    if isinstance(setting, bool) or not isinstance(setting, int):
        raise ValueError(f"window must be {AUTO!r} or a number of chunks, not {setting!r}")
    return FixedWindow(setting)
