"""The suites run N times, each as its own `hil run` with its own artifacts folder.

A separate process per run gives each run what a lab's run has: its own bring-up, run.json
and exit status, and no state carried from the run before. The child runs in its own process
group, so a Ctrl-C at the terminal reaches only `hil accept`, which hands the running child
exactly one SIGINT (a second would break the teardown that gives the rig back); a second
interrupt kills it. SIGTERM and SIGHUP are taken the same way.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType, TracebackType

from hil.lifetime import die_with_parent

HIL = "import sys; from hil.cli import main; sys.exit(main())"  # the `hil` console script
INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(Exception):
    """A signal stopped the acceptance; no further run starts."""

    def __init__(self, received: list[signal.Signals]) -> None:
        super().__init__(received[0].name)
        self.received = received


def hil_run_command(
    rig: Path, artifacts: Path, firmware: Path | None, pytest_args: Sequence[str]
) -> list[str]:
    """`hil run` for one repetition, with this interpreter, so it tests this installation."""
    command = [sys.executable, "-c", HIL, "run", "--rig", str(rig)]
    command += ["--hil-artifacts", str(artifacts)]
    if firmware is not None:
        command += ["--firmware", str(firmware)]
    return command + list(pytest_args)


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


class ChildRunner:
    """Runs one child at a time; while entered, this process's interrupts go to the child."""

    def __init__(self) -> None:
        self.received: list[signal.Signals] = []
        self._child: subprocess.Popen[bytes] | None = None
        self._forwarded = 0
        self._previous: dict[signal.Signals, object] = {}

    def __enter__(self) -> ChildRunner:
        for sig in INTERRUPTS:
            if signal.getsignal(sig) is not signal.SIG_IGN:  # nohup stays nohup
                self._previous[sig] = signal.signal(sig, self._interrupt)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def run(self, command: list[str], env: Mapping[str, str]) -> int:
        """Run `command` to its end and return its exit status; Interrupted when a signal came
        before or while it ran (the child has ended by then)."""
        if self.received:
            raise Interrupted(self.received)
        child = subprocess.Popen(
            command, env=dict(env), process_group=0, preexec_fn=die_with_parent
        )
        self._child, self._forwarded = child, 0
        try:
            self._forward()  # for an interrupt that came between the fork and now
            status = child.wait()
        finally:
            self._child = None
        if self.received:
            raise Interrupted(self.received)
        return status

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signal.Signals(signum))
        self._forward()

    def _forward(self) -> None:
        """Catch the child up with the interrupts received: a SIGINT for the first (hil run
        unwinds and gives the rig back), a kill for the second; idempotent."""
        child = self._child
        if child is None or child.returncode is not None:
            return
        while self._forwarded < min(len(self.received), 2):
            self._forwarded += 1
            if self._forwarded == 1:
                child.send_signal(signal.SIGINT)
            else:
                child.kill()
