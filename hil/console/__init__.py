"""The device console: every line timestamped, searchable from a cursor, panics caught.

`ConsoleBuffer` holds what came and answers `await expect(pattern, timeout)`; a driver (the
pyserial one, or a third party's in the `hil.console` group) only feeds it text. Lines that
match the profile's panic pattern, and boot banners the test did not cause, are incidents:
they fail the running test with the lines around them attached.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

Pattern = str | re.Pattern[str]


@dataclass(frozen=True)
class ConsoleLine:
    index: int
    time: float  # time.time() when the line ended
    text: str

    def format(self) -> str:
        stamp = datetime.fromtimestamp(self.time).isoformat(timespec="milliseconds")
        return f"{stamp} {self.text}"


@dataclass(frozen=True)
class Found:
    """A line that matched: `found["group"]` reads the match's named groups."""

    line: ConsoleLine
    match: re.Match[str]

    def __getitem__(self, group: int | str) -> str:
        return self.match[group]

    @property
    def time(self) -> float:
        return self.line.time


@dataclass(frozen=True)
class Incident:
    """Something the device did that fails the running test: a panic or an unplanned reboot.

    `index` is the console line it happened at (for a vanished port: the next line to come).
    """

    kind: str
    index: int
    time: float
    context: tuple[ConsoleLine, ...]

    def describe(self) -> str:
        lines = "\n".join(f"    {c.format()}" for c in self.context) or "    (no console lines)"
        return f"{self.kind} on the console at line {self.index}:\n{lines}"


class ConsoleTimeout(AssertionError):
    """The device did not print what the test waited for (a device failure, not a rig error)."""


class DeviceIncident(AssertionError):
    """The device panicked or rebooted while the test ran."""

    def __init__(self, incidents: list[Incident]) -> None:
        self.incidents = incidents
        super().__init__("\n".join(i.describe() for i in incidents))


class PortGone(RuntimeError):
    """The console port vanished and did not come back within the rig's limit."""


def _compile(pattern: Pattern) -> re.Pattern[str]:
    return pattern if isinstance(pattern, re.Pattern) else re.compile(pattern)


class ConsoleBuffer:
    """Lines in arrival order, fed from a reader thread, awaited from the test's event loop.

    Line indexes count from the first line of the session and never change. Memory is bounded:
    a line longer than MAX_LINE is cut (the driver says so), and only the last HISTORY lines are
    kept here; the log file keeps everything. A wait looks only at lines it has not seen.
    """

    CONTEXT = 8
    HISTORY = 100_000
    MAX_LINE = 4096  # characters; an ESP-IDF log line is far shorter
    MAX_INCIDENTS = 100

    def __init__(self, panic: Pattern | None = None, boot: Pattern | None = None) -> None:
        self._panic = _compile(panic) if panic else None
        self._boot = _compile(boot) if boot else None
        self._lines: deque[ConsoleLine] = deque(maxlen=self.HISTORY)
        self._count = 0  # lines ever fed: the index of the next one
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._reboots_allowed = 0
        self.incidents: list[Incident] = []
        self.vanished: list[tuple[int, float]] = []  # (next line index, time) per port loss
        self.cursor = 0
        self.sink: Callable[[str], None] | None = None
        self.gone: str | None = None  # why the port is lost for good, once it is

    # -- feeding (reader thread) -------------------------------------------------------
    def feed(self, text: str, when: float | None = None) -> ConsoleLine:
        if len(text) > self.MAX_LINE:
            text = text[: self.MAX_LINE] + " [hil: line cut]"
        with self._lock:
            line = ConsoleLine(self._count, when or time.time(), text)
            self._lines.append(line)
            self._count += 1
            self._classify(line)
        if self.sink:
            self.sink(line.format() + "\n")
        self._wake()
        return line

    def note(self, text: str) -> None:
        """A harness remark in the log (port lost, reopened), not a device line."""
        if self.sink:
            self.sink(f"{datetime.now().isoformat(timespec='milliseconds')} [hil] {text}\n")

    def port_vanished(self, text: str) -> None:
        """The port went away: the chip is restarting (a native USB port leaves the bus)."""
        self.note(text)
        with self._lock:
            self.vanished.append((self._count, time.time()))
            if not self._reboots_allowed:
                self._incident("unplanned reboot (the console port vanished)", self._count)
        self._wake()

    def lose(self, reason: str) -> None:
        """The port is gone for good: waiting tests fail with `reason`."""
        self.gone = reason
        self.note(reason)
        self._wake()

    def _wake(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # loop closed meanwhile
                loop.call_soon_threadsafe(event.set)

    def _classify(self, line: ConsoleLine) -> None:
        if self._panic and self._panic.search(line.text):
            self._incident("panic", line.index)
        elif self._boot and self._boot.search(line.text) and not self._reboots_allowed:
            self._incident("unplanned reboot", line.index)

    def _incident(self, kind: str, index: int) -> None:
        """Record an incident with the lines before it (called with the lock held)."""
        if len(self.incidents) >= self.MAX_INCIDENTS:
            return  # a device printing panics in a loop: the first ones say it all
        held = len(self._lines)
        context = itertools.islice(self._lines, max(0, held - self.CONTEXT - 1), None)
        self.incidents.append(Incident(kind, index, time.time(), tuple(context)))

    # -- reading (test side) -----------------------------------------------------------
    @property
    def is_open(self) -> bool:
        """Whether the console's port is there to read now (a bare buffer always is)."""
        return True

    @property
    def lines(self) -> list[ConsoleLine]:
        """The lines still held (the last HISTORY of them)."""
        with self._lock:
            return list(self._lines)

    def since(self, index: int) -> list[ConsoleLine]:
        """The held lines from line `index` on, in order."""
        with self._lock:
            return self._since(index)

    def _since(self, index: int) -> list[ConsoleLine]:
        if not self._lines:
            return []
        first = self._lines[0].index
        skip = max(0, index - first)
        if skip >= len(self._lines):
            return []
        return list(itertools.islice(self._lines, skip, None))

    def mark(self) -> int:
        """Index of the next line to arrive; pass it as `since=` to search from here."""
        with self._lock:
            return self._count

    def skip(self) -> None:
        """Move the cursor past everything received so far."""
        self.cursor = self.mark()

    def incidents_since(self, index: int) -> list[Incident]:
        return [i for i in self.incidents if i.index >= index]

    def vanished_since(self, index: int) -> bool:
        """Whether the port vanished (the chip restarted) after line `index - 1`."""
        return any(at >= index for at, _ in self.vanished)

    @contextlib.contextmanager
    def reboot_expected(self) -> Iterator[None]:
        """Boot banners and vanished ports inside this block are the test's doing."""
        with self._lock:
            self._reboots_allowed += 1
        try:
            yield
        finally:
            with self._lock:
                self._reboots_allowed -= 1

    def search(self, pattern: Pattern, since: int = 0) -> Found | None:
        regex = _compile(pattern)
        for line in self.since(since):
            m = regex.search(line.text)
            if m:
                return Found(line, m)
        return None

    async def expect(
        self,
        pattern: Pattern,
        timeout: float,
        *,
        since: int | None = None,
        fail_on_panic: bool = True,
    ) -> Found:
        """Wait for a line matching `pattern` at or after the cursor (or `since`).

        On a match the cursor moves past that line. A panic while waiting fails at once,
        with the panic's lines, instead of waiting out the timeout.
        """
        regex = _compile(pattern)
        start = self.cursor if since is None else since
        panics_before = len(self.incidents)

        def look() -> Found | None:
            nonlocal start
            with self._lock:
                fresh, start = self._since(start), self._count
            for line in fresh:
                if m := regex.search(line.text):
                    self.cursor = line.index + 1
                    return Found(line, m)
            panics = [i for i in self.incidents[panics_before:] if i.kind == "panic"]
            if fail_on_panic and panics:
                raise DeviceIncident(panics)
            if self.gone:
                raise PortGone(self.gone)
            return None

        return await self._until(look, timeout, lambda: self._timeout_message(regex, timeout))

    async def expect_restart(self, timeout: float, *, since: int, banner: bool) -> None:
        """Wait for proof that the chip restarted after line `since`.

        With `banner` (a console that survives resets: a UART bridge) the boot banner; else
        the port vanishing, which is all a native USB console shows of a reset.
        """
        if banner:
            await self.expect(self._boot or "rst:", timeout, since=since)
            return

        def look() -> bool | None:
            if self.vanished_since(since):
                return True
            if self.gone:
                raise PortGone(self.gone)
            return None

        await self._until(
            look,
            timeout,
            lambda: f"console: the port did not vanish (no restart) within {timeout:g} s",
        )

    async def _until(self, look: Callable[[], Any], timeout: float, message: Callable[[], str]):
        """Call `look` on every new line or port event until it returns something."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        waiter = (loop, event)
        deadline = loop.time() + timeout
        with self._lock:
            self._waiters.add(waiter)
        try:
            while True:
                event.clear()
                found = look()
                if found is not None:
                    return found
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise ConsoleTimeout(message())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), remaining)
        finally:
            with self._lock:
                self._waiters.discard(waiter)

    def tail(self, count: int = 10) -> list[ConsoleLine]:
        with self._lock:
            return list(itertools.islice(self._lines, max(0, len(self._lines) - count), None))

    def _timeout_message(self, regex: re.Pattern[str], timeout: float) -> str:
        tail = "\n".join(f"    {line.format()}" for line in self.tail()) or "    (nothing)"
        return (
            f"console: no line matching {regex.pattern!r} within {timeout:g} s; "
            f"the last lines were:\n{tail}"
        )
