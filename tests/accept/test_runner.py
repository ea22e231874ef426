"""The runner's signal handling, against a stand-in child that logs the signals it gets:
an interrupt of `hil accept` reaches the running `hil run` as exactly one SIGINT, a second
one kills it, and no further run starts."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from hil.accept.runner import ChildRunner, Interrupted, hil_run_command
from tests.waiting import until

CHILD = """
import os, signal, sys, time
log, stubborn = sys.argv[1], sys.argv[2] == "stubborn"
got = []
def note(signum, frame):
    got.append(signum)
    with open(log, "a") as f:
        f.write(signal.Signals(signum).name + "\\n")
for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, note)
with open(log + ".ready", "w") as f:
    f.write(f"{os.getpid()} {os.getpgid(0)}")
deadline = time.monotonic() + 30
while time.monotonic() < deadline and (stubborn or not got):
    time.sleep(0.02)
time.sleep(0.3)  # a duplicate signal would arrive and be logged meanwhile
sys.exit(130 if got else 0)
"""


def child(log: Path, mode: str = "polite") -> list[str]:
    return [sys.executable, "-c", CHILD, str(log), mode]


def signal_self_when(ready: Path, *signals: signal.Signals, log: Path) -> threading.Thread:
    """Send this process `signals`, the first once the child is ready, each next once the
    child has logged the one before."""

    def send() -> None:
        until(ready.exists, 10, "the child starting")
        for n, sig in enumerate(signals):
            if n:
                until(
                    lambda n=n: log.exists() and len(log.read_text().split()) >= n,
                    10,
                    "the child logging the interrupt",
                )
            os.kill(os.getpid(), sig)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP"]
)
def test_an_interrupt_reaches_the_running_child_as_one_sigint(
    tmp_path: Path, sig: signal.Signals
) -> None:
    log = tmp_path / "signals.log"
    before = signal.getsignal(signal.SIGINT)
    sender = signal_self_when(Path(f"{log}.ready"), sig, log=log)

    with ChildRunner() as runner:
        with pytest.raises(Interrupted) as stopped:
            runner.run(child(log), os.environ)
        sender.join(10)
        assert stopped.value.received == [sig]
        assert log.read_text().split() == ["SIGINT"]  # once, and SIGINT whatever came
        pid, group = map(int, Path(f"{log}.ready").read_text().split())
        assert group == pid  # its own group: a terminal's Ctrl-C does not reach it twice

        with pytest.raises(Interrupted):
            runner.run(child(tmp_path / "next.log"), os.environ)
        assert not Path(f"{tmp_path / 'next.log'}.ready").exists()  # no further run started
    assert signal.getsignal(signal.SIGINT) is before


def test_a_second_interrupt_kills_a_child_that_does_not_stop(tmp_path: Path) -> None:
    log = tmp_path / "signals.log"
    sender = signal_self_when(Path(f"{log}.ready"), signal.SIGINT, signal.SIGINT, log=log)

    started = time.monotonic()
    with ChildRunner() as runner, pytest.raises(Interrupted) as stopped:
        runner.run(child(log, "stubborn"), os.environ)
    sender.join(10)

    assert time.monotonic() - started < 10  # the child would carry on for 30 s

    assert stopped.value.received == [signal.SIGINT, signal.SIGINT]
    assert log.read_text().split() == ["SIGINT"]  # the second was a kill, not a signal it saw
    pid = int(Path(f"{log}.ready").read_text().split()[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_run_returns_the_childs_exit_status(tmp_path: Path) -> None:
    with ChildRunner() as runner:
        assert runner.run([sys.executable, "-c", "raise SystemExit(3)"], os.environ) == 3
        assert runner.run([sys.executable, "-c", "pass"], os.environ) == 0


def test_the_command_is_hil_run_with_this_interpreter(tmp_path: Path) -> None:
    command = hil_run_command(
        tmp_path / "rig.toml", tmp_path / "run-1", tmp_path / "build", ["-k", "echo"]
    )

    assert command[0] == sys.executable
    assert command[3:] == [
        "run",
        "--rig",
        str(tmp_path / "rig.toml"),
        "--hil-artifacts",
        str(tmp_path / "run-1"),
        "--firmware",
        str(tmp_path / "build"),
        "-k",
        "echo",
    ]
    assert "--firmware" not in hil_run_command(tmp_path / "r", tmp_path / "o", None, [])
