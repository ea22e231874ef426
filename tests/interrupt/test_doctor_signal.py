"""`hil doctor --power-consent` stopped by SIGTERM or SIGHUP in the middle of its power cut:
the modem's power comes back on, the broker and twin stop, and its temporary folder goes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.core.conftest import needs_mosquitto
from tests.waiting import until

pytestmark = [needs_mosquitto, pytest.mark.repo_rig]

ROOT = Path(__file__).resolve().parents[2]
SIM_RIG = ROOT / "rigs" / "sim.toml"
CUT_S = 60.0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_mid_power_cut_gives_the_rig_back(tmp_path: Path, sig: signal.Signals) -> None:
    (tmp_path / "tmp").mkdir()
    env = os.environ | {"TMPDIR": str(tmp_path / "tmp"), "HIL_LOCK_DIR": str(tmp_path / "locks")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from hil.cli import main; sys.exit(main())",
            "doctor",
            "--rig",
            str(SIM_RIG),
            "--power-consent",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        log = until(
            lambda: next((tmp_path / "tmp").glob("hil-doctor-*/sim/hil-sim-*.log"), None),
            CUT_S,
            "the doctor's twin starting",
        )
        with open(log, errors="replace") as twin_log:  # still readable once the folder goes
            seen: list[str] = []

            def cut() -> bool:
                seen.extend(twin_log.readlines())
                return any("modem relay energized" in line for line in seen)

            until(cut, CUT_S, "the doctor cutting the modem's power")
            children = psutil.Process(process.pid).children(recursive=True)
            process.send_signal(sig)
            _, err = process.communicate(timeout=30)
            seen.extend(twin_log.readlines())
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    assert process.returncode == 128 + sig, err
    assert f"interrupted by {sig.name}; the rig was given back" in err
    relay = [line for line in seen if "modem relay" in line]
    assert "modem on" in relay[-1], relay
    until(
        lambda: all(not c.is_running() or c.status() == psutil.STATUS_ZOMBIE for c in children),
        10,
        "the broker and twin stopping",
    )
    assert not list((tmp_path / "tmp").glob("hil-doctor-*")), "temporary folder left behind"
