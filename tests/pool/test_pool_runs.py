"""Real runs on pools of virtual rigs, each with its own twin: `hil run -n 2 --each-rig` runs
each selected test on both rigs in about the time one rig takes; the default spreads the
tests over the rigs, and a rig whose device never comes up errors its own tests, naming it,
while the other rig's pass.

The suites' tests are chosen for being short and mostly waiting on the twin's timers, so the
times compared are the harness's, not the CPU's. Times are compared from the first test's
start (its rig's bring-up included) to the last test's end, as run.json records them: a
worker's interpreter start and collection cost the same whatever the number of rigs, and on
a busy 2-core runner they would swamp a selection this short.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

import pytest

from hil.lock import RigLock
from tests.pool.conftest import ROOT, virtual_rig

SUITES = ROOT / "test_suites"
HIL = "import sys; from hil.cli import main; sys.exit(main())"  # the `hil` console script
TWO_TESTS = "test_recovers_after_power_cut and (short or medium)"
RECOVERY = "test_suites/test_recovery.py::test_recovers_after_power_cut"
SPREAD_TESTS = "seed_test_message or led_toggles or (test_recovers_after_power_cut and short)"
SPREAD_IDS = {
    "test_suites/test_echo.py::test_echo_answers_plaintext_then_prefixed_ciphertext"
    "[seed_test_message]",
    "test_suites/test_echo.py::test_status_led_toggles_on_every_message",
    f"{RECOVERY}[short]",
}


def hil_run(*args: str | Path, cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """`hil run` in its own process, and its wall time."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", HIL, "run", *map(str, args), "-p", "no:cacheprovider"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    return done, time.monotonic() - started


def make_pool(folder: Path, **rigs: dict[str, str]) -> Path:
    folder.mkdir()
    for name, replace in rigs.items():
        (folder / f"{name}.toml").write_text(virtual_rig(name, **replace))
    return folder


def run_json(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())


def outcomes(run: dict) -> dict[str, str]:
    return {test["nodeid"]: test["outcome"] for test in run["tests"]}


def span_s(*runs: dict) -> float:
    """From the first test's start to the last one's end, over every run given."""
    tests = [test for run in runs for test in run["tests"]]
    started = min(datetime.fromisoformat(test["started"]) for test in tests)
    ended = max(datetime.fromisoformat(test["ended"]) for test in tests)
    return (ended - started).total_seconds()


def test_each_rig_runs_every_test_on_both_rigs_in_about_the_time_of_one(tmp_path) -> None:
    pool = make_pool(tmp_path / "pool", **{"virtual-a": {}, "virtual-b": {}})
    one, one_s = hil_run(
        "--rig", pool / "virtual-a.toml", "-k", TWO_TESTS, "--hil-artifacts", tmp_path / "one",
        SUITES, cwd=tmp_path,
    )  # fmt: skip
    both, both_s = hil_run(
        "-n", "2", "--rig", pool, "--each-rig", "-k", TWO_TESTS,
        "--hil-artifacts", tmp_path / "both", "--junitxml", tmp_path / "both.xml",
        SUITES, cwd=tmp_path,
    )  # fmt: skip

    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    assert both.returncode == 0, both.stdout[-3000:] + both.stderr[-3000:]
    assert "4 passed" in both.stdout
    for rig in ("virtual-a", "virtual-b"):
        run = run_json(tmp_path / "both" / rig)
        assert run["rig"]["name"] == rig and run["rig"]["file"] == str(pool / f"{rig}.toml")
        assert outcomes(run) == {
            f"{RECOVERY}[short-{rig}]": "passed",
            f"{RECOVERY}[medium-{rig}]": "passed",
        }
        for test in run["tests"]:
            assert (tmp_path / "both" / rig / test["folder"] / "result.json").is_file()
    assert not (tmp_path / "both" / "run.json").exists()
    assert (tmp_path / "both" / "report.html").is_file()
    assert [p.name for p in (tmp_path / "both").glob("*/report.html")] == []
    cases = ET.parse(tmp_path / "both.xml").getroot().iter("testcase")
    rigs = ("virtual-a", "virtual-b")
    expected = [
        f"test_recovers_after_power_cut[{cut}-{rig}]" for cut in ("short", "medium") for rig in rigs
    ]
    assert sorted(case.get("name") for case in cases) == sorted(expected)  # the rig named once
    alone = span_s(run_json(tmp_path / "one"))
    together = span_s(*(run_json(tmp_path / "both" / rig) for rig in rigs))
    print(
        f"one rig {alone:.1f} s of tests ({one_s:.1f} s wall), two rigs -n 2 --each-rig "
        f"{together:.1f} s ({both_s:.1f} s wall): {together / alone:.2f}x"
    )
    assert together < 1.6 * alone, f"two rigs took {together:.1f} s, one {alone:.1f} s"


def test_a_rig_that_never_comes_up_errors_its_own_tests_and_the_other_goes_on(tmp_path) -> None:
    broken = {
        'port = "{sim}/console"': 'port = "{sim}/no-such-console"',
        "reappear_s = 10.0": "reappear_s = 1.0",
    }
    pool = make_pool(tmp_path / "pool", **{"virtual-a": broken, "virtual-b": {}})
    done, _ = hil_run(
        "-n", "2", "--rig", pool, "-k", SPREAD_TESTS, "--hil-artifacts", tmp_path / "run",
        SUITES, cwd=tmp_path,
    )  # fmt: skip

    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout[-3000:]
    down, up = run_json(tmp_path / "run" / "virtual-a"), run_json(tmp_path / "run" / "virtual-b")
    assert set(outcomes(down).values()) == {"error"}, outcomes(down)
    assert set(outcomes(up).values()) == {"passed"}, outcomes(up)
    assert set(outcomes(down)) | set(outcomes(up)) == SPREAD_IDS
    assert not set(outcomes(down)) & set(outcomes(up))  # spread: each test on one rig
    first, *rest = sorted(down["tests"], key=lambda test: test["started"])
    assert first["message"].startswith("RigDown: the device on rig 'virtual-a' did not come")
    for test in rest:  # the rig's diagnosis is shown once, then pointed back to
        assert test["message"] == (
            f"RigDown: the same rig error as at {first['nodeid']}, shown above"
        ), test
    assert down["device"]["online_version"] is None
    assert up["device"]["online_version"] == "1.0.0"
    assert "hil: rig virtual-a: " in done.stdout and "hil: rig virtual-b: " in done.stdout
    with RigLock(pool / "virtual-a.toml"):  # given back
        pass
