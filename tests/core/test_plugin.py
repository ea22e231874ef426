"""The pytest plugin from outside, with pytester: a rig of a pty console and a real broker."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hil.plugin import CAPABILITY_HINTS
from hil.rig import load_rig

from .conftest import PtyPort, needs_mosquitto

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[2]

RIG = """
[rig]
name = "pty-rig"
[console]
driver = "serial"
port = "{port}"
reappear_s = 2.0
[broker]
driver = "{broker}"
[limits]
boot_s = 5.0
"""

HEAD = """
import os
import pytest
pytestmark = [pytest.mark.hil, pytest.mark.asyncio(loop_scope="session")]

def console_says(text):
    os.write(int(os.environ["HIL_TEST_PTY"]), text.encode() + b"\\r\\n")
"""


@pytest.fixture(params=[pytest.param("mosquitto", marks=needs_mosquitto), "embedded"])
def rig_file(request, pytester, tmp_path, monkeypatch):
    port = PtyPort(tmp_path / "console")
    monkeypatch.setenv("HIL_TEST_PTY", str(port.master))
    path = pytester.path / "rig.toml"
    path.write_text(RIG.format(port=port.link, broker=request.param))
    yield path
    port.close()


def run(pytester, rig_file, source: str, *args: str):
    pytester.makepyfile(test_inner=HEAD + source)
    return pytester.runpytest("--rig", str(rig_file), "--hil-artifacts", "art", *args)


def test_bad_rig_stops_the_run_before_any_test(pytester) -> None:
    (pytester.path / "bad.toml").write_text('[console]\ndriver = "serial"\nport = 3\n')
    pytester.makepyfile(test_x="def test_never(): raise AssertionError('ran')")
    result = pytester.runpytest("--rig", "bad.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "bad.toml: [console.port] expected a string, got 3" in result.stderr.str()
    assert "ran" not in result.stdout.str()


def test_header_names_the_rig(pytester, rig_file) -> None:
    result = run(pytester, rig_file, "def test_nothing(): pass")
    result.stdout.fnmatch_lines(["hil rig: *rig.toml (hardware rig), profile reference*"])


def test_needs_power_skips_with_the_reason(pytester, rig_file) -> None:
    result = run(pytester, rig_file, "@pytest.mark.needs('power')\ndef test_cut(): pass", "-rs")
    result.assert_outcomes(skipped=1)
    assert "needs power: rig 'pty-rig' lacks it (it has no [power] table)" in result.stdout.str()


def test_the_needs_marker_names_every_capability_a_rig_can_lack(pytester) -> None:
    # rigs/sim-tls.toml has them all: relays, mosquitto, the proxy, TLS, a profile with HTTP OTA
    rig = load_rig(ROOT / "rigs" / "sim-tls.toml")
    optional = rig.capabilities - {"console", "mqtt"}
    assert optional == set(CAPABILITY_HINTS), "each capability a rig may lack has a skip hint"
    result = pytester.runpytest("--markers")
    (line,) = [x for x in result.outlines if x.startswith("@pytest.mark.needs(capability)")]
    assert all(capability in line for capability in rig.capabilities), line


def test_artifacts_and_junit_properties(pytester, rig_file) -> None:
    source = """
async def test_online(dut, mqtt, measurements):
    await mqtt.publish("esp32_status", "STATUS:ONLINE:2.0.1")
    console_says("Firmware 2.0.1 starting")
    assert await dut.wait_online() == "2.0.1"
    await dut.console.expect(dut.profile.console.firmware_start, timeout=5)
    measurements.record("boot", 1.5, "s", high=dut.limits.boot_s)
"""
    result = run(pytester, rig_file, source, "--junitxml", "out.xml")
    result.assert_outcomes(passed=1)
    folder = pytester.path / "art" / "0001-test_inner.py__test_online"
    assert "Firmware 2.0.1 starting" in (folder / "console.log").read_text()
    topics = [
        json.loads(line)["payload"] for line in (folder / "mqtt.jsonl").read_text().splitlines()
    ]
    assert "STATUS:ONLINE:2.0.1" in topics
    [measurement] = json.loads((folder / "measurements.json").read_text())
    assert measurement["name"] == "boot" and measurement["passed"]
    props = ET.parse(pytester.path / "out.xml").findall(".//property")
    assert ("boot[s]", "1.5") in [(p.get("name"), p.get("value")) for p in props]


def test_a_panic_during_a_test_fails_it_with_the_lines(pytester, rig_file) -> None:
    source = """
async def test_quiet(dut):
    console_says("Guru Meditation Error: Core  0 panic'ed (LoadProhibited).")
    console_says("Backtrace: 0x40081234:0x3ffb1234")
    await dut.console.expect("Backtrace", timeout=5, fail_on_panic=False)
"""
    result = run(pytester, rig_file, source)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*DeviceIncident*", "*panic on the console*", "*Guru Meditation*"])


def test_a_broken_rig_is_an_error_not_a_failure(pytester, tmp_path) -> None:
    path = pytester.path / "rig.toml"
    path.write_text(RIG.format(port=tmp_path / "no-such-port", broker="embedded"))
    result = run(pytester, path, "async def test_x(dut): pass")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no-such-port not found*"])
