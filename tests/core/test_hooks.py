"""hil's hooks reach a lab's conftest.py: bring-up's result, and a restart after a test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.core.conftest import needs_mosquitto

pytestmark = [needs_mosquitto, pytest.mark.repo_rig]
pytest_plugins = ["pytester"]
SIM_RIG = Path(__file__).resolve().parents[2] / "rigs" / "sim.toml"

CONFTEST = """
def pytest_hil_online(config, rig, online):
    print(f"LAB-ONLINE {rig.name} {online.version} {online.means}")

def pytest_hil_restarted(item, problem, recovery):
    print(f"LAB-RESTARTED {item.name}: {problem}")
"""

SUITE = """
import pytest
pytestmark = [pytest.mark.hil, pytest.mark.asyncio(loop_scope="session")]

async def test_leaves_the_modem_off(dut, power):
    await dut.current_version()
    power.off()
"""


def test_a_lab_conftest_hears_bring_up_and_restarts(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_inner=SUITE)
    result = pytester.runpytest_subprocess(
        "--rig",
        str(SIM_RIG),
        "--hil-artifacts",
        "art",
        "-s",
        "-p",
        "no:cacheprovider",
        timeout=180,
    )
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    # The version is whatever the rig's flash holds from the runs before.
    result.stdout.re_match_lines([r".*LAB-ONLINE virtual \S+ board power cycle$"])
    assert "LAB-RESTARTED test_leaves_the_modem_off: the test left the modem's power off" in out
