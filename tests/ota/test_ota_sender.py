"""OtaSender against the in-process FakeDevice of conftest.py."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable
from typing import Any

import pytest

from hil.ota import FaultPlan, OtaRefused, OtaSender, OtaTimeout
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


async def test_adaptive_window_halves_after_a_request(bench: Any) -> None:
    plan = FaultPlan.dropping({CHUNKS - 3})  # two chunks in flight above it draw the REQUEST
    b = bench()
    result = await within(b.sender(window=8, faults=plan, **FAST).push(IMAGE))
    assert result.requests_seen >= 1
    assert result.window == 4
    request = b.events.index(ota.request(CHUNKS - 3))
    assert all(count <= 4 for at, count in b.in_flight if at > request)

    fixed = bench()
    result = await within(fixed.sender(window=8, faults=plan, adaptive=False, **FAST).push(IMAGE))
    assert result.window == 8


async def test_window_grows_back_to_configured(bench: Any) -> None:
    result = await within(
        bench().sender(window=8, faults=FaultPlan.dropping({2}), **FAST).push(IMAGE)
    )
    assert result.window == 8


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
    assert f"no answer to OTA:BEGIN:{len(IMAGE)}" in str(timeout.value)


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
    with pytest.raises(ValueError, match="window >= 1"):
        OtaSender(_never, asyncio.Queue(), window=0)


async def _never(payload: str) -> None:
    raise AssertionError(f"published {payload!r}")
