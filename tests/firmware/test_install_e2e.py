"""`hil run --firmware BUILD` end to end, with the real esptool against the twin's ROM loader.

The virtual rig's device, kept running between runs as its own process (its flash outlives
each run, as a board's does), gets the build written (esptool's own "Wrote ... at 0x00010000")
and comes up running it; a second run finds the image already in flash and does not write it;
`--reflash` writes it again. With `method = "ota"` the app goes by the MQTT sender instead.
The device's version is heard on the broker by mosquitto_sub, not by the harness; the run's
record (run.json) carries what was installed, its SHA-256 the validation hash `esptool
image-info` reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.broker import BrokerEndpoint
from hil.profile import load_profile
from hil.sim.options import SimOptions
from hil.sim.process import TwinProcess
from tests.bringup.conftest import lab_broker, sim_timings
from tests.core.conftest import needs_mosquitto

from .conftest import image_info, make_build

pytestmark = [needs_mosquitto, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
HIL = "import sys; from hil.cli import main; sys.exit(main())"  # the `hil` console script
QUICK_TEST = "test_status_led_toggles_on_every_message"
STATUS = load_profile().mqtt.status_topic
WROTE_APP = "esptool: Wrote 6000 bytes at 0x00010000"
__all__ = ["lab_broker"]  # the bench's broker fixture, shared with tests/bringup


def hil_run(rig: Path, work: Path, *args: str) -> tuple[int, str, dict]:
    """`hil run` of one quick suite test in its own process: exit code, output, run.json."""
    art = work / f"art-{len(list(work.glob('art-*')))}"
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env["HIL_LOCK_DIR"] = str(work / "locks")
    options = ["-k", QUICK_TEST, "--hil-artifacts", str(art), "-p", "no:cacheprovider"]
    logged = ["-o", "log_cli=true", "-o", "log_cli_level=INFO"]  # esptool's lines, live
    result = subprocess.run(
        [sys.executable, "-c", HIL, "run", "--rig", str(rig), *args, *options, *logged],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    run = json.loads((art / "run.json").read_text()) if (art / "run.json").exists() else {}
    return result.returncode, output, run


class StatusWatch:
    """mosquitto_sub on the device's status topic for the test's duration."""

    def __init__(self, endpoint: BrokerEndpoint) -> None:
        self.process = subprocess.Popen(
            ["mosquitto_sub", "-h", endpoint.host, "-p", str(endpoint.port), "-t", STATUS],
            stdout=subprocess.PIPE,
            text=True,
        )

    def lines(self) -> list[str]:
        self.process.terminate()
        out, _ = self.process.communicate(timeout=10)
        return out.split()


@pytest.fixture
def build(tmp_path: Path) -> Path:
    return make_build(tmp_path / "build", "1.2.0")


def sim_rig(drop: tuple[str, ...] = (), replace: dict[str, str] | None = None) -> str:
    """rigs/sim.toml without the tables in `drop`, with the texts in `replace` replaced."""
    out, skipping = [], False
    for line in (ROOT / "rigs" / "sim.toml").read_text().splitlines():
        if line.startswith("["):
            skipping = line.split("]")[0].strip("[") in drop
        if not skipping:
            out.append(line)
    text = "\n".join(out) + "\n"
    for old, new in (replace or {}).items():
        text = text.replace(old, new)
    return text


@pytest.fixture
def bench(lab_broker: BrokerEndpoint, tmp_path: Path) -> Iterator[Path]:
    """The virtual rig's device left running between runs, as its own process, so its flash
    outlives each run: rigs/sim.toml with the twin's ports for `{sim}` and the lab's broker."""
    sim = sim_timings()["sim"]
    twin = TwinProcess()
    ports = twin.start(
        tmp_path / "twin",
        f"{lab_broker.host}:{lab_broker.port}",
        load_profile(overrides=sim_timings()["profile"]),
        SimOptions(firmware_version=sim["firmware_version"], time_scale=sim["time_scale"]),
    )
    assert ports.console.parent == ports.relay.parent
    rig = tmp_path / "bench.toml"
    broker = (
        f'[broker]\ndriver = "external"\nhost = "{lab_broker.host}"\n'
        f"port = {lab_broker.port}\ntls = false\n"
    )
    ports_dir = str(ports.console.parent)
    rig.write_text(sim_rig(drop=("sim", "broker"), replace={"{sim}": ports_dir}) + broker)
    yield rig
    twin.stop()


def test_a_device_that_has_the_build_is_not_written_again_unless_reflash(
    bench, lab_broker, tmp_path, build
) -> None:
    watch = StatusWatch(lab_broker)

    first = hil_run(bench, tmp_path, "--firmware", f"{build}/")
    second = hil_run(bench, tmp_path, "--firmware", f"{build}/")
    third = hil_run(bench, tmp_path, "--firmware", f"{build}/", "--reflash")

    heard = watch.lines()
    for code, output, _ in (first, second, third):
        assert code == 0, output[-4000:]
    assert WROTE_APP in first[1], first[1][-4000:]
    assert "esptool: Hash of data verified." in first[1]
    assert "firmware 1.2.0 (sha256 " in first[1] and "written from build folder" in first[1]
    firmware = first[2]["firmware"]
    assert firmware["version"] == "1.2.0"
    assert firmware["sha256"] == image_info(build / "demo.bin")["sha256"]
    assert (firmware["method"], firmware["written"]) == ("serial", True)
    assert first[2]["device"]["online_version"] == "1.2.0"

    assert WROTE_APP not in second[1], second[1][-4000:]
    assert "already on the device: not written" in second[1]
    assert second[2]["firmware"]["written"] is False

    assert WROTE_APP in third[1] and third[2]["firmware"]["written"] is True
    # Each run restarted the device into 1.2.0; before the first, it ran 1.0.0.
    assert heard.count("STATUS:ONLINE:1.2.0") >= 3, heard
    assert heard.index("STATUS:ONLINE:1.0.0") < heard.index("STATUS:ONLINE:1.2.0"), heard


def test_an_ota_install_on_the_virtual_rig_pushes_the_app_and_runs_it(tmp_path, build) -> None:
    rig = tmp_path / "sim.toml"
    rig.write_text(sim_rig(replace={'method = "serial"': 'method = "ota"'}))

    code, output, run = hil_run(rig, tmp_path, "--firmware", str(build / "demo.bin"))

    assert code == 0, output[-4000:]
    assert "esptool:" not in output
    assert "OTA: 6000/6000 bytes acknowledged" in output, output[-4000:]
    assert "written from app image" in output and "by the OTA sender" in output
    assert (run["firmware"]["method"], run["firmware"]["written"]) == ("ota", True)
    assert run["device"]["online_version"] == "1.2.0"
