"""Device answers that are malformed, oversized or not ASCII: never a crash, never a stall.

One status line with a 5000-digit number used to kill the task feeding answers to the
sender (int() refuses more than 4300 digits), so a healthy device was reported as giving up.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from hil.dut import Dut
from hil.measurements import Measurements
from hil.mqtt import MqttRecord
from hil.ota import FaultPlan, OtaError, OtaRefused, OtaSender, OtaTimeout
from hil.profile import load_profile
from hil.protocol import ota
from hil.protocol.image import build_image
from hil.protocol.ota import Error, Progress, Ready, Request, Success, chunk_count
from tests.ota.conftest import FakeDevice

IMAGE = build_image("2.0.0", 20000)  # 40 chunks
CHUNKS = chunk_count(len(IMAGE))
HUGE = "9" * 5000  # above int()'s 4300-digit limit

HOSTILE = [
    "OTA:PROGRESS:" + HUGE,
    "OTA:PROGRESS:" + HUGE + "/40",
    "OTA:PROGRESS:3/" + HUGE,
    "OTA:READY:" + HUGE,
    "OTA:REQUEST:" + HUGE,
    "OTA:PROGRESS:\u0663/40",  # ARABIC-INDIC DIGIT THREE: \d and int() take it
    "OTA:PROGRESS:\uff11/40",  # FULLWIDTH DIGIT ONE
    "OTA:READY:\u00b2",  # SUPERSCRIPT TWO: str.isdigit() takes it, int() does not
    "OTA:REQUEST:\u2460",  # CIRCLED DIGIT ONE
    "OTA:PROGRESS:-1/40",
    "OTA:PROGRESS:12345678901/40",  # 11 digits
    "OTA:PROGRESS:3/",
    "OTA:READY:",
    "OTA:ERROR:" + "x" * 5000,
    "OTA:ERROR:bad\x00reason",
    "OTA:SUCCESS:extra",
]


@pytest.mark.parametrize("text", HOSTILE, ids=lambda t: ascii(t[:24]))
def test_malformed_answer_is_no_reply_and_is_logged(text: str, caplog: Any) -> None:
    with caplog.at_level(logging.INFO, logger="hil.ota"):
        assert ota.parse_reply(text) is None
        assert ota.parse_reply(text.encode("utf-8", "surrogatepass")) is None
    logged = [r for r in caplog.records if r.name == "hil.ota" and "unparsed" in r.getMessage()]
    assert len(logged) == 2, caplog.records
    assert all(len(r.getMessage()) < 300 for r in logged), "the log line must stay short"


@pytest.mark.parametrize(
    "reply",
    [Ready(4096), Progress(0, 40), Progress(39, 40), Request(7), Success(), Error("verify")],
    ids=str,
)
def test_wellformed_answers_parse_and_print_as_sent(reply: ota.OtaReply) -> None:
    assert ota.parse_reply(str(reply)) == reply
    assert ota.parse_reply(f"  {reply}\r\n".encode()) == reply
    assert ota.parse_reply(str(reply).replace("OTA:", "OTA: ")) is None


def test_largest_number_still_parses() -> None:
    assert ota.parse_reply("OTA:PROGRESS:4294967295/4294967296") == Progress(2**32 - 1, 2**32)


def test_non_ota_text_is_not_logged(caplog: Any) -> None:
    with caplog.at_level(logging.DEBUG, logger="hil.ota"):
        assert ota.parse_reply("Hello") is None
        assert ota.parse_reply("STATUS:ONLINE:1.0.0") is None
    assert not [r for r in caplog.records if r.name == "hil.ota"]


def test_parse_reply_never_raises() -> None:
    rng = random.Random(0)
    words = ["OTA:", "READY:", "PROGRESS:", "REQUEST:", "ERROR:", "SUCCESS", "/", ":", "7"]
    odd = [" ", "\n", "\x00", "\u0663", "\u00b2", "\ud800", HUGE[:4400], "9" * 11]
    parts = words + odd
    for _ in range(3000):
        text = "".join(rng.choice(parts) for _ in range(rng.randint(0, 6)))
        reply = ota.parse_reply(text)
        assert reply is None or ota.parse_reply(str(reply)) == reply, text[:80]


def _record(text: str) -> MqttRecord:
    return MqttRecord(0, time.time(), "in", "esp32_status", 1, text.encode())


def _dut(mqtt: Any = None, **limits: Any) -> Dut:
    profile = load_profile(overrides={"limits": limits} if limits else None)
    return Dut(profile, None, mqtt, None, Measurements())  # type: ignore[arg-type]


@pytest.mark.parametrize("text", HOSTILE, ids=lambda t: ascii(t[:24]))
def test_malformed_ota_answer_is_still_a_status_not_an_echo(text: str) -> None:
    assert _dut().is_status(_record(text))


def test_is_status_tells_echo_from_status() -> None:
    dut = _dut()
    assert not dut.is_status(_record("Hello"))
    assert not dut.is_status(_record("OTA:hello"))  # a plaintext echo may start so
    for text in ("STATUS:ONLINE:1.0.0", "STATUS:HEARTBEAT:30", ota.progress(1, 2), ota.SUCCESS):
        assert dut.is_status(_record(text)), text


class FakeMqtt:
    """What Dut.ota uses of MqttRecorder (publish, tap), wired straight to a FakeDevice.

    `rewrite` turns the device's answers to one message into what is published instead.
    """

    def __init__(
        self, device: FakeDevice, rewrite: Callable[[list[str]], list[str]] = lambda a: a
    ) -> None:
        self.device = device
        self.rewrite = rewrite
        self.taps: list[asyncio.Queue[MqttRecord]] = []
        self.count = 0

    async def publish(self, topic: str, payload: str | bytes, qos: int = 1) -> MqttRecord:
        text = payload.decode() if isinstance(payload, bytes) else payload
        loop = asyncio.get_running_loop()
        for answer in self.rewrite(self.device.handle(text)):
            loop.call_soon(self._answer, answer)
        return self._make("out", topic, text)

    def _answer(self, text: str) -> None:
        record = self._make("in", "esp32_status", text)
        for queue in self.taps:
            queue.put_nowait(record)

    def _make(self, direction: str, topic: str, text: str) -> MqttRecord:
        self.count += 1
        return MqttRecord(self.count, time.time(), direction, topic, 1, text.encode())

    @contextlib.asynccontextmanager
    async def tap(self, topic: str) -> AsyncIterator[asyncio.Queue[MqttRecord]]:
        queue: asyncio.Queue[MqttRecord] = asyncio.Queue()
        self.taps.append(queue)
        try:
            yield queue
        finally:
            self.taps.remove(queue)


def junk_after(number: int, junk: str) -> Callable[[list[str]], list[str]]:
    """Publish `junk` right before the device's PROGRESS for chunk `number`."""

    def rewrite(answers: list[str]) -> list[str]:
        return [junk, *answers] if ota.progress(number, CHUNKS) in answers else answers

    return rewrite


async def within(work: Awaitable[Any], seconds: float = 10.0) -> Any:
    async with asyncio.timeout(seconds):
        return await work


@pytest.mark.parametrize("junk", HOSTILE[:6], ids=lambda t: ascii(t[:24]))
async def test_one_malformed_status_does_not_stall_an_update(junk: str) -> None:
    device = FakeDevice()
    dut = _dut(FakeMqtt(device, junk_after(20, junk)), ota_reply_s=0.2, ota_retries=2)
    result = await within(dut.ota(IMAGE))
    assert result.answer == Success()
    assert bytes(device.written) == IMAGE
    assert result.retransmissions == 0


@contextlib.contextmanager
def loop_errors() -> Any:
    """What the event loop reports to its exception handler (e.g. unretrieved task errors)."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        yield seen
    finally:
        loop.set_exception_handler(previous)


async def test_dead_answer_task_fails_the_push_at_once(monkeypatch: Any) -> None:
    """Whatever kills the task feeding answers, the push fails naming it, not by timeouts."""
    parse = ota.parse_reply

    def explode(payload: str | bytes) -> ota.OtaReply | None:
        if payload == ota.progress(5, CHUNKS):
            raise RuntimeError("boom in the answer task")
        return parse(payload)

    monkeypatch.setattr(ota, "parse_reply", explode)
    dut = _dut(FakeMqtt(FakeDevice()), ota_reply_s=5.0, ota_retries=10)
    started = time.monotonic()
    with loop_errors() as errors:
        try:
            await within(dut.ota(IMAGE), 3.0)
        except OtaTimeout as exc:
            pytest.fail(f"waited out retransmissions instead of failing at once: {exc}")
        except OtaError as exc:
            message = str(exc)
        else:
            pytest.fail("the push succeeded without its answers")
        gc.collect()
    assert time.monotonic() - started < 2.0
    assert "RuntimeError" in message and "boom in the answer task" in message, message
    assert errors == [], "a task's exception was never retrieved"


async def test_failed_push_leaves_no_task_with_an_unretrieved_exception() -> None:
    """The answer task's end is always collected, also when the push fails another way."""
    dut = _dut(FakeMqtt(FakeDevice(answer_chunks=False)), ota_reply_s=0.05, ota_retries=1)
    with loop_errors() as errors:
        with pytest.raises(OtaTimeout):
            await within(dut.ota(IMAGE))
        gc.collect()
    assert errors == []
    assert not _answer_tasks()


def _answer_tasks() -> list[asyncio.Task[Any]]:
    return [
        t
        for t in asyncio.all_tasks()
        if "pump" in getattr(t.get_coro(), "__qualname__", "") and not t.done()
    ]


async def test_cancelled_push_stops_its_answer_task() -> None:
    device = FakeDevice()
    started = asyncio.Event()

    def rewrite(answers: list[str]) -> list[str]:
        if ota.progress(10, CHUNKS) in answers:
            started.set()
            return []  # the device goes quiet: the push is mid-update when cancelled
        return answers

    dut = _dut(FakeMqtt(device, rewrite), ota_reply_s=5.0)
    push = asyncio.create_task(dut.ota(IMAGE))
    await within(started.wait())
    assert _answer_tasks(), "the answer task should be running mid-update"
    push.cancel()
    with pytest.raises(asyncio.CancelledError):
        await push
    assert not _answer_tasks()


async def test_refusal_names_the_device_answer() -> None:
    dut = _dut(FakeMqtt(FakeDevice(partition=4096)), ota_reply_s=1.0)
    with pytest.raises(OtaRefused) as refused:
        await within(dut.ota(IMAGE))
    message = str(refused.value)
    assert refused.value.reason == "size"
    assert refused.value.reply == "OTA:ERROR:size"
    assert "OTA:BEGIN" in message and "'OTA:ERROR:size'" in message
    assert "larger than the OTA partition" in message


async def test_refusal_mid_transfer_names_the_chunk() -> None:
    def rewrite(answers: list[str]) -> list[str]:
        return [ota.error("flash write")] if ota.progress(3, CHUNKS) in answers else answers

    dut = _dut(FakeMqtt(FakeDevice(), rewrite), ota_reply_s=1.0)
    with pytest.raises(OtaRefused) as refused:
        await within(dut.ota(IMAGE))
    assert refused.value.reason == "flash write"
    assert f"chunk 3 of {CHUNKS}" in str(refused.value)
    assert "'OTA:ERROR:flash write'" in str(refused.value)


async def test_result_repr_says_what_the_device_answered() -> None:
    result = await within(_dut(FakeMqtt(FakeDevice()), ota_reply_s=1.0).ota(IMAGE))
    text = repr(result)
    assert "OTA:SUCCESS" in text
    assert f"size={len(IMAGE)}" in text and f"chunks={CHUNKS}" in text
    assert "retransmissions=0" in text


def test_timeout_message_shows_the_last_answer_as_sent() -> None:
    assert str(Progress(3, 40)) == "OTA:PROGRESS:3/40"
    assert str(Error("verify")) == "OTA:ERROR:verify"


async def _feed_then(bench: Any, ending: Callable[[asyncio.Queue[Any]], Awaitable[None]]) -> str:
    """Push with a feed that relays the bench's answers until chunk 5, then ends as told."""
    b = bench()
    relayed: asyncio.Queue[ota.OtaReply] = asyncio.Queue()

    async def feed() -> None:
        while True:
            reply = await b.replies.get()
            if reply == Progress(5, CHUNKS):
                await ending(relayed)
                return
            relayed.put_nowait(reply)

    sender = OtaSender(b.publish, relayed, reply_timeout=5.0)
    with pytest.raises(OtaError) as failed:
        await within(sender.push(IMAGE, feed=feed()), 2.0)
    assert not isinstance(failed.value, OtaTimeout)
    assert f"chunk 5 of {CHUNKS}" in str(failed.value)
    return str(failed.value)


async def test_feed_that_returns_fails_the_push(bench: Any) -> None:
    async def stop(_: asyncio.Queue[Any]) -> None:
        return None

    assert "returned" in await _feed_then(bench, stop)


async def test_feed_cancelled_by_someone_else_fails_the_push(bench: Any) -> None:
    async def cancelled(_: asyncio.Queue[Any]) -> None:
        raise asyncio.CancelledError

    assert "was cancelled" in await _feed_then(bench, cancelled)


async def test_feed_of_a_push_that_cannot_start_is_closed(bench: Any) -> None:
    b = bench()

    async def feed() -> None:
        await asyncio.Event().wait()

    sender = OtaSender(b.publish, b.replies, faults=FaultPlan.dropping({99}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        coroutine = feed()
        with pytest.raises(ValueError, match="drop names chunks"):
            await sender.push(IMAGE, feed=coroutine)
        assert coroutine.cr_frame is None, "the feed was neither run nor closed"
