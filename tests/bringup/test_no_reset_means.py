"""A rig with no [board_power] or [reset]: the harness cannot restart the device, so it trusts
a retained STATUS:ONLINE if the broker holds one, and otherwise says once which table to add;
tests that need the version then error (the rig is at fault), they do not fail."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.broker import BrokerEndpoint
from hil.broker.mosquitto import MosquittoBroker, MosquittoOptions
from tests.bringup.conftest import errors_section
from tests.core.conftest import PtyPort, needs_mosquitto

pytestmark = needs_mosquitto
pytest_plugins = ["pytester"]

RIG = """
[rig]
name = "no-means"
[console]
driver = "serial"
port = "{port}"
[broker]
driver = "external"
host = "{host}"
port = {broker_port}
tls = false
"""

SUITE = """
import pytest
pytestmark = [pytest.mark.hil, pytest.mark.asyncio(loop_scope="session")]

async def test_version(dut):
    print("VERSION", await dut.current_version())

async def test_version_again(dut):
    await dut.current_version()
"""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerEndpoint]:
    spawned = MosquittoBroker(MosquittoOptions(), tmp_path / "broker")
    yield spawned.start()
    spawned.stop()


def run(pytester: pytest.Pytester, tmp_path: Path, broker: BrokerEndpoint):
    console = PtyPort(tmp_path / "console")
    rig = pytester.path / "rig.toml"
    rig.write_text(RIG.format(port=console.link, host=broker.host, broker_port=broker.port))
    pytester.makepyfile(test_inner=SUITE)
    try:
        return pytester.runpytest_subprocess(
            "--rig",
            str(rig),
            "--hil-artifacts",
            "art",
            "-s",
            "-p",
            "no:cacheprovider",
            timeout=120,
        )
    finally:
        console.close()


def test_a_retained_status_online_gives_the_version(pytester, tmp_path, broker) -> None:
    subprocess.run(
        [
            "mosquitto_pub",
            "-h",
            broker.host,
            "-p",
            str(broker.port),
            "-t",
            "esp32_status",
            "-r",
            "-q",
            "1",
            "-m",
            "STATUS:ONLINE:3.1.4",
        ],
        check=True,
        timeout=10,
    )
    result = run(pytester, tmp_path, broker)
    result.assert_outcomes(passed=2)
    assert "VERSION 3.1.4" in result.stdout.str()
    assert "device came up as 3.1.4 by retained STATUS:ONLINE" in result.stdout.str()


def test_without_one_the_version_tests_error_naming_the_table_to_add(
    pytester, tmp_path, broker
) -> None:
    result = run(pytester, tmp_path, broker)
    out = result.stdout.str()
    result.assert_outcomes(errors=2)
    assert errors_section(out).count("add [board_power] (a relay on the device's supply)") == 1
    assert "VersionUnknown: the same rig error as at test_inner.py::test_version" in out


def test_a_run_that_never_needs_the_version_is_told_once_at_the_end(
    pytester, tmp_path, broker
) -> None:
    pytester.makepyfile(
        test_other="""
import pytest
pytestmark = [pytest.mark.hil]

def test_console(console):
    assert console is not None
"""
    )
    console = PtyPort(tmp_path / "console")
    rig = pytester.path / "rig.toml"
    rig.write_text(RIG.format(port=console.link, host=broker.host, broker_port=broker.port))
    try:
        result = pytester.runpytest_subprocess(
            "--rig", str(rig), "--hil-artifacts", "art", "test_other.py", timeout=120
        )
    finally:
        console.close()
    result.assert_outcomes(passed=1)
    assert result.stdout.str().count("add [board_power]") == 1
