"""`hil doctor` against the virtual rig and against rigs broken in one part each."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psutil
import pytest

from hil.broker import free_port
from hil.cli.doctor import main
from tests.core.conftest import needs_mosquitto

pytest_plugins = ["pytester"]
SIM_RIG = Path(__file__).parents[2] / "rigs" / "sim.toml"

pytestmark = pytest.mark.repo_rig  # starts twins from the repository's rigs/sim.toml


@pytest.fixture(autouse=True)
def private_locks(tmp_path: Path, monkeypatch) -> None:
    """Rig locks of these tests apart from any other run on the same machine."""
    monkeypatch.setenv("HIL_LOCK_DIR", str(tmp_path / "locks"))


def rows(output: str) -> dict[str, tuple[str, str]]:
    """The doctor's table as {check: (result, detail)}."""
    table = {}
    for line in output.splitlines()[1:]:
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[1] in ("ok", "FAIL", "skipped"):
            name = parts[0]
            table[name] = (parts[1], parts[2] if len(parts) > 2 else "")
    return table


def doctor(capsys, *argv: str) -> tuple[int, dict[str, tuple[str, str]]]:
    code = main(list(argv))
    return code, rows(capsys.readouterr().out)


@needs_mosquitto
def test_virtual_rig_passes_every_check_and_is_given_back(capsys) -> None:
    code, table = doctor(capsys, "--rig", str(SIM_RIG), "--power-consent")
    assert code == 0, table
    assert {name: result for name, (result, _) in table.items()} == {
        "broker": "ok",
        "bring-up": "ok",
        "console": "ok",
        "relay": "ok",
        "device": "ok",
    }
    # as whatever version the rig's flash holds from the runs before
    assert table["bring-up"][1].startswith("board power cycle: STATUS:ONLINE:")
    assert "Network lost" in table["relay"][1] and "echo answered" in table["device"][1]
    assert psutil.Process(os.getpid()).children(recursive=True) == []


@needs_mosquitto
def test_without_consent_the_relay_is_left_alone(capsys) -> None:
    code, table = doctor(capsys, "--rig", str(SIM_RIG))
    assert code == 0
    assert table["relay"] == ("skipped", "pass --power-consent to cut the modem's power once")


@needs_mosquitto
def test_missing_console_port_is_a_failed_row_naming_it(capsys, tmp_path: Path) -> None:
    port = tmp_path / "ttyACM-gone"
    rig = tmp_path / "rig.toml"
    rig.write_text(
        f'[console]\ndriver = "serial"\nport = "{port}"\nreappear_s = 0.3\n'
        '[broker]\ndriver = "mosquitto"\n'
    )
    code, table = doctor(capsys, "--rig", str(rig))
    assert code == 1
    result, detail = table["console"]
    assert result == "FAIL" and str(port) in detail and "[console]" in detail
    assert table["device"][0] == "skipped"
    assert psutil.Process(os.getpid()).children(recursive=True) == []


def test_unreachable_broker_is_a_failed_row(capsys, tmp_path: Path) -> None:
    port = free_port()
    rig = tmp_path / "rig.toml"
    rig.write_text(
        '[console]\ndriver = "serial"\nport = "/dev/null"\n'
        f'[broker]\ndriver = "external"\nhost = "127.0.0.1"\nport = {port}\n'
        "tls = false\nconnect_timeout_s = 1.0\n"
    )
    code, table = doctor(capsys, "--rig", str(rig))
    assert code == 1
    assert table["broker"][0] == "FAIL" and f"127.0.0.1:{port} is unreachable" in table["broker"][1]
    assert {table[n][0] for n in ("console", "relay", "device")} == {"skipped"}


def test_invalid_rig_file_is_the_first_failed_row(capsys, tmp_path: Path) -> None:
    rig = tmp_path / "rig.toml"
    rig.write_text('[console]\ndriver = "serial"\nport = 3\n')
    code, out = main(["--rig", str(rig)]), capsys.readouterr().out
    assert code == 1
    assert "rig file  FAIL" in out and "[console.port] expected a string, got 3" in out


SUITE = """
import pytest
pytestmark = [pytest.mark.hil, pytest.mark.asyncio(loop_scope="session")]

def test_console_is_there(console):
    assert console is not None

async def test_mqtt_is_there(mqtt):
    assert mqtt is not None
"""


@needs_mosquitto
def test_hil_doctor_option_makes_a_broken_rig_an_error_of_every_test(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    rig = pytester.path / "rig.toml"
    rig.write_text(
        f'[console]\ndriver = "serial"\nport = "{tmp_path / "gone"}"\n'
        'reappear_s = 0.3\n[broker]\ndriver = "mosquitto"\n'
    )
    pytester.makepyfile(test_inner=SUITE)
    result = pytester.runpytest("--rig", str(rig), "--hil-artifacts", "art", "--hil-doctor")
    result.assert_outcomes(errors=2, failed=0, passed=0)
    out = result.stdout.str()
    assert "RigError: hil doctor: rig 'rig' is not fit for a run: console:" in out
    # the diagnosis once, then one line per further test pointing back to it
    # (pytest's short summary after it repeats each message, in full where CI is set)
    assert out.split("short test summary info")[0].count("is not fit for a run: console:") == 1
    assert "RigDown: the same rig error as at test_inner.py::test_console_is_there" in out


@needs_mosquitto
def test_hil_doctor_option_lets_a_good_rig_run(pytester: pytest.Pytester) -> None:
    rig = pytester.path / "sim.toml"
    shutil.copy(SIM_RIG, rig)
    pytester.makepyfile(test_inner=SUITE)
    result = pytester.runpytest("--rig", str(rig), "--hil-artifacts", "art", "--hil-doctor")
    result.assert_outcomes(passed=2)
    assert (pytester.path / "art" / "_doctor" / "broker").is_dir()
