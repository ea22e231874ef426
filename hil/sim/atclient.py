"""The firmware's side of the AT link: send a command, collect its answer, route URCs.

One command is in flight at a time (the module's rule). Lines that belong to no command, and
the `+CMQTTRX…` blocks that carry raw topic and payload bytes, go to the URC callbacks. The raw
bytes that follow a `+HTTPREAD: DATA,<len>` or `+HTTPHEAD: DATA,<len>` line belong to the
command that asked for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from hil.sim.uart import BITS_PER_BYTE, UartEnd


class AtTimeout(Exception):
    """The modem did not answer in time (it is off, booting, or hung)."""


class ModemRestarted(AtTimeout):
    """The modem printed RDY mid-command: it rebooted (power loss) and will never answer."""


class AtError(Exception):
    """The modem answered ERROR; `lines` holds what it said before."""

    def __init__(self, command: str, lines: list[str]) -> None:
        super().__init__(f"{_name(command)}: {' | '.join(lines) or 'ERROR'}")
        self.lines = lines


def _name(command: str) -> str:
    """The command without its arguments, for messages (arguments may carry a password)."""
    return command.split("=", 1)[0]


def _future() -> asyncio.Future:  # type: ignore[type-arg]
    return asyncio.get_running_loop().create_future()


# Answer lines announcing <len> raw bytes that follow them (SIM7600G's HTTP(S) reads).
DATA_LINES = ("+HTTPREAD: DATA,", "+HTTPHEAD: DATA,")


@dataclass
class _Pending:
    command: str
    wait_for: str | None
    with_data: bool
    received: bytearray | None = None  # where raw data blocks of the answer go
    lines: list[str] = field(default_factory=list)
    prompt: asyncio.Future[None] = field(default_factory=lambda: _future())
    final: asyncio.Future[bool] = field(default_factory=lambda: _future())
    result: asyncio.Future[str] = field(default_factory=lambda: _future())

    def fail(self, exc: Exception) -> None:
        """Fail the step being waited for (prompt, final result, then the network result)."""
        steps = [self.final]
        if self.with_data:
            steps.insert(0, self.prompt)
        if self.wait_for:
            steps.append(self.result)
        for future in steps:
            if not future.done():
                future.set_exception(exc)
                return


@dataclass
class _Rx:
    topic: bytes = b""
    payload: bytes = b""


class AtClient:
    """Commands out, answers in; `on_urc(line)` and `on_message(topic, payload)` get the rest."""

    def __init__(
        self,
        uart: UartEnd,
        on_urc: Callable[[str], None],
        on_message: Callable[[str, bytes], None],
        late_results: tuple[str, ...] = (),
    ) -> None:
        self._uart = uart
        self._on_urc = on_urc
        self._on_message = on_message
        # Result prefixes of commands whose result the caller collects itself, after OK: such a
        # line may arrive in the middle of a later command and is never part of its answer.
        self._late_results = late_results
        self.last_rx = 0.0  # loop time the modem last sent anything: it was alive then
        self._lock = asyncio.Lock()
        self._pending: _Pending | None = None
        self._buffer = bytearray()
        self._raw: tuple[int, Callable[[bytes], None]] | None = None
        self._rx: _Rx | None = None
        self.rx_busy_s = 0.0  # total wire time of everything received so far

    def wire_time(self, size: int) -> float:
        return size * BITS_PER_BYTE / self._uart.baud

    async def command(
        self,
        line: str,
        timeout: float,
        data: bytes | None = None,
        wait_for: str | None = None,
        result_timeout: float = 0.0,
        received: bytearray | None = None,
    ) -> list[str]:
        """Send `line`; answer lines up to OK. With `data`, send it at the `>` prompt.

        With `wait_for` (a result prefix such as "+CMQTTPUB:"), also wait for that line, which
        the module sends after OK, and return it last. Raw data blocks of the answer (after a
        DATA_LINES line) are appended to `received`.
        """
        async with self._lock:
            pending = _Pending(line, wait_for, data is not None, received)
            self._pending = pending
            try:
                self._uart.write(line.encode() + b"\r")
                budget = timeout + self.wire_time(len(line) + len(data or b"") + 64) * 2
                if data is not None:
                    await self._wait(pending.prompt, budget, line)
                    self._uart.write(data)
                ok = await self._wait(pending.final, budget, line)
                if not ok:
                    raise AtError(line, pending.lines)
                if wait_for is None:
                    return pending.lines
                result = await self._wait(pending.result, result_timeout or timeout, line)
                return [*pending.lines, result]
            finally:
                self._pending = None

    async def _wait(self, future, timeout: float, line: str):  # type: ignore[no-untyped-def]
        """Wait for `future` for `timeout`, plus the time the UART spent bringing us other bytes.

        URCs (incoming messages) share the wire with answers and may delay an answer by their
        wire time, but a modem that talks without answering still runs out of time.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout - self.rx_busy_s
        try:
            while True:
                left = deadline + self.rx_busy_s - loop.time()
                if left <= 0:
                    raise AtTimeout(f"no answer to {_name(line)} within {timeout:.1f} s")
                done, _ = await asyncio.wait({future}, timeout=left)
                if done:
                    return future.result()
        finally:
            if not future.done():
                future.cancel()

    async def run(self) -> None:
        """Read the UART for ever and dispatch what arrives."""
        while True:
            data = await self._uart.read()
            self.last_rx = asyncio.get_running_loop().time()
            self.rx_busy_s += self.wire_time(len(data))
            self._buffer += data
            self._consume()

    def _consume(self) -> None:
        while self._buffer:
            if self._raw is not None:
                size, done = self._raw
                if len(self._buffer) < size:
                    return
                data = bytes(self._buffer[:size])
                del self._buffer[:size]
                self._raw = None
                done(data)
                continue
            if self._buffer[0] in (0x0D, 0x0A):
                del self._buffer[0]
                continue
            pending = self._pending
            if self._buffer[0] == ord(">") and pending is not None and not pending.prompt.done():
                del self._buffer[:1]
                if self._buffer[:1] == b" ":
                    del self._buffer[:1]
                pending.prompt.set_result(None)
                continue
            end = self._buffer.find(b"\n")
            if end < 0:
                return
            line = self._buffer[:end].decode("utf-8", "replace").rstrip("\r")
            del self._buffer[: end + 1]
            self._line(line)

    def _line(self, line: str) -> None:
        if line.startswith("+CMQTTRX"):
            self._rx_line(line)
            return
        pending = self._pending
        if line.startswith(DATA_LINES):
            size = line.rpartition(",")[2].strip()
            if size.isascii() and size.isdigit():
                sink = pending.received if pending is not None else None
                self._raw = (int(size), sink.extend if sink is not None else lambda data: None)
                return
        if line.upper().startswith("AT"):
            return  # echo of our own command (before ATE0)
        if line == "RDY":
            if pending is not None:
                pending.fail(ModemRestarted(f"modem restarted during {_name(pending.command)}"))
            self._on_urc(line)
            return
        if pending is None or line.startswith(("+CMQTTCONNLOST", "+CMQTTNONET")):
            if pending is not None and pending.wait_for and not pending.result.done():
                pending.result.set_exception(AtError(pending.command, [line]))
            self._on_urc(line)
            return
        if pending.wait_for and line.startswith(pending.wait_for) and pending.final.done():
            if not pending.result.done():
                pending.result.set_result(line)
            return
        if pending.final.done() or line.startswith(self._late_results):
            self._on_urc(line)
        elif line == "OK":
            pending.final.set_result(True)
        elif line == "ERROR" or line.startswith("+CME ERROR"):
            pending.lines.append(line)
            pending.final.set_result(False)
        else:
            pending.lines.append(line)

    def _rx_line(self, line: str) -> None:
        head, _, args = line.partition(": ")
        numbers = [int(v) for v in args.split(",") if v.strip().isdigit()]
        if head == "+CMQTTRXSTART":
            self._rx = _Rx()
        elif head == "+CMQTTRXTOPIC" and self._rx is not None and len(numbers) == 2:
            rx = self._rx
            self._raw = (numbers[1], lambda data: setattr(rx, "topic", data))
        elif head == "+CMQTTRXPAYLOAD" and self._rx is not None and len(numbers) == 2:
            rx = self._rx
            self._raw = (numbers[1], lambda data: setattr(rx, "payload", rx.payload + data))
        elif head == "+CMQTTRXEND" and self._rx is not None:
            rx, self._rx = self._rx, None
            self._on_message(rx.topic.decode("utf-8", "replace"), rx.payload)
