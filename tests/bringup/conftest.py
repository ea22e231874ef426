"""A hardware-style bench: a device that is already running, reached only through its ports.

The twin runs as its own process, like a board left powered on the bench: it booted and came
online before the harness started, its console is a pty behind a symlink re-made on every
reboot, its relay is an LCUS board on a pty (channel 1 the modem, channel 2 the board), and its
broker is a mosquitto the lab runs. The rig file names those ports and that broker, with no
[sim] table, so the harness treats it exactly as hardware.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hil.broker import BrokerEndpoint
from hil.broker.mosquitto import MosquittoBroker, MosquittoOptions
from hil.profile import load_profile
from hil.sim.options import SimOptions
from hil.sim.process import TwinPorts, TwinProcess
from tests.core.conftest import needs_mosquitto

ROOT = Path(__file__).resolve().parents[2]
SIM_RIG = ROOT / "rigs" / "sim.toml"
_counter = itertools.count()


def sim_timings() -> dict:
    """The virtual rig's fast firmware timers and limits, so the bench runs in seconds."""
    data = tomllib.loads(SIM_RIG.read_text())
    return {"profile": data["profile"], "limits": data["limits"], "sim": data["sim"]}


@dataclass
class Bench:
    """A running device and the rig file that describes it."""

    ports: TwinPorts
    endpoint: BrokerEndpoint
    rig: Path
    workdir: Path

    def run_suites(self, *targets: str, timeout: float = 600) -> tuple[dict[str, str], str]:
        """`pytest --rig` this bench in a fresh process: each test's outcome, and the output."""
        junit = self.workdir / f"junit-{next(_counter)}.xml"
        targets = targets or (str(ROOT / "test_suites"),)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "--rig",
                str(self.rig),
                "-p",
                "no:cacheprovider",
                "--hil-artifacts",
                str(self.workdir / f"art-{next(_counter)}"),
                "--junitxml",
                str(junit),
                "-q",
                *targets,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "HIL_LOCK_DIR": str(self.workdir / "locks")},
        )
        outcomes = {}
        for case in ET.parse(junit).iter("testcase"):
            kinds = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
            outcomes[f"{case.get('classname')}::{case.get('name')}"] = (
                kinds[0] if kinds else "passed"
            )
        return outcomes, result.stdout + result.stderr


def rig_text(ports: TwinPorts, endpoint: BrokerEndpoint, console: str, board_channel: int) -> str:
    timings = sim_timings()
    firmware = timings["profile"]["firmware"]
    limits = "\n".join(f"{k} = {v!r}" for k, v in timings["limits"].items())
    survives = "true" if console == "uart-bridge" else "false"
    return f"""
[rig]
name = "bench-{console}"
[console]
driver = "serial"
port = "{ports.console}"
reappear_s = 10.0
survives_reset = {survives}
[power]
driver = "lcus"
port = "{ports.relay}"
channel = 1
normally_closed = true
[board_power]
driver = "lcus"
port = "{ports.relay}"
channel = {board_channel}
normally_closed = true
off_s = 0.2
[broker]
driver = "external"
host = "{endpoint.host}"
port = {endpoint.port}
tls = false
[profile.firmware]
retry_delay_s = {firmware["retry_delay_s"]!r}
heartbeat_s = {firmware["heartbeat_s"]!r}
[profile.ota]
chunk_timeout_s = {timings["profile"]["ota"]["chunk_timeout_s"]!r}
[limits]
{limits}
"""


@pytest.fixture(scope="module")
def lab_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerEndpoint]:
    """The lab's own broker: a mosquitto the harness did not start."""
    broker = MosquittoBroker(MosquittoOptions(), tmp_path_factory.mktemp("lab-broker"))
    endpoint = broker.start()
    yield endpoint
    broker.stop()


@pytest.fixture
def bench(lab_broker: BrokerEndpoint, tmp_path: Path) -> Iterator[Callable[..., Bench]]:
    """`bench(console=..., board_channel=2)`: a device already online, and its rig file."""
    twins: list[TwinProcess] = []

    def start(console: str = "native-usb", board_channel: int = 2) -> Bench:
        sim = sim_timings()["sim"]
        options = SimOptions(
            firmware_version=sim["firmware_version"],
            time_scale=sim["time_scale"],
            console=console,
        )
        profile = load_profile(overrides=sim_timings()["profile"])
        twin = TwinProcess()
        twins.append(twin)
        ports = twin.start(
            tmp_path / "bench", f"{lab_broker.host}:{lab_broker.port}", profile, options
        )
        rig = tmp_path / "bench.toml"
        rig.write_text(rig_text(ports, lab_broker, console, board_channel))
        return Bench(ports, lab_broker, rig, tmp_path)

    yield start
    for twin in twins:
        twin.stop()


def errors_section(output: str) -> str:
    """The run's report up to pytest's short summary, which repeats each error's message in
    full on CI (where the CI variable is set) and cut to the terminal's width elsewhere."""
    return output.split("short test summary info")[0]


__all__ = ["Bench", "errors_section", "needs_mosquitto"]
