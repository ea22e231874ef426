"""The device console: every line timestamped, searchable from a cursor, panics caught.

`ConsoleBuffer` holds what came and answers `await expect(pattern, timeout)`; a driver (the
pyserial one, or a third party's in the `hil.console` group) only feeds it text. Lines that
match the profile's panic pattern, and boot banners the test did not cause, are incidents:
they fail the running test with the lines around them attached.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

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
    """Something the device did that fails the running test: a panic or an unplanned reboot."""

    kind: str
    line: ConsoleLine
    context: tuple[ConsoleLine, ...]

    def describe(self) -> str:
        lines = "\n".join(f"    {c.format()}" for c in self.context)
        return f"{self.kind} on the console at line {self.line.index}:\n{lines}"


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
    """Lines in arrival order, fed from a reader thread, awaited from the test's event loop."""

    CONTEXT = 8

    def __init__(self, panic: Pattern | None = None, boot: Pattern | None = None) -> None:
        self._panic = _compile(panic) if panic else None
        self._boot = _compile(boot) if boot else None
        self._lines: list[ConsoleLine] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._reboots_allowed = 0
        self.incidents: list[Incident] = []
        self.cursor = 0
        self.sink: Callable[[str], None] | None = None
        self.gone: str | None = None  # why the port is lost for good, once it is

    # -- feeding (reader thread) -------------------------------------------------------
    def feed(self, text: str, when: float | None = None) -> ConsoleLine:
        with self._lock:
            line = ConsoleLine(len(self._lines), when or time.time(), text)
            self._lines.append(line)
            self._classify(line)
            self._arrived.notify_all()
            waiters = list(self._waiters)
        if self.sink:
            self.sink(line.format() + "\n")
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # loop closed meanwhile
                loop.call_soon_threadsafe(event.set)
        return line

    def note(self, text: str) -> None:
        """A harness remark in the log (port lost, reopened), not a device line."""
        if self.sink:
            self.sink(f"{datetime.now().isoformat(timespec='milliseconds')} [hil] {text}\n")

    def lose(self, reason: str) -> None:
        """The port is gone for good: waiting tests fail with `reason`."""
        self.gone = reason
        self.note(reason)
        self._wake()

    def _wake(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    def _classify(self, line: ConsoleLine) -> None:
        kind = None
        if self._panic and self._panic.search(line.text):
            kind = "panic"
        elif self._boot and self._boot.search(line.text) and not self._reboots_allowed:
            kind = "unplanned reboot"
        if kind:
            start = max(0, line.index - self.CONTEXT)
            self.incidents.append(Incident(kind, line, tuple(self._lines[start:])))

    # -- reading (test side) -----------------------------------------------------------
    @property
    def lines(self) -> list[ConsoleLine]:
        with self._lock:
            return list(self._lines)

    def mark(self) -> int:
        """Index of the next line to arrive; pass it as `since=` to search from here."""
        with self._lock:
            return len(self._lines)

    def skip(self) -> None:
        """Move the cursor past everything received so far."""
        self.cursor = self.mark()

    def incidents_since(self, index: int) -> list[Incident]:
        return [i for i in self.incidents if i.line.index >= index]

    @contextlib.contextmanager
    def reboot_expected(self) -> Iterator[None]:
        """Boot banners inside this block are the test's doing, not incidents."""
        self._reboots_allowed += 1
        try:
            yield
        finally:
            self._reboots_allowed -= 1

    def search(self, pattern: Pattern, since: int = 0) -> Found | None:
        regex = _compile(pattern)
        for line in self.lines[since:]:
            m = regex.search(line.text)
            if m:
                return Found(line, m)
        return None

    def wait(self, pattern: Pattern, timeout: float, since: int = 0) -> Found | None:
        """Block (outside any event loop, e.g. during rig bring-up) until a line matches."""
        regex = _compile(pattern)
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for line in self._lines[since:]:
                    if m := regex.search(line.text):
                        return Found(line, m)
                since = len(self._lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.gone:
                    return None
                self._arrived.wait(remaining)

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
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        waiter = (loop, event)
        deadline = loop.time() + timeout
        panics_before = len(self.incidents)
        with self._lock:
            self._waiters.add(waiter)
        try:
            while True:
                event.clear()
                lines = self.lines
                for line in lines[start:]:
                    m = regex.search(line.text)
                    if m:
                        self.cursor = line.index + 1
                        return Found(line, m)
                start = len(lines)
                panics = [i for i in self.incidents[panics_before:] if i.kind == "panic"]
                if fail_on_panic and panics:
                    raise DeviceIncident(panics)
                if self.gone:
                    raise PortGone(self.gone)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise ConsoleTimeout(self._timeout_message(regex, timeout))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), remaining)
        finally:
            with self._lock:
                self._waiters.discard(waiter)

    def _timeout_message(self, regex: re.Pattern[str], timeout: float) -> str:
        tail = "\n".join(f"    {line.format()}" for line in self.lines[-10:]) or "    (nothing)"
        return (
            f"console: no line matching {regex.pattern!r} within {timeout:g} s; "
            f"the last lines were:\n{tail}"
        )
