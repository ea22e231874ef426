"""Health between tests: a test that breaks the device is charged, and the next one starts
from a known state (the harness restarts the device) instead of failing in its wake."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .conftest import SIM_RIG, needs_mosquitto

pytestmark = [needs_mosquitto, pytest.mark.slow]
pytest_plugins = ["pytester"]

SUITE = """
import pytest
pytestmark = [pytest.mark.hil, pytest.mark.asyncio(loop_scope="session")]

async def test_1_switches_the_board_off(dut, board_power):
    await dut.current_version()
    board_power.off()  # and passes: the harness must charge it all the same

async def test_2_echo(dut):
    assert (await dut.echo("after the board went off")).first.text == "after the board went off"

async def test_3_makes_it_panic(dut):
    await dut.send_command("not base64 !!")  # the twin's crash_on_bad_base64 bug
    await dut.console.expect("Backtrace:", dut.limits.echo_s, fail_on_panic=False)

async def test_4_echo(dut):
    assert (await dut.echo("after the panic")).first.text == "after the panic"

async def test_5_hangs_it(dut):
    await dut.power_cut(dut.profile.firmware.retry_delay_s)  # no_recovery: it never comes back
    await dut.wait_online(dut.limits.recovery_s)

async def test_6_echo(dut):
    assert (await dut.echo("after the hang")).first.text == "after the hang"
"""


def faulty_rig(folder: Path, console: str) -> Path:
    text = SIM_RIG.read_text().replace(
        "[sim]\n", '[sim]\nfaults = ["crash_on_bad_base64", "no_recovery"]\n', 1
    )
    if console == "uart-bridge":
        text = text.replace('console = "native-usb"', 'console = "uart-bridge"')
        text = text.replace("reappear_s = 10.0", "reappear_s = 10.0\nsurvives_reset = true")
    rig = folder / "sim-faulty.toml"
    rig.write_text(text)
    return rig


@pytest.mark.parametrize("console", ["native-usb", "uart-bridge"])
def test_a_device_broken_by_a_test_is_charged_to_that_test_only(
    pytester: pytest.Pytester, console: str
) -> None:
    pytester.makepyfile(test_inner=SUITE)
    rig = faulty_rig(pytester.path, console)
    result = pytester.runpytest_subprocess(
        "--rig",
        str(rig),
        "--hil-artifacts",
        "art",
        "--junitxml",
        "junit.xml",
        "-p",
        "no:cacheprovider",
        timeout=300,
    )
    outcomes = {}
    for case in ET.parse(pytester.path / "junit.xml").iter("testcase"):
        failure = case.find("failure")
        outcomes[case.get("name")] = "passed" if failure is None else failure.get("message", "")
    out = result.stdout.str()
    assert (
        outcomes["test_2_echo"] == outcomes["test_4_echo"] == outcomes["test_6_echo"] == ("passed")
    ), out[-5000:]
    assert "left the board's power off" in outcomes["test_1_switches_the_board_off"], out
    assert "panic" in outcomes["test_3_makes_it_panic"]
    assert "MqttTimeout" in outcomes["test_5_hangs_it"]
    assert "the harness restarted it (board power cycle)" in out
    assert out.count("the harness restarted it (board power cycle)") >= 3, out[-5000:]
    assert "after this test the device stopped answering" in out  # the hang, noted on test 5
