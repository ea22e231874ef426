"""OtaSender against the in-process FakeDevice of conftest.py."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import pytest

from hil.ota import FaultPlan, OtaRefused, OtaSender, OtaTimeout
from hil.ota.window import (
    DRAIN_PACE,
    DRAIN_RTTS,
    GAIN,
    INITIAL_WINDOW,
    MARGIN,
    MAX_WINDOW,
    AutoWindow,
    make_window,
)
from hil.profile import load_profile
from hil.protocol import ota
from hil.protocol.image import build_image
from hil.protocol.ota import Success, chunk_count

IMAGE = build_image("2.0.0", 20000)  # 40 chunks
SMALL = build_image("2.0.1")  # 1 chunk
CHUNKS = chunk_count(len(IMAGE))
FAST = {"reply_timeout": 0.1, "max_retries": 5}
REFUSED = {"corrupt_byte": "verify", "truncate": "size_mismatch"}


async def within(work: Awaitable[Any], seconds: float = 10.0) -> Any:
    """Await `work` with a deadline, so a sender bug fails the test instead of hanging it."""
    async with asyncio.timeout(seconds):
        return await work


def assert_plan_applied(plan: FaultPlan, received: list[int], retransmissions: int) -> None:
    """The device saw the misdelivery the plan asked for."""
    first = {n: received.index(n) for n in set(received)}
    for n in plan.drop:
        assert received.count(n) >= 1 and retransmissions >= len(plan.drop)
    for n in plan.duplicate:
        assert received.count(n) >= 2
    for k in plan.reorder:
        assert first[k + 1] < first[k]


@pytest.mark.parametrize("window", [1, 8])
@pytest.mark.parametrize("image", [SMALL, IMAGE], ids=["1-chunk", "40-chunks"])
@pytest.mark.parametrize("name", FaultPlan.NAMES)
async def test_every_fault_plan(bench: Any, name: str, image: bytes, window: int) -> None:
    b = bench()
    plan = FaultPlan.named(name, chunk_count(len(image)), seed=7)
    sender = b.sender(window=window, faults=plan, **FAST)
    if name in REFUSED:
        with pytest.raises(OtaRefused) as refused:
            await within(sender.push(image))
        assert refused.value.reason == REFUSED[name]
        assert refused.value.step == ota.END
        return
    result = await within(sender.push(image))
    assert result.answer == Success()
    assert bytes(b.device.written) == image
    assert (result.size, result.chunks) == (len(image), chunk_count(len(image)))
    assert_plan_applied(plan, b.device.received, result.retransmissions)


@pytest.mark.parametrize("window", [1, 3, 5, 8])
@pytest.mark.parametrize("name", ["drop_first", "drop_middle", "drop_burst_5"])
async def test_a_dropped_chunk_draws_a_request_whatever_the_window(
    bench: Any, name: str, window: int
) -> None:
    """With no more chunks in flight than the plan drops in a row, the device still sees the gap:
    the push never waits out its (here long) reply timeout."""
    b = bench()
    plan = FaultPlan.named(name, CHUNKS)
    sender = b.sender(window=window, faults=plan, reply_timeout=30.0, max_retries=1)
    result = await within(sender.push(IMAGE), 5.0)
    assert bytes(b.device.written) == IMAGE
    assert result.requests_seen >= 1


async def test_window_1_is_stop_and_wait(bench: Any) -> None:
    b = bench()
    result = await within(b.sender(window=1, **FAST).push(IMAGE))
    exchange = [e for n in range(CHUNKS) for e in (f"send:{n}", ota.progress(n, CHUNKS))]
    assert b.events == [ota.ready(len(IMAGE)), *exchange, ota.SUCCESS]
    assert max(count for _, count in b.in_flight) == 1
    assert (result.retransmissions, result.requests_seen, result.window) == (0, 0, 1)


async def test_window_8_hides_latency(bench: Any) -> None:
    latency = 0.005
    times = {}
    for window in (1, 8):
        b = bench(latency=latency)
        result = await within(b.sender(window=window, **FAST).push(IMAGE))
        assert max(count for _, count in b.in_flight) == window
        assert result.retransmissions == 0
        times[window] = result.seconds
    assert times[1] >= CHUNKS * 2 * latency  # one round trip per chunk, at least
    assert times[8] * 3 < times[1], times


async def test_one_gap_resends_the_window_once(bench: Any) -> None:
    """Seven chunks above a dropped chunk 0 draw seven REQUEST:0; only the first is acted on."""
    b = bench(latency=0.002)
    sender = b.sender(window=8, faults=FaultPlan.named("drop_first", CHUNKS), **FAST)
    result = await within(sender.push(IMAGE))
    assert result.requests_seen == 7
    assert result.retransmissions == 8
    assert max(Counter(b.device.received).values()) == 2


async def test_a_gap_behind_a_queue_is_resent_once(bench: Any) -> None:
    """Behind a queue the REQUESTs of the chunks above a gap arrive over longer than a round
    trip; all of them are answered by one resend."""
    b = bench(latency=0.002, spacing=0.004)  # 32 in flight: 128 ms of queue, a 8 ms link
    sender = b.sender(window=32, faults=FaultPlan.dropping({3}), reply_timeout=2.0)
    result = await within(sender.push(IMAGE))
    assert bytes(b.device.written) == IMAGE
    assert result.requests_seen == 31  # chunks 4..34 each asked for 3
    assert max(Counter(b.device.received).values()) == 2, "a chunk was resent twice"


async def test_a_lost_last_chunk_is_sent_again_before_the_reply_timeout(bench: Any) -> None:
    """No chunk after it draws a REQUEST: after two round trips of silence it goes again."""
    b = bench(latency=0.002)
    sender = b.sender(window=8, faults=FaultPlan.named("drop_last", CHUNKS), reply_timeout=30.0)
    result = await within(sender.push(IMAGE), 5.0)
    assert bytes(b.device.written) == IMAGE
    assert (result.retransmissions, result.requests_seen) == (1, 0)


async def test_a_fixed_window_stays_fixed_through_a_request(bench: Any) -> None:
    b = bench()
    result = await within(b.sender(window=8, faults=FaultPlan.dropping({2}), **FAST).push(IMAGE))
    assert result.requests_seen >= 1
    assert (result.window, result.peak_window) == (8, 8)
    assert max(count for _, count in b.in_flight) == 8


async def test_device_that_never_answers_chunks(bench: Any) -> None:
    b = bench(answer_chunks=False)
    sender = b.sender(window=4, reply_timeout=0.05, max_retries=2)
    with pytest.raises(OtaTimeout) as timeout:
        await within(sender.push(IMAGE))
    assert timeout.value.chunk == 0
    assert "chunk 0 of 40" in str(timeout.value)
    assert "after 2 retransmissions" in str(timeout.value)
    assert timeout.value.waited >= 0.1
    assert b.device.received.count(0) == 3


async def test_device_that_never_answers_begin(bench: Any) -> None:
    b = bench(answer_begin=False)
    with pytest.raises(OtaTimeout) as timeout:
        await within(b.sender(reply_timeout=0.05).push(IMAGE))
    assert timeout.value.chunk is None
    assert f"no answer to OTA:BEGIN:{len(IMAGE)} within 0.05 s, sent 11 times" in str(timeout.value)
    assert timeout.value.waited >= 11 * 0.05


# -- BEGIN and END are lost like chunks ---------------------------------------------------------


async def test_a_lost_begin_is_resent(bench: Any) -> None:
    b = bench(lose={"OTA:BEGIN": 2})
    result = await within(b.sender(**FAST).push(IMAGE))
    assert result.answer == Success()
    assert bytes(b.device.written) == IMAGE
    assert b.lost == [ota.begin(len(IMAGE))] * 2


async def test_a_lost_ready_meets_busy_and_the_update_goes_on(bench: Any) -> None:
    """The device holds the update open and answers the resent BEGIN busy: that is READY."""
    b = bench(lose={"OTA:READY": 1})
    result = await within(b.sender(**FAST).push(IMAGE))
    assert result.answer == Success()
    assert bytes(b.device.written) == IMAGE
    assert b.events[0] == ota.error("busy")


async def test_a_late_ready_and_the_busy_to_the_resent_begin_are_set_aside(bench: Any) -> None:
    """READY comes after the reply timeout, so BEGIN went twice; its busy comes mid-transfer."""
    b = bench(slow={"OTA:READY": 0.15})
    result = await within(b.sender(window=4, **FAST).push(IMAGE))
    assert result.answer == Success()
    assert bytes(b.device.written) == IMAGE
    assert b.events[0] == ota.ready(len(IMAGE))
    assert b.events.count(ota.error("busy")) == 1


async def test_a_lost_end_is_resent(bench: Any) -> None:
    b = bench(lose={"OTA:END": 1})
    result = await within(b.sender(**FAST).push(IMAGE))
    assert result.answer == Success()
    assert b.lost == [ota.END]


async def test_a_refusal_to_a_resent_end_is_a_refusal(bench: Any) -> None:
    b = bench(lose={"OTA:END": 1})
    plan = FaultPlan.named("corrupt_byte", CHUNKS)
    with pytest.raises(OtaRefused) as refused:
        await within(b.sender(faults=plan, **FAST).push(IMAGE))
    assert (refused.value.reason, refused.value.step) == ("verify", ota.END)


async def test_a_lost_success_ends_in_a_timeout_that_says_the_device_may_have_it(
    bench: Any,
) -> None:
    """After SUCCESS the device restarted: the resent ENDs meet no update and go unanswered."""
    b = bench(lose={"OTA:SUCCESS": 1})
    with pytest.raises(OtaTimeout) as timeout:
        await within(b.sender(reply_timeout=0.05, max_retries=2).push(IMAGE))
    assert bytes(b.device.written) == IMAGE
    message = str(timeout.value)
    assert "no answer to OTA:END within 0.05 s, sent 3 times" in message
    assert "after OTA:SUCCESS it restarts into the image" in message
    assert timeout.value.chunk is None and timeout.value.waited >= 3 * 0.05


async def test_gap_without_request_recovers_by_timeout(bench: Any) -> None:
    b = bench(request_gaps=False)
    sender = b.sender(window=8, faults=FaultPlan.named("drop_middle", CHUNKS), **FAST)
    result = await within(sender.push(IMAGE))
    assert bytes(b.device.written) == IMAGE
    assert result.requests_seen == 0
    assert result.retransmissions >= 1


async def test_busy_device_refuses_begin(bench: Any) -> None:
    b = bench(busy=True)
    with pytest.raises(OtaRefused) as refused:
        await within(b.sender(**FAST).push(IMAGE))
    assert refused.value.reason == "busy"
    assert refused.value.step == "OTA:BEGIN"
    assert "OTA:ERROR:busy" in str(refused.value)
    assert b.device.received == []


async def test_image_larger_than_partition_is_refused(bench: Any) -> None:
    with pytest.raises(OtaRefused) as refused:
        await within(bench(partition=4096).sender(**FAST).push(IMAGE))
    assert refused.value.reason == "size"


async def test_progress_callback_reports_cumulative_bytes(bench: Any) -> None:
    calls: list[tuple[int, int, int]] = []
    sender = bench().sender(window=8, on_progress=lambda *a: calls.append(a), **FAST)
    result = await within(sender.push(IMAGE))
    acked = [c[0] for c in calls]
    assert acked == sorted(acked)
    assert calls[-1] == (len(IMAGE), len(IMAGE), result.retransmissions)
    assert result.throughput == pytest.approx(len(IMAGE) / result.seconds)


async def test_stale_answers_before_begin_are_ignored(bench: Any) -> None:
    b = bench()
    b.replies.put_nowait(ota.Progress(39, 40))
    b.replies.put_nowait(ota.Success())
    result = await within(b.sender(**FAST).push(IMAGE))
    assert bytes(b.device.written) == IMAGE
    assert result.answer == Success()


def test_sender_from_profile() -> None:
    profile = load_profile()
    sender = OtaSender.for_profile(profile, _never, asyncio.Queue(), window=4)
    assert sender.data_size == profile.ota.chunk_data_size == 508
    assert sender.reply_timeout == profile.limits.ota_reply_s
    assert sender.max_retries == profile.limits.ota_retries
    assert sender.window == 4


def test_sender_refuses_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="at least 1 chunk, not 0"):
        OtaSender(_never, asyncio.Queue(), window=0)
    with pytest.raises(ValueError, match="'auto' or a number of chunks, not 'fast'"):
        OtaSender(_never, asyncio.Queue(), window="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_window >= 1"):
        OtaSender(_never, asyncio.Queue(), max_window=0)


async def _never(payload: str) -> None:
    raise AssertionError(f"published {payload!r}")


# -- the window sized from the link ---------------------------------------------------------


@dataclass
class Step:
    """One answer as the window saw it: chunks it acknowledged, the size before and after."""

    at: float
    chunks: int
    before: int
    after: int


def drive(window: AutoWindow, rtt: float, rate: float, chunks: int = 3000) -> list[Step]:
    """Push `chunks` through a simulated link on a fake clock, in go-back-N's order.

    A chunk takes rtt/2 to the device, which writes one every 1/rate seconds, in order, and
    answers each at once; the answer takes rtt/2 back. The sender keeps `window.size` chunks
    in flight. Returns every answer's effect on the window.
    """
    sent_at: dict[int, float] = {}
    answers: list[tuple[float, int]] = []  # (arrival at the sender, chunk number)
    now = device_free = 0.0
    base = fresh = 0
    steps = []
    while base < chunks:
        while fresh < min(chunks, base + window.size):
            sent_at[fresh] = now
            device_free = max(now + rtt / 2, device_free) + 1 / rate
            heapq.heappush(answers, (device_free + rtt / 2, fresh))
            fresh += 1
        now, number = heapq.heappop(answers)
        before = window.size
        window.acknowledged(now, number + 1 - base, now - sent_at[number])
        steps.append(Step(now, number + 1 - base, before, window.size))
        base = number + 1
    return steps


def link_window(rtt: float, rate: float) -> float:
    """What the window should settle at: GAIN x the bandwidth-delay product, where the round
    trip a chunk can take is the link's and its own time at the device, and MARGIN more."""
    return GAIN * rate * (rtt + 1 / rate) + MARGIN


@pytest.mark.parametrize(("rtt", "rate"), [(0.3, 14.0), (0.6, 14.0), (0.5, 40.0), (1.0, 8.0)])
def test_auto_window_settles_at_the_links_bandwidth_delay_product(rtt, rate) -> None:
    window = AutoWindow()
    steps = drive(window, rtt, rate)
    assert window.rtt == pytest.approx(rtt + 1 / rate)
    assert window.rate == pytest.approx(rate, rel=0.02)
    settled = [step.after for step in steps[len(steps) // 2 :]]
    expected = link_window(rtt, rate)
    assert min(settled) >= int(expected * 0.95) and max(settled) <= expected * 1.05 + 1, (
        expected,
        sorted(set(settled)),
    )


def test_auto_window_keeps_the_link_busy() -> None:
    """Once settled, the device never waits: a chunk is written every 1/rate seconds."""
    rtt, rate = 0.6, 14.0
    steps = drive(AutoWindow(), rtt, rate, chunks=1000)
    late = [b.at - a.at for a, b in itertools.pairwise(steps[500:])]
    assert max(late) == pytest.approx(1 / rate)


def test_auto_window_grows_and_shrinks_smoothly() -> None:
    for rtt, rate in [(1.0, 40.0), (0.01, 20.0)]:  # far above the initial window, and near it
        steps = drive(AutoWindow(), rtt, rate, chunks=1000)
        for step in steps:
            assert step.after - step.before <= step.chunks, step  # at most doubling per trip
            assert step.before - step.after <= (step.chunks + 1) // 2, step
    assert steps[0].before == INITIAL_WINDOW
    assert steps[-1].after == int(link_window(0.01, 20.0)) == MARGIN + 2


def test_auto_window_never_exceeds_its_cap() -> None:
    for cap in (MAX_WINDOW, 16):
        window = AutoWindow(cap)
        steps = drive(window, rtt=2.0, rate=50.0, chunks=2000)  # asks for ~200 chunks
        assert max(step.after for step in steps) == cap
        assert window.target == cap


def test_auto_window_starts_over_after_a_timeout() -> None:
    window = AutoWindow()
    drive(window, rtt=0.6, rate=14.0)
    settled = window.size
    window.timed_out()
    assert (window.size, window.rate, window.target) == (1, None, None)
    steps = drive(window, rtt=0.6, rate=14.0)
    assert steps[0].before == 1
    assert all(step.after - step.before <= step.chunks for step in steps)  # at most doubling
    assert steps[-1].after == settled


def test_auto_window_halves_for_the_resend_after_a_request() -> None:
    window = AutoWindow()
    drive(window, rtt=0.6, rate=14.0)
    before = window.size
    window.went_back(0.0)
    assert window.size == before // 2
    assert window.target == pytest.approx(link_window(0.6, 14.0), rel=0.05)


def test_auto_window_paces_its_chunks_for_a_while_after_a_request() -> None:
    """After a lost chunk it sends at the answer rate, so no queue builds in front of the next."""
    window = AutoWindow()
    drive(window, rtt=0.3, rate=14.0)
    assert window.pace(100.0) is None  # a clean link: the window alone
    assert window.rtt is not None and window.rate is not None
    window.went_back(100.0)
    assert window.pace(100.0) == pytest.approx(1 / (DRAIN_PACE * window.rate))
    assert window.pace(100.0 + DRAIN_RTTS * window.rtt * 0.99) is not None
    assert window.pace(100.0 + DRAIN_RTTS * window.rtt) is None
    assert make_window(8).pace(0.0) is None


def test_make_window_takes_auto_or_a_number() -> None:
    assert isinstance(make_window("auto"), AutoWindow)
    assert make_window(5).size == 5
    for bad in (0, -1, True, 2.5, "8"):
        with pytest.raises(ValueError):
            make_window(bad)  # type: ignore[arg-type]


async def test_sender_sizes_its_window_by_default_and_hides_latency(bench: Any) -> None:
    times = {}
    for window in (1, "auto"):
        b = bench(latency=0.005)
        sender = b.sender(**FAST) if window == "auto" else b.sender(window=1, **FAST)
        result = await within(sender.push(IMAGE))
        assert b.device.received == list(range(CHUNKS)), "sent a chunk twice or past the image"
        assert bytes(b.device.written) == IMAGE
        assert max(count for _, count in b.in_flight) == result.peak_window
        assert result.rtt is not None and result.rtt >= 2 * 0.005
        times[window] = result.seconds
    assert times["auto"] * 3 < times[1], times


async def test_sender_never_sends_past_a_small_image(bench: Any) -> None:
    b = bench(latency=0.002)
    result = await within(b.sender(**FAST).push(SMALL))
    assert b.device.received == [0]
    assert result.peak_window == 1


async def test_sender_keeps_the_window_within_max_window(bench: Any) -> None:
    b = bench(latency=0.005)
    result = await within(b.sender(max_window=4, **FAST).push(IMAGE))
    assert max(count for _, count in b.in_flight) == result.peak_window == 4


async def test_sender_backs_off_to_one_chunk_after_a_timeout(bench: Any) -> None:
    """A gap the device does not report is resent when the reply timeout passes, alone."""
    plan = FaultPlan.named("drop_middle", CHUNKS)
    b = bench(request_gaps=False)
    result = await within(b.sender(faults=plan, **FAST).push(IMAGE))
    assert bytes(b.device.written) == IMAGE
    (lost,) = plan.drop
    resent = next(i for i, event in enumerate(b.events) if event == f"send:{lost}")
    assert b.events[resent + 1] == ota.progress(lost, CHUNKS)
    assert result.retransmissions >= 1
