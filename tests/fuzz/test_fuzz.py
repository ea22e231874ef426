"""Bad input from the device never crashes, hangs or grows memory in the harness.

Random console bytes go to the serial reader (in-process and through its real thread on a
pty); random status-topic payloads go to the reply parser and to a running `Dut.echo` and
`Dut.ota` against an in-process device. The device is untrusted: whatever it sends, the
harness answers with its own clear error within a deadline, or with the right result.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import select
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from hil.broker import BrokerEndpoint
from hil.console import ConsoleBuffer
from hil.console.serial import SerialConsole, SerialOptions
from hil.dut import Dut, EchoReply
from hil.measurements import Measurements
from hil.mqtt import MqttRecord, MqttRecorder, MqttTimeout
from hil.ota import OtaError, OtaResult
from hil.profile import DeviceProfile, load_profile
from hil.protocol import ota
from hil.protocol.crypto import DecryptError
from hil.protocol.image import build_image
from hil.sim.echo import Echo
from tests.core.conftest import PtyPort
from tests.ota.conftest import FakeDevice

PROFILE = load_profile()
PANIC = re.compile(PROFILE.console.panic)
BOOT = re.compile(PROFILE.console.boot)
DEADLINE_S = 5.0  # far above any example's run: reaching it is a hang
IMAGE = build_image("2.0.0", 3000)  # 6 chunks: a whole push per example
CUT_MARK = " [hil: line cut]"
# No example database: nothing written outside the run; a failure prints its example.
FUZZ = settings(deadline=None, database=None)


# -- strategies -------------------------------------------------------------------------
SPECIAL = st.sampled_from(
    [
        b"\r",
        b"\n",
        b"\r\n",
        b"\n\r",
        b"\x00",
        b"\xff\xfe",
        b"\xe2\x82",  # a UTF-8 sequence cut short
        b"\xed\xa0\x80",  # an encoded surrogate: invalid UTF-8
        b"Guru Meditation Error: Core  0 panic'ed (LoadProhibited).\r\n",
        b"Backtrace: 0x40081234:0x3ffb1234\r\n",
        b"abort() was called at PC 0x40081234",
        b"rst:0xc (RTC_SW_CPU_RST),boot:0x8 (SPI_FAST_FLASH_BOOT)\r\n",
        "LCD: \u00e9\u20ac\U0001f600\n".encode(),
    ]
)


def runs(longest: int) -> st.SearchStrategy[bytes]:
    """A few bytes repeated: long stretches without a newline, cheaply."""
    return st.builds(
        lambda unit, n: unit * n, st.binary(min_size=1, max_size=3), st.integers(0, longest)
    )


def chunks(longest: int) -> st.SearchStrategy[list[bytes]]:
    """What successive reads of the port return."""
    return st.lists(st.one_of(st.binary(max_size=100), SPECIAL, runs(longest)), max_size=25)


HUGE = st.integers(11, 6000).map(lambda n: "9" * n)  # past a u32, and past int()'s 4300 digits
NUMBER = st.one_of(st.integers(0, 2**40).map(str), HUGE)
ODD_DIGITS = st.text(  # other scripts' digits, superscripts: \d and int() may take them
    st.characters(categories=["Nd", "No"], min_codepoint=128), min_size=1, max_size=5
)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # lone surrogates: invalid UTF-8 on the wire


def _words(rest: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda w, t: w + t, st.sampled_from(ota._ANSWER_WORDS), rest)


ANSWER_SHAPED = st.one_of(
    st.builds(lambda n, m: f"OTA:PROGRESS:{n}/{m}", NUMBER, NUMBER),
    st.builds(lambda n, m: f"OTA:PROGRESS:{n}/{m}", ODD_DIGITS, NUMBER),
    st.builds(lambda n: f"OTA:PROGRESS:{n}", NUMBER),
    st.builds(lambda n: f"OTA:READY:{n}", st.one_of(NUMBER, ODD_DIGITS)),
    st.builds(lambda n: f"OTA:REQUEST:{n}", st.one_of(NUMBER, ODD_DIGITS)),
    _words(st.text(max_size=300)),
    st.from_regex(ota._REPLY, fullmatch=True),  # well-formed: parses, and may mislead
)
STATUS_SHAPED = st.one_of(
    st.builds(lambda t: "STATUS:ONLINE:" + t, st.text(max_size=40)),
    st.builds(lambda n: "STATUS:HEARTBEAT:" + n, st.one_of(NUMBER, ODD_DIGITS)),
    st.builds(lambda t: "STATUS:HEARTBEAT:" + t, st.text(max_size=20)),
)
ANY_TEXT = st.text(st.characters(), max_size=40)  # lone surrogates included
PAYLOADS = st.one_of(
    st.binary(max_size=80),
    st.text(max_size=80).map(_encode),
    ANY_TEXT.map(_encode),
    ANSWER_SHAPED.map(_encode),
    STATUS_SHAPED.map(_encode),
    st.builds(lambda w, b: w.encode() + b, st.sampled_from(ota._ANSWER_WORDS), st.binary()),
)
# Answer-shaped but broken by construction; the filter only drops the rare lucky parse.
UNPARSED = st.one_of(
    st.binary(max_size=80),
    ANY_TEXT.map(_encode),
    STATUS_SHAPED.map(_encode),
    st.builds(lambda n, m: f"OTA:PROGRESS:{n}/{m}", HUGE, NUMBER).map(_encode),
    st.builds(lambda n, m: f"OTA:PROGRESS:{n}/{m}", NUMBER, HUGE).map(_encode),
    st.builds(lambda w, n: w + n, st.sampled_from(ota._ANSWER_WORDS[:3]), HUGE).map(_encode),
    st.builds(lambda w, n: w + n, st.sampled_from(ota._ANSWER_WORDS[:3]), ODD_DIGITS).map(_encode),
    st.builds(
        lambda w, b: w.encode() + b"\xff" + b, st.sampled_from(ota._ANSWER_WORDS[:4]), st.binary()
    ),
    st.builds(lambda t: _encode(f"OTA:ERROR:{t}\x00"), st.text(max_size=20)),
    st.integers(201, 5000).map(lambda n: b"OTA:ERROR:" + b"x" * n),
).filter(lambda p: ota.parse_reply(p) is None)


# -- console reader ---------------------------------------------------------------------
class SmallConsole(SerialConsole):
    """Limits small enough for a few hundred random bytes to reach every bound."""

    MAX_LINE = 48
    HISTORY = 30
    MAX_INCIDENTS = 3


def pieces(data: bytes, max_line: int) -> tuple[list[str], bytes]:
    """The lines the reader must give for `data` however reads split it, and what it holds.

    A line is passed on in MAX_LINE-byte pieces, its rest (maybe empty) at the newline; each
    is decoded alone, with a trailing CR dropped.
    """
    *complete, rest = data.split(b"\n")
    raw: list[bytes] = []
    for segment in complete:
        while len(segment) >= max_line:
            raw.append(segment[:max_line])
            segment = segment[max_line:]
        raw.append(segment)
    while len(rest) >= max_line:
        raw.append(rest[:max_line])
        rest = rest[max_line:]
    return [r.rstrip(b"\r").decode("utf-8", "replace") for r in raw], rest


def incidents_for(texts: list[str]) -> int:
    """Lines that are a panic or an unplanned boot banner (none is planned here)."""
    return sum(1 for t in texts if PANIC.search(t) or BOOT.search(t))


def sunk(console: ConsoleBuffer) -> list[str]:
    """Every line's text as the log receives it, also those history has let go."""
    logged: list[str] = []
    console.sink = lambda entry: logged.append(entry[entry.index(" ") + 1 : -1])
    return logged


@settings(FUZZ, max_examples=300)
@given(reads=chunks(longest=150))
def test_reader_splits_any_bytes_into_bounded_lines(reads: list[bytes]) -> None:
    """Whatever the bytes and however reads split them: the same bounded lines, none lost."""
    con = SmallConsole(SerialOptions(port="/dev/null"), PROFILE)
    logged = sunk(con)
    for data in reads:
        con._take(data)
        assert len(con._partial) < con.MAX_LINE, "the unfinished line is bounded"
    want, rest = pieces(b"".join(reads), con.MAX_LINE)
    held = con.lines
    assert logged == want, "the same lines, whatever the reads' sizes"
    assert bytes(con._partial) == rest
    assert con.mark() == len(want)
    assert len(held) <= con.HISTORY
    assert [line.text for line in held] == want[len(want) - len(held) :]
    assert [line.index for line in held] == list(range(con.mark() - len(held), con.mark()))
    assert all(len(line.text) <= con.MAX_LINE for line in held)
    assert len(con.incidents) == min(con.MAX_INCIDENTS, incidents_for(want))


ASCII_RUNS = st.one_of(
    st.builds(
        lambda unit, n: unit * n, st.sampled_from([b"x", b"\x00", b"0\n"]), st.integers(0, 12000)
    ),
    st.builds(lambda n: b"y" * n + b"\n", st.integers(0, 12000)),  # a long line, ended at once
)


@settings(FUZZ, max_examples=40)
@given(reads=st.lists(ASCII_RUNS, max_size=8))
def test_long_lines_at_the_real_limit_are_pieced_not_cut(reads: list[bytes]) -> None:
    """ASCII without CR, at the real MAX_LINE: every byte but the newlines is a character."""
    con = SerialConsole(SerialOptions(port="/dev/null"), PROFILE)
    for data in reads:
        con._take(data)
    data = b"".join(reads)
    texts = [line.text for line in con.lines]
    assert all(len(t) <= con.MAX_LINE for t in texts)
    assert sum(map(len, texts)) + data.count(b"\n") + len(con._partial) == len(data)


@settings(FUZZ, max_examples=100)
@given(text=st.one_of(st.text(), runs(9000).map(lambda b: b.decode("latin-1"))))
def test_fed_line_is_bounded(text: str) -> None:
    """A third-party driver may feed any text: it is cut to MAX_LINE and says so."""
    con = ConsoleBuffer(panic=PROFILE.console.panic, boot=PROFILE.console.boot)
    line = con.feed(text)
    assert len(line.text) <= con.MAX_LINE + len(CUT_MARK)
    assert line.text == text or line.text == text[: con.MAX_LINE] + CUT_MARK


def write_all(fd: int, data: bytes, deadline: float) -> None:
    """Write to the pty master; a reader that stops draining fails at the deadline."""
    os.set_blocking(fd, False)
    view = memoryview(data)
    while view:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"the console reader stopped draining ({len(view)} bytes left)"
        select.select([], [fd], [], remaining)
        with contextlib.suppress(BlockingIOError):
            view = view[os.write(fd, view) :]


@settings(FUZZ, max_examples=40)
@given(garbage=chunks(longest=6000))
def test_reader_thread_on_a_pty_survives_random_bytes(garbage: list[bytes]) -> None:
    """The real thread, real reads: the next line still arrives, and lines match the model."""
    sentinel = b"\nSENTINEL-7f3a\n"
    data = b"".join(garbage) + sentinel
    with tempfile.TemporaryDirectory() as folder:
        port = PtyPort(Path(folder) / "console")
        con = SerialConsole(SerialOptions(port=str(port.link), reappear_s=2.0), PROFILE)
        try:
            con.open(timeout=2)
            logged = sunk(con)
            write_all(port.master, data, time.monotonic() + DEADLINE_S)
            found = run(con.expect("^SENTINEL-7f3a$", DEADLINE_S, since=0, fail_on_panic=False))
            assert found.line.index == con.mark() - 1, "the sentinel is the last line"
        finally:
            con.close()
            port.close()
    want, rest = pieces(data, con.MAX_LINE)
    assert rest == b""
    assert logged == want
    assert len(con.incidents) == min(con.MAX_INCIDENTS, incidents_for(want))


# -- reply parser -----------------------------------------------------------------------
def _dut(mqtt: Any = None, profile: DeviceProfile = PROFILE) -> Dut:
    return Dut(profile, ConsoleBuffer(), mqtt, None, Measurements())


def _record(payload: bytes) -> MqttRecord:
    return MqttRecord(0, time.time(), "in", PROFILE.mqtt.status_topic, 1, payload)


@settings(FUZZ, max_examples=500)
@given(text=st.one_of(st.text(alphabet=st.characters()), ANSWER_SHAPED, STATUS_SHAPED))
def test_parse_reply_never_raises_and_round_trips(text: str) -> None:
    for payload in (text, _encode(text)):
        reply = ota.parse_reply(payload)
        assert reply is None or isinstance(reply, ota.OtaReply)
        if reply is not None:
            assert ota.parse_reply(str(reply)) == reply, "re-formatted as the device sent it"
            assert ota.is_answer_shaped(str(reply))
            assert _dut().is_status(_record(str(reply).encode()))


@settings(FUZZ, max_examples=200)
@given(text=st.from_regex(ota._REPLY, fullmatch=True))
def test_every_wellformed_answer_parses(text: str) -> None:
    reply = ota.parse_reply(text)
    assert reply is not None
    assert ota.parse_reply(str(reply)) == reply


@settings(FUZZ, max_examples=300)
@given(payload=PAYLOADS)
def test_is_status_never_raises(payload: bytes) -> None:
    assert isinstance(_dut().is_status(_record(payload)), bool)
    assert ota.parse_reply(payload) is None or ota.is_answer_shaped(payload)


# -- a running echo and OTA push --------------------------------------------------------
Junk = list[tuple[int, bool, bytes]]  # (outgoing message number, before its answers, payload)
Answer = Callable[[str, bytes], list[bytes]]


def run(work: Coroutine[Any, Any, Any]) -> Any:
    """Run on a private loop under the deadline, leaving the session's loop state alone."""

    async def bounded() -> Any:
        async with asyncio.timeout(DEADLINE_S):
            return await work

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(bounded())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


class WiredRecorder(MqttRecorder):
    """The real recorder (records, expect, tap) with publish wired to an in-process device.

    Answers and junk reach the status topic through one in-order task, as from a broker.
    """

    def __init__(self, profile: DeviceProfile, answer: Answer, junk: Junk) -> None:
        super().__init__(BrokerEndpoint("127.0.0.1", 1), [profile.mqtt.status_topic])
        self.status = profile.mqtt.status_topic
        self.answer = answer
        self.junk = junk
        self.sent = 0
        self.wire: asyncio.Queue[bytes] = asyncio.Queue()
        self.task = asyncio.create_task(self._deliver())

    async def publish(self, topic: str, payload: str | bytes, qos: int = 1) -> MqttRecord:
        data = payload.encode() if isinstance(payload, str) else payload
        record = await self._add("out", topic, qos, data)
        number, self.sent = self.sent, self.sent + 1
        before = [p for n, first, p in self.junk if n == number and first]
        after = [p for n, first, p in self.junk if n == number and not first]
        for item in [*before, *self.answer(topic, data), *after]:
            self.wire.put_nowait(item)
        return record

    async def inject(self, payload: bytes) -> None:
        await self._add("in", self.status, 1, payload)

    async def _deliver(self) -> None:
        while True:
            await self.inject(await self.wire.get())

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.wait({self.task})


@contextlib.contextmanager
def nothing_left_behind() -> Iterator[None]:
    """No task still running and no exception the loop never saw retrieved, afterwards."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    before = asyncio.all_tasks()
    yield
    gc.collect()
    left = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert left == [], f"tasks left running: {left}"
    assert errors == [], f"the loop saw unretrieved errors: {errors}"


def echo_device(profile: DeviceProfile) -> Answer:
    echo = Echo(profile.crypto, set())

    def answer(topic: str, data: bytes) -> list[bytes]:
        if topic != profile.mqtt.command_topic:
            return []
        try:
            return [reply.encode() for reply in echo.answer(data).replies]
        except DecryptError:  # the device logs it and answers nothing
            return []

    return answer


ECHO_PROFILE = load_profile(overrides={"limits": {"echo_s": 2.0}})  # under DEADLINE_S
SHORT_WAIT_S = 0.02  # for an echo the model says cannot complete: answers come in < 1 ms
STATUS_LIKE = ["STATUS:ONLINE:1.0.0", "STATUS:HEARTBEAT:30", " OTA:PROGRESS:1/2 ", "OTA:ERROR:"]
NOT_STATUS = ["STATUS:ONLINE:", "OTA:hello", "OTA:", "STATUS:HEARTBEAT:x"]
PLAINTEXT = st.one_of(st.text(max_size=64), st.sampled_from(STATUS_LIKE + NOT_STATUS))  # <= 256 B


@settings(FUZZ, max_examples=250)
@given(
    plaintext=PLAINTEXT,
    early=st.lists(PAYLOADS, max_size=3),
    junk=st.lists(st.tuples(st.just(0), st.booleans(), PAYLOADS), max_size=5),
)
def test_echo_under_junk_takes_the_first_two_non_status_messages(
    plaintext: str, early: list[bytes], junk: Junk
) -> None:
    """Junk before the command is never taken; status-shaped junk is skipped; other junk is
    what the device said first (the suite then fails the echo), in order, or MqttTimeout."""
    dut = _dut(profile=ECHO_PROFILE)
    cipher = ECHO_PROFILE.crypto.cipher()
    second = cipher.encrypt(ECHO_PROFILE.crypto.echo_prefix + plaintext).encode()
    real = [plaintext.encode(), second]
    stream = [p for _, first, p in junk if first] + real + [p for _, first, p in junk if not first]
    taken = [p for p in stream if not dut.is_status(_record(p))]
    # A plaintext that looks like a status is skipped too: then only a timeout can end it.
    wait = None if len(taken) >= 2 else SHORT_WAIT_S

    async def scenario() -> EchoReply | MqttTimeout:
        mqtt = WiredRecorder(ECHO_PROFILE, echo_device(ECHO_PROFILE), junk)
        dut.mqtt = mqtt
        try:
            with nothing_left_behind():
                for payload in early:
                    await mqtt.inject(payload)
                try:
                    return await dut.echo(plaintext, wait)
                except MqttTimeout as exc:
                    return exc
        finally:
            await mqtt.close()

    result = run(scenario())
    event("the device's answers taken" if taken[:2] == real else type(result).__name__)
    if wait is not None:
        assert isinstance(result, MqttTimeout), result
        return
    assert isinstance(result, EchoReply), result
    assert [result.first.payload, result.second.payload] == taken[:2]
    if taken[:2] == real:
        assert result.first.text == plaintext
        assert (
            cipher.decrypt_text(result.second.payload)
            == ECHO_PROFILE.crypto.echo_prefix + plaintext
        )


def ota_device(profile: DeviceProfile, device: FakeDevice) -> Answer:
    def answer(topic: str, data: bytes) -> list[bytes]:
        if topic != profile.mqtt.firmware_topic:
            return []
        return [reply.encode() for reply in device.handle(data.decode())]

    return answer


def push(profile: DeviceProfile, device: FakeDevice, junk: Junk) -> OtaResult | OtaError:
    """Dut.ota against `device` with `junk` on the status topic; its result or OtaError."""

    async def scenario() -> OtaResult | OtaError:
        mqtt = WiredRecorder(profile, ota_device(profile, device), junk)
        result: OtaResult | OtaError
        try:
            with nothing_left_behind():
                try:
                    result = await _dut(mqtt, profile).ota(IMAGE)
                except OtaError as exc:
                    result = exc
        finally:
            await mqtt.close()
        assert mqtt._taps[profile.mqtt.status_topic] == [], "the push's tap is removed"
        return result

    return run(scenario())


CHUNKS = ota.chunk_count(len(IMAGE))
MESSAGE = st.integers(0, CHUNKS + 2)  # BEGIN, the chunks, END
PATIENT = load_profile(overrides={"limits": {"ota_reply_s": 3.0, "ota_retries": 1}})
HASTY = load_profile(overrides={"limits": {"ota_reply_s": 0.05, "ota_retries": 1}})
PLAUSIBLE = st.one_of(  # what the device might say, said at the wrong moment
    st.builds(ota.progress, st.integers(0, CHUNKS + 1), st.sampled_from([CHUNKS, CHUNKS + 1])),
    st.builds(ota.request, st.integers(0, CHUNKS + 1)),
    st.sampled_from([ota.ready(len(IMAGE)), ota.ready(1), ota.SUCCESS, ota.error("verify")]),
).map(str.encode)


@settings(FUZZ, max_examples=150)
@given(junk=st.lists(st.tuples(MESSAGE, st.booleans(), UNPARSED), max_size=10))
def test_ota_ignores_junk_that_is_no_answer(junk: Junk) -> None:
    """Nothing that fails to parse reaches the sender: the push is as clean as without it
    (a stall would show as a retransmission, or reach the deadline)."""
    device = FakeDevice()
    result = push(PATIENT, device, junk)
    assert isinstance(result, OtaResult), result
    assert result.answer == ota.Success()
    assert bytes(device.written) == IMAGE
    assert result.retransmissions == 0


DEVICES = st.sampled_from(  # a device that answers, one gone quiet mid-update, one busy
    [{}, {"request_gaps": False}, {"answer_chunks": False}, {"busy": True}]
)


@settings(FUZZ, max_examples=200)
@given(
    junk=st.lists(st.tuples(MESSAGE, st.booleans(), PAYLOADS | PLAUSIBLE), max_size=6),
    kind=DEVICES,
)
def test_ota_under_any_junk_ends_with_a_result_or_its_own_error(
    junk: Junk, kind: dict[str, bool]
) -> None:
    """Well-formed junk may mislead the sender (it looks like the device), but the push
    still ends in time with a result or an OtaError, never a ValueError or the like."""
    result = push(HASTY, FakeDevice(**kind), junk)
    event(type(result).__name__)
    if isinstance(result, OtaResult):
        assert result.answer == ota.Success()
    else:
        assert not isinstance(result, ValueError | LookupError | UnicodeError), repr(result)
        assert str(result), "the error says what happened"
