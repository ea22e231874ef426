"""A lab on loopback: labgrid's own coordinator and exporter, Debian's ser2net, and a bench.

The bench is a device twin in its own process, already online, like a board on a lab's bench;
its console (a UART bridge, so the port survives resets) and its LCUS relay are ptys. The
exporter exports both as RawSerialPort resources under their real /dev/pts paths, so a client
that acquires the place gets them as NetworkSerialPorts served by ser2net speaking RFC 2217.
The place is made with labgrid-client, as a lab admin would. ser2net is started by the
exporter through a wrapper that makes it listen on loopback only (the exporter's own command
line listens on every address). Every process started here is stopped at the end.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from hil.broker.mosquitto import MosquittoBroker, MosquittoOptions
from hil.lab.client import LabClient
from hil.lifetime import die_with_parent
from hil.profile import load_profile
from hil.sim.options import SimOptions
from hil.sim.process import TwinPorts, TwinProcess
from tests.bringup.conftest import sim_timings
from tests.core.conftest import needs_mosquitto
from tests.waiting import until

ROOT = Path(__file__).resolve().parents[2]
HIL = "import sys; from hil.cli import main; sys.exit(main())"  # the `hil` console script
SER2NET = shutil.which("ser2net") or "/usr/sbin/ser2net"
EXPORTER = "bench-host"
GROUP = "bench"
PLACE = "esp32s3-sim7600-bench-3"
START_S = 20.0
_counter = itertools.count()

needs_labgrid = pytest.mark.skipif(
    importlib.util.find_spec("labgrid") is None,
    reason='labgrid is not installed: pip install "hil[labgrid]"',
)
needs_ser2net = pytest.mark.skipif(not os.path.exists(SER2NET), reason="ser2net not installed")
needs_lab = [needs_labgrid, needs_ser2net, needs_mosquitto]


class Spawned:
    """A child process whose output goes to a file; stopped (TERM, then KILL) by stop()."""

    def __init__(self, argv: list[str], log: Path, cwd: Path, env: dict[str, str]) -> None:
        self.log = log
        self._file: IO[bytes] = log.open("wb")
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._file.close()


def _python_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "LG_COORDINATOR")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _loopback_ser2net(bin_dir: Path) -> Path:
    """A `ser2net` on PATH that runs Debian's with every TCP accepter on 127.0.0.1."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    wrapper = bin_dir / "ser2net"
    wrapper.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        "args = [a.replace(',tcp,', ',tcp,127.0.0.1,') for a in sys.argv[1:]]\n"
        f"os.execv({SER2NET!r}, [{SER2NET!r}, *args])\n"
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return bin_dir


@dataclass
class Lab:
    """The running lab and a rig file whose [labgrid] table names its place."""

    coordinator: str
    place: str
    rig: Path
    workdir: Path
    ports: TwinPorts
    coordinator_log: Path

    def client(self) -> LabClient:
        return LabClient(self.coordinator)

    def me(self) -> str:
        """This host and user as the coordinator names a place's holder."""
        with self.client() as client:
            return client.name

    def holder(self) -> str | None:
        """Who has the place now (labgrid's host/user), or None."""
        with self.client() as client:
            return client.place(self.place).acquired

    def reservations(self) -> list[str]:
        with self.client() as client:
            return [f"{r.owner} {r.state.name}" for r in client.reservations()]

    def labgrid_client(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "labgrid.remote.client", "-x", self.coordinator, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=_python_env(),
        )

    def hil(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", HIL, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=self.env(),
        )

    def env(self) -> dict[str, str]:
        return _python_env(HIL_LOCK_DIR=str(self.workdir / "locks"))

    def start_run(self, *selection: str) -> Spawned:
        """`hil run --rig` the place's rig with a pytest selection, in its own process."""
        n = next(_counter)
        argv = [sys.executable, "-c", HIL, "run", "--rig", str(self.rig), "-p", "no:cacheprovider"]
        # labgrid's own pytest plugin (autoloaded from its entry point) is no part of a hil run
        # and costs seconds to import: left out, as a lab's `hil run` may leave it out too.
        argv += ["-p", "no:labgrid", "--hil-artifacts", str(self.workdir / f"art-{n}")]
        argv += selection
        return Spawned(argv, self.workdir / f"run-{n}.log", ROOT, self.env())

    def place_events(self) -> list[str]:
        """The coordinator's own record of the place: acquired by whom, released."""
        events = []
        for line in self.coordinator_log.read_text(errors="replace").splitlines():
            if line.startswith(f"{self.place}: place "):
                events.append(line.removeprefix(f"{self.place}: place "))
        return events


ECHO = ("-k", "test_echo_answers_plaintext and seed_test_message")


def rig_text(coordinator: str, broker: str, place: str, console: str = "console") -> str:
    timings = sim_timings()
    firmware = timings["profile"]["firmware"]
    limits = "\n".join(f"{k} = {v!r}" for k, v in timings["limits"].items())
    host, port = broker.rsplit(":", 1)
    return f"""
[rig]
name = "lab-bench-3"
[labgrid]
coordinator = "{coordinator}"
place = "{place}"
[console]
driver = "serial"
port = "{{labgrid:{console}}}"
reappear_s = 10.0
survives_reset = true
[power]
driver = "lcus"
port = "{{labgrid:relay}}"
channel = 1
normally_closed = true
[board_power]
driver = "lcus"
port = "{{labgrid:relay}}"
channel = 2
normally_closed = true
off_s = 0.2
[broker]
driver = "external"
host = "{host}"
port = {port}
tls = false
[profile.firmware]
retry_delay_s = {firmware["retry_delay_s"]!r}
heartbeat_s = {firmware["heartbeat_s"]!r}
[profile.ota]
chunk_timeout_s = {timings["profile"]["ota"]["chunk_timeout_s"]!r}
[limits]
{limits}
"""


def _started(process: Spawned, text: str, what: str) -> None:
    def ready() -> bool:
        if process.process.poll() is not None:
            raise AssertionError(f"{what} exited:\n{process.output()[-3000:]}")
        return text in process.output()

    until(ready, START_S, f"{what} saying {text!r}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("lab")
    started: list[Spawned] = []
    broker = MosquittoBroker(MosquittoOptions(), root / "broker")
    twin = TwinProcess()
    try:
        (root / "coordinator").mkdir()
        coordinator = Spawned(
            [sys.executable, "-m", "labgrid.remote.coordinator", "-l", "127.0.0.1:0"],
            root / "coordinator.log",
            root / "coordinator",
            _python_env(),
        )
        started.append(coordinator)
        endpoint = broker.start()  # the bench comes up while the coordinator starts
        sim = sim_timings()["sim"]
        options = SimOptions(
            firmware_version=sim["firmware_version"],
            time_scale=sim["time_scale"],
            console="uart-bridge",
        )
        profile = load_profile(overrides=sim_timings()["profile"])
        ports = twin.start(root / "bench", f"{endpoint.host}:{endpoint.port}", profile, options)
        _started(coordinator, "listening on 127.0.0.1:", "labgrid-coordinator")
        address = coordinator.output().split("listening on ", 1)[1].split()[0]

        exports = root / "exports.yaml"
        exports.write_text(
            json.dumps(  # YAML is a superset of JSON
                {
                    GROUP: {
                        "console": {
                            "cls": "RawSerialPort",
                            "port": os.path.realpath(ports.console),
                            "speed": 115200,
                        },
                        "relay": {
                            "cls": "RawSerialPort",
                            "port": os.path.realpath(ports.relay),
                            "speed": 9600,
                        },
                    }
                }
            )
        )
        path = f"{_loopback_ser2net(root / 'bin')}:{os.environ['PATH']}"
        argv = [sys.executable, "-m", "labgrid.remote.exporter", "-c", address]
        argv += ["--name", EXPORTER, "--hostname", "127.0.0.1", str(exports)]
        exporter = Spawned(
            argv,
            root / "exporter.log",
            root,
            _python_env(PATH=path),
        )
        started.append(exporter)
        _started(exporter, "connected to coordinator", "labgrid-exporter")

        lab = Lab(address, PLACE, root / "lab.toml", root, ports, coordinator.log)
        matches = [f"{EXPORTER}/{GROUP}/NetworkSerialPort/{name}" for name in ("console", "relay")]
        for args in (
            ("-p", PLACE, "create"),
            ("-p", PLACE, "add-match", *matches),
            ("-p", PLACE, "set-tags", "board=esp32s3", "modem=sim7600"),
        ):
            done = lab.labgrid_client(*args)
            assert done.returncode == 0, done.stdout + done.stderr
        lab.rig.write_text(rig_text(address, f"{endpoint.host}:{endpoint.port}", PLACE))
        yield lab
    finally:
        for process in reversed(started):
            process.stop()
        twin.stop()
        broker.stop()


@pytest.fixture
def free_place(lab: Lab) -> Iterator[Lab]:
    """The lab, its place free before the test and (the test's own check) after it."""
    assert lab.holder() is None, "an earlier test left the place acquired"
    yield lab
    if lab.holder() is not None:  # free it for the next test, whatever this one did
        lab.labgrid_client("-p", lab.place, "release", "--kick")


@contextlib.contextmanager
def stopped(*processes: Spawned) -> Iterator[None]:
    """Stop these processes when the block ends, however it ends."""
    try:
        yield
    finally:
        for process in processes:
            process.stop()


__all__ = ["ECHO", "HIL", "ROOT", "Lab", "Spawned", "needs_lab", "rig_text", "stopped", "until"]
