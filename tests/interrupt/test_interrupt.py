"""Interrupting a real run on the virtual rig: Ctrl-C, SIGTERM and SIGKILL in the middle of a
power cut leave no broker or twin behind, the relay on, the artifacts written, the rig free.

Each test starts `pytest --rig rigs/sim.toml` in a subprocess on a small suite that cuts the
modem's power and then waits for a line that never comes; the signal is sent once the test's
console.log shows the device noticed the cut.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from hil.lock import RigBusy, RigLock
from tests.core.conftest import needs_mosquitto
from tests.waiting import until

pytestmark = [needs_mosquitto, pytest.mark.repo_rig]

SIM_RIG = Path(__file__).parents[2] / "rigs" / "sim.toml"
MID_TEST_S = 30.0  # bring-up, boot and the cut, on a slow CI runner
EXIT_S = 30.0

CUT_AND_WAIT = """
import pytest
pytestmark = [pytest.mark.hil, pytest.mark.asyncio(loop_scope="session")]

async def test_power_cut_then_wait(rig, power, console):
    limits = rig.profile.limits  # bring-up has the device online before the test starts
    power.off()
    await console.expect(rig.profile.console.network_lost, limits.detect_s)
    await console.expect("a line the device never prints", 600)
"""

QUICK = """
import pytest
pytestmark = [pytest.mark.hil]

def test_rig_comes_up(console):
    assert console is not None
"""


@dataclass
class Run:
    """A `pytest --rig rigs/sim.toml` subprocess and where it writes."""

    process: subprocess.Popen[str]
    artifacts: Path

    def console_log(self) -> Path | None:
        found = list(self.artifacts.glob("*test_power_cut_then_wait*/console.log"))
        return found[0] if found else None

    def console_text(self) -> str:
        log = self.console_log()
        return log.read_text(errors="replace") if log else ""

    def wait_mid_test(self) -> None:
        until(
            lambda: "Network lost" in self.console_text() or self.process.poll() is not None,
            MID_TEST_S,
            "the device noticing the power cut",
        )
        assert self.process.poll() is None, self.process.communicate()[0]

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def twin_log(self) -> str:
        logs = list((self.artifacts / "_rig" / "sim").glob("hil-sim-*.log"))
        return logs[0].read_text(errors="replace") if logs else ""


@pytest.fixture
def start_run(tmp_path: Path, monkeypatch) -> Iterator[Callable[..., Run]]:
    """Start runs of a suite; whatever is still running at the end is killed with its group."""
    monkeypatch.setenv("HIL_LOCK_DIR", str(tmp_path / "locks"))  # apart from other runs
    runs: list[Run] = []

    def start(suite: str = CUT_AND_WAIT, name: str = "a") -> Run:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "test_inner.py").write_text(suite)
        artifacts = folder / "art"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "-q",
                "--rig",
                str(SIM_RIG),
                "--hil-artifacts",
                str(artifacts),
                "test_inner.py",
            ],
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        run = Run(process, artifacts)
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.process.poll() is None:
            os.killpg(run.process.pid, signal.SIGKILL)
            run.process.wait()


def gone(processes: list[psutil.Process]) -> bool:
    for p in processes:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def names(processes: list[psutil.Process]) -> str:
    return " | ".join(" ".join(p.cmdline()) for p in processes)


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP"]
)
def test_interrupt_mid_power_cut_gives_the_rig_back(start_run, sig: signal.Signals) -> None:
    run = start_run()
    run.wait_mid_test()
    children = run.children()
    spawned = names(children)
    assert "mosquitto" in spawned and "hil.sim" in spawned

    run.process.send_signal(sig)
    output = run.process.communicate(timeout=EXIT_S)[0]

    assert run.process.returncode == pytest.ExitCode.INTERRUPTED, output
    until(lambda: gone(children), 10, f"the broker and twin stopping ({spawned})")
    relay = [line for line in run.twin_log().splitlines() if "modem relay" in line]
    assert "modem off" in relay[-2] and "modem on" in relay[-1], relay
    board = [line for line in run.twin_log().splitlines() if "board relay" in line]
    assert "board on" in board[-1], board
    assert "Network lost" in run.console_text()
    with RigLock(SIM_RIG):  # released: taking it again works at once
        pass


def test_second_run_on_the_same_rig_errors_at_once(start_run) -> None:
    first = start_run()
    first.wait_mid_test()

    start = time.monotonic()
    second = start_run(QUICK, "b")
    output = second.process.communicate(timeout=EXIT_S)[0]

    assert time.monotonic() - start < 15  # interpreter and plugin start-up, never a wait
    assert "1 error" in output and "failed" not in output, output
    assert f"rig virtual ({SIM_RIG.resolve()}) is in use by pid {first.process.pid} since" in output
    assert "wait or stop it" in output
    assert first.process.poll() is None  # the holder carries on undisturbed
    assert not list((second.artifacts / "_rig").glob("broker/mosquitto.log"))


def test_lock_of_a_sigkilled_run_is_recovered(start_run) -> None:
    killed = start_run()
    killed.wait_mid_test()
    children = killed.children()
    spawned = names(children)

    killed.process.kill()  # the harness alone: its broker and twin must follow it
    killed.process.communicate(timeout=EXIT_S)
    until(lambda: gone(children), 10, f"orphans dying with the harness ({spawned})")

    after = start_run(QUICK, "b")
    output = after.process.communicate(timeout=EXIT_S)[0]
    assert after.process.returncode == 0, output
    assert "1 passed" in output


def test_busy_message_names_the_holder_and_a_stale_note_is_ignored(tmp_path: Path) -> None:
    hold = (
        "import sys; from pathlib import Path; from hil.lock import RigLock\n"
        f"lock = RigLock(Path({str(SIM_RIG)!r}), 'virtual', Path({str(tmp_path)!r}))\n"
        "lock.acquire(); print('held', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RigBusy) as busy:
            RigLock(SIM_RIG, "virtual", tmp_path).acquire()
        message = str(busy.value)
        assert f"rig virtual ({SIM_RIG.resolve()}) is in use by pid {holder.pid} since" in message
        assert "started by" in message and "wait or stop it" in message
    finally:
        holder.kill()
        holder.wait()
    lock = RigLock(SIM_RIG, "virtual", tmp_path)
    assert lock.note_path.exists()  # left by the killed holder
    with lock:
        assert f'"pid": {os.getpid()}' in lock.note_path.read_text()
    assert not lock.note_path.exists()
