"""The suites against a hardware-style rig: a device already running when the run starts.

It says STATUS:ONLINE only when it (re)connects, so the harness must restart it into a known
state (here by cycling the board's supply on LCUS channel 2) and prove the restart by MQTT;
its console keeps nothing for the host. Every suite test must pass in both console modes, and
the same run against a device whose supply is dead must error every test quickly, once.
"""

from __future__ import annotations

import time

import pytest
import serial

from hil.power.lcus import encode_frame

from .conftest import errors_section, needs_mosquitto, sim_timings

pytestmark = [needs_mosquitto, pytest.mark.slow]


@pytest.mark.parametrize("console", ["native-usb", "uart-bridge"])
def test_every_suite_test_passes_on_a_device_already_online(bench, console: str) -> None:
    rig = bench(console=console)
    outcomes, output = rig.run_suites()
    ran = {name: kind for name, kind in outcomes.items() if kind != "skipped"}
    assert len(ran) >= 30, f"only {len(ran)} suite tests ran:\n{output[-3000:]}"
    bad = {name: kind for name, kind in ran.items() if kind != "passed"}
    assert not bad, f"{bad}\n{output[-4000:]}"
    assert "device came up as 1.0.0 by board power cycle" in output


def test_a_dead_device_errors_every_test_at_once_with_one_diagnosis(bench) -> None:
    """The board's own supply is off and the rig's board relay (channel 4) switches nothing:
    bring-up gets no STATUS:ONLINE, and no test waits out its own limits."""
    rig = bench(board_channel=4)
    with serial.Serial(str(rig.ports.relay), 9600) as relay:
        relay.write(encode_frame(2, True))  # normally closed: energized is the board off
        relay.flush()
    boot_s = sim_timings()["limits"]["boot_s"]

    started = time.monotonic()
    outcomes, output = rig.run_suites()
    elapsed = time.monotonic() - started

    assert elapsed < boot_s + 10, f"took {elapsed:.0f} s with boot_s = {boot_s:g}"
    kinds = {kind for kind in outcomes.values() if kind != "skipped"}
    assert kinds == {"error"}, outcomes
    assert "did not come online: no STATUS:ONLINE within boot_s" in output
    assert errors_section(output).count("tried: board power cycle (LCUS relay") == 1, output
    assert "the same rig error as at" in output
