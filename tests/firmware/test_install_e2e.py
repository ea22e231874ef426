"""`hil run --firmware` end to end on the virtual rig, with the real esptool against the twin's
ROM loader, as the issue's done-when says: the first run writes the build and proves its
version online, the second finds it in the board's flash (kept beside the rig file, as a
bench keeps its board) and does not write it; `--reflash` writes it again.

The rig is a copy of rigs/sim.toml in the test's folder, so its flash starts factory-fresh
there, with its broker the lab's own mosquitto, on which mosquitto_sub hears the device's
version, not the harness. The run's record (run.json) carries what was installed, its SHA-256
the validation hash `esptool image-info` reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import serial

from hil.broker import BrokerEndpoint
from hil.power.lcus import encode_frame
from hil.profile import load_profile
from hil.protocol.image import build_image
from hil.sim.options import SimOptions
from hil.sim.process import TwinProcess
from tests.bringup.conftest import lab_broker, sim_timings
from tests.core.conftest import needs_mosquitto

from .conftest import image_info, make_build, ota_table

pytestmark = [needs_mosquitto, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
HIL = "import sys; from hil.cli import main; sys.exit(main())"  # the `hil` console script
QUICK_TEST = "test_status_led_toggles_on_every_message"
STATUS = load_profile().mqtt.status_topic
WROTE_APP = "esptool: Wrote 6000 bytes at 0x00010000"
WROTE_OTADATA = "esptool: Wrote 8192 bytes at 0x0000d000"
VERIFIED = "esptool: Hash of data verified."
NOT_WRITTEN = "already on the device: not written"
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


def lab_table(broker: BrokerEndpoint) -> str:
    """A [broker] table for the lab's own mosquitto."""
    return (
        f'[broker]\ndriver = "external"\nhost = "{broker.host}"\nport = {broker.port}\n'
        "tls = false\n"
    )


def rig_copy(folder: Path, broker: BrokerEndpoint, name: str = "sim.toml", **replace: str) -> Path:
    """rigs/sim.toml in `folder` on the lab's broker; its flash file lands in folder/.state."""
    folder.mkdir(parents=True, exist_ok=True)
    rig = folder / name
    rig.write_text(sim_rig(drop=("broker",), replace=replace) + lab_table(broker))
    return rig


def test_a_second_run_finds_the_build_in_the_boards_flash_and_does_not_write_it(
    lab_broker, tmp_path
) -> None:
    rig = rig_copy(tmp_path / "bench", lab_broker)
    build = make_build(tmp_path / "build", "1.2.0", table=ota_table(), otadata=0xD000)
    watch = StatusWatch(lab_broker)

    first = hil_run(rig, tmp_path, "--firmware", f"{build}/")
    second = hil_run(rig, tmp_path, "--firmware", f"{build}/")
    third = hil_run(rig, tmp_path, "--firmware", f"{build}/", "--reflash")

    heard = watch.lines()
    for code, output, _ in (first, second, third):
        assert code == 0, output[-4000:]
    assert WROTE_APP in first[1] and VERIFIED in first[1], first[1][-4000:]
    assert WROTE_OTADATA in first[1], "the build's own ota_data_initial.bin"
    assert "firmware 1.2.0 (sha256 " in first[1] and "written from build folder" in first[1]
    firmware = first[2]["firmware"]
    assert firmware["version"] == "1.2.0"
    assert firmware["sha256"] == image_info(build / "demo.bin")["sha256"]
    assert (firmware["method"], firmware["written"]) == ("serial", True)
    assert first[2]["device"]["online_version"] == "1.2.0"

    assert "esptool: Wrote" not in second[1], second[1][-4000:]
    assert NOT_WRITTEN in second[1]
    assert second[2]["firmware"]["written"] is False
    assert second[2]["device"]["online_version"] == "1.2.0"
    # Each run restarted the device into 1.2.0, and into nothing else once it was written.
    online = [line for line in heard if line.startswith("STATUS:ONLINE:")]
    assert online.count("STATUS:ONLINE:1.2.0") >= 2, heard
    assert set(online[online.index("STATUS:ONLINE:1.2.0") :]) == {"STATUS:ONLINE:1.2.0"}, heard
    assert (rig.parent / ".state" / "sim-flash.bin").stat().st_size == 4 * 1024 * 1024

    assert WROTE_APP in third[1] and third[2]["firmware"]["written"] is True, third[1][-4000:]


def test_an_app_bin_written_after_an_ota_update_erases_otadata_and_runs(
    lab_broker, tmp_path
) -> None:
    """An OTA update leaves otadata selecting ota_1, where an app .bin written at 0x10000
    would never start: the install writes erased otadata with it, as idf.py flash does."""
    bench = tmp_path / "bench"
    serial_rig = rig_copy(bench, lab_broker)
    ota_rig = rig_copy(bench, lab_broker, "sim-ota.toml", **{'method = "serial"': 'method = "ota"'})
    update = tmp_path / "update-1.5.0.bin"
    update.write_bytes(build_image("1.5.0", 6000, project="demo", seed=2))
    app = tmp_path / "app-1.2.0.bin"
    app.write_bytes(build_image("1.2.0", 6000, project="demo", seed=1))
    watch = StatusWatch(lab_broker)

    updated = hil_run(ota_rig, tmp_path, "--firmware", str(update))
    written = hil_run(serial_rig, tmp_path, "--firmware", str(app))

    heard = watch.lines()
    for code, output, _ in (updated, written):
        assert code == 0, output[-4000:]
    assert "esptool:" not in updated[1]
    assert "OTA: 6000/6000 bytes acknowledged" in updated[1], updated[1][-4000:]
    assert "written from app image" in updated[1] and "by the OTA sender" in updated[1]
    assert (updated[2]["firmware"]["method"], updated[2]["firmware"]["written"]) == ("ota", True)
    assert updated[2]["device"]["online_version"] == "1.5.0"

    assert "brings no otadata: erasing otadata at 0xD000 (0x2000 bytes)" in written[1]
    assert WROTE_OTADATA in written[1] and WROTE_APP in written[1], written[1][-4000:]
    assert VERIFIED in written[1]
    assert (written[2]["firmware"]["method"], written[2]["firmware"]["written"]) == ("serial", True)
    assert written[2]["device"]["online_version"] == "1.2.0"
    online = [line for line in heard if line.startswith("STATUS:ONLINE:")]
    assert online.index("STATUS:ONLINE:1.5.0") < online.index("STATUS:ONLINE:1.2.0"), heard
    assert online[-1] == "STATUS:ONLINE:1.2.0", heard


def test_a_strap_left_held_by_a_crashed_run_is_released_before_the_device_restarts(
    lab_broker, tmp_path
) -> None:
    """The board outlives the runs, and with it the relay a crashed install left energized
    (GPIO0 held low): the next run still restarts the device into its app, not its loader."""
    sim = sim_timings()["sim"]
    twin = TwinProcess()
    try:
        ports = twin.start(
            tmp_path / "twin",
            f"{lab_broker.host}:{lab_broker.port}",
            load_profile(overrides=sim_timings()["profile"]),
            SimOptions(firmware_version=sim["firmware_version"], time_scale=sim["time_scale"]),
        )
        with serial.Serial(str(ports.relay), 9600) as relay:
            relay.write(encode_frame(3, True))  # the strap channel, energized: GPIO0 low
            relay.flush()
        rig = tmp_path / "bench.toml"
        rig.write_text(
            sim_rig(drop=("sim", "broker"), replace={"{sim}": str(ports.console.parent)})
            + lab_table(lab_broker)
        )
        code, output, run = hil_run(rig, tmp_path)
    finally:
        twin.stop()
    assert code == 0, output[-4000:]
    assert "boot strap released: LCUS relay" in output, output[-4000:]
    assert run["device"]["online_version"] == "1.0.0"
    log = twin.stderr_path.read_text() if twin.stderr_path else ""
    assert "strap relay released (GPIO0 high)" in log
    assert "waiting for download" not in log, log[-3000:]
