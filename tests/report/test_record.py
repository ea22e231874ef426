"""What a run tested: run.json, result.json per test and the JUnit testsuite properties.

One real run on the virtual rig (a twin fault makes one test fail, the broker has a password)
is checked against the contract, with reference values from sha256sum, git, the pyproject
and pytest's own JUnit file. In-process runs on a rig that is never brought up cover each
phase's outcome, an interrupted run, a rig that never came up and the reports' failures.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.core.conftest import needs_mosquitto

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
HIL = "import sys; from hil.cli import main; sys.exit(main())"  # the `hil` console script
PASSWORD = "Rec-5ecret-91c2e4"
FAILING = "test_suites/test_echo.py::test_echo_answers_plaintext_then_prefixed_ciphertext"
PASSING = "test_suites/test_recovery.py::test_recovers_after_power_cut[short]"
RUN_KEYS = {
    "schema", "rig", "profile", "hil_version", "firmware", "device", "host", "started", "ended",
    "suites_revision", "suites_dirty", "outcome", "counts", "tests",
}  # fmt: skip
TEST_KEYS = {"nodeid", "suite", "outcome", "duration_s", "started", "ended", "folder", "message"}
FIRMWARE_KEYS = {
    "version", "sha256", "project", "idf_version", "build_date", "build_time", "path", "method",
    "written",
}  # fmt: skip

QUIET_RIG = """
[rig]
name = "quiet"
[console]
driver = "serial"
port = "/dev/hil-test-no-such-console"
reappear_s = 0.5
[broker]
driver = "embedded"
[limits]
boot_s = 2.0
"""


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
    ).stdout


def sha256sum(path: Path) -> str:
    out = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def junit_properties(path: Path) -> dict[str, str]:
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    return {p.get("name"): p.get("value") for p in suite.findall("properties/property")}


def aware(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None, f"{text} has no time zone"
    return moment


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> SimpleNamespace:
    """Two suite tests on the virtual rig: the echo fails (the twin drops the prefix)."""
    folder = tmp_path_factory.mktemp("real-run")
    rig = folder / "sim.toml"
    text = (ROOT / "rigs" / "sim.toml").read_text()
    text = text.replace("[sim]\n", '[sim]\nfaults = ["echo_no_prefix"]\n', 1)
    text = text.replace(
        'driver = "auto"',
        'driver = "mosquitto"\nusername = "ESP32"\npassword_env = "HIL_TEST_RECORD_PW"',
    )
    rig.write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env |= {"HIL_TEST_RECORD_PW": PASSWORD, "HIL_LOCK_DIR": str(folder / "locks")}
    head_before = git("rev-parse", "HEAD").strip()
    command = [sys.executable, "-c", HIL, "run", "--rig", str(rig), "-p", "no:cacheprovider"]
    command += ["--hil-artifacts", "art", "--junitxml", "junit.xml", "--metrics", "run.prom"]
    command += ["-k", "seed_test_message or (power_cut and short)"]
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=180)
    return SimpleNamespace(
        folder=folder,
        rig=rig,
        art=folder / "art",
        done=done,
        run=json.loads((folder / "art" / "run.json").read_text()),
        heads={head_before, git("rev-parse", "HEAD").strip()},
    )


@needs_mosquitto
def test_run_json_holds_the_facts_of_the_run(real_run) -> None:
    run = real_run.run
    assert real_run.done.returncode == 1, real_run.done.stdout[-3000:]
    assert set(run) == RUN_KEYS and run["schema"] == 1
    assert run["rig"] == {
        "name": "virtual",
        "file": str(real_run.rig.resolve()),
        "sha256": sha256sum(real_run.rig),
        "kind": "virtual",
    }
    assert run["profile"] == "reference"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert run["hil_version"] == pyproject["project"]["version"]
    assert set(run["firmware"]) == FIRMWARE_KEYS
    assert run["firmware"]["version"] == "1.0.0"  # the rig's [sim] firmware_version
    device = run["device"]
    assert device["online_version"] == "1.0.0" and device["means"] == "board power cycle"
    assert device["boot_reason"] and 0 < device["bringup_s"] < 30
    assert run["host"] == socket.gethostname()
    assert aware(run["started"]) < aware(run["ended"])
    assert run["suites_revision"] in real_run.heads
    assert isinstance(run["suites_dirty"], bool)
    assert run["outcome"] == "failed"
    assert run["counts"] == {"passed": 1, "failed": 1, "error": 0, "skipped": 0}


@needs_mosquitto
def test_every_test_has_its_folder_with_result_json_in_run_order(real_run) -> None:
    tests = real_run.run["tests"]
    junit = ET.parse(real_run.folder / "junit.xml").getroot().iter("testcase")
    ran = [f"{case.get('classname').replace('.', '/')}.py::{case.get('name')}" for case in junit]
    assert [t["nodeid"] for t in tests] == ran == [f"{FAILING}[seed_test_message]", PASSING]
    folders = [t["folder"] for t in tests]
    assert folders == sorted(folders) and folders[0].startswith("0001-")
    for entry in tests:
        assert set(entry) == TEST_KEYS
        result = json.loads((real_run.art / entry["folder"] / "result.json").read_text())
        assert {k: v for k, v in result.items() if k != "longrepr"} == entry
        assert aware(entry["started"]) <= aware(entry["ended"]) and entry["duration_s"] > 0
    failed, passed = tests
    assert failed["suite"] == "test_echo" and failed["outcome"] == "failed"
    assert failed["message"].startswith("AssertionError: the second answer must be the prefixed")
    longrepr = json.loads((real_run.art / failed["folder"] / "result.json").read_text())["longrepr"]
    assert "assert 'Test Message' == 'ESP32_Test Message'" in longrepr
    assert passed["outcome"] == "passed" and passed["message"] is None
    assert (real_run.art / passed["folder"] / "measurements.json").is_file()
    assert (real_run.art / passed["folder"] / "console.log").is_file()


@needs_mosquitto
def test_junit_testsuite_properties_say_the_same(real_run) -> None:
    run = real_run.run
    props = junit_properties(real_run.folder / "junit.xml")
    assert props["hil.rig"] == "virtual"
    assert props["hil.rig_sha256"] == sha256sum(real_run.rig)
    assert props["hil.firmware.version"] == "1.0.0"
    assert props["hil.device.boot_reason"] == run["device"]["boot_reason"]
    assert props["hil.started"] == run["started"] and props["hil.ended"] == run["ended"]
    assert props["hil.suites_revision"] == run["suites_revision"]
    assert props["hil.suites_dirty"] == str(run["suites_dirty"]).lower()
    assert props["hil.version"] == run["hil_version"] and props["hil.host"] == run["host"]
    assert "hil.firmware.sha256" not in props  # not known without --firmware: left out


@needs_mosquitto
def test_the_run_is_added_to_history_metrics_and_report(real_run) -> None:
    out = real_run.done.stdout
    art = real_run.art
    assert f"hil: report {Path('art') / 'report.html'}" in out, out[-2000:]
    assert (art / "report.html").is_file() and (art / "history.sqlite").is_file()
    assert (real_run.folder / "run.prom").read_text().endswith("# EOF\n")
    assert "not updated" not in out and "not written" not in out


@needs_mosquitto
def test_no_secret_in_the_records(real_run) -> None:
    files = [real_run.folder / "junit.xml", *real_run.art.rglob("*")]
    texts = [real_run.done.stdout, real_run.done.stderr]
    texts += [p.read_bytes().decode("utf-8", "replace") for p in files if p.is_file()]
    assert not [text for text in texts if PASSWORD in text]


PHASES = """
import pytest

pytestmark = pytest.mark.hil

@pytest.fixture
def broken_setup():
    raise RuntimeError("relay board not found")

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("relay left on")

def test_passes():
    pass

def test_fails():
    assert 1 == 2, "the device said two"

def test_setup_errors(broken_setup):
    pass

def test_teardown_errors(broken_teardown):
    pass

def test_fails_and_teardown_errors(broken_teardown):
    raise AssertionError("first the call")

def test_skips():
    pytest.skip("needs a second modem")

@pytest.mark.xfail(reason="known firmware bug")
def test_expected_failure():
    raise AssertionError("still there")
"""


QUICK = ["-p", "no:hypothesispytest", "--no-hil-report"]  # plugins these runs do not need
ONE_TEST = "import pytest\n\n@pytest.mark.hil\ndef test_x():\n    pass\n"


def run_quiet(pytester, source: str, *args: str, **kwargs):
    """`source` against a rig that is never brought up unless a test asks for it."""
    (pytester.path / "rig.toml").write_text(QUIET_RIG)
    pytester.makepyfile(test_inner=source)
    return pytester.runpytest(
        "--rig", "rig.toml", "--hil-artifacts", "art", *QUICK, *args, **kwargs
    )


def results(pytester) -> tuple[dict, dict[str, dict]]:
    run = json.loads((pytester.path / "art" / "run.json").read_text())
    by_name = {}
    for entry in run["tests"]:
        by_name[entry["nodeid"].split("::")[-1]] = json.loads(
            (pytester.path / "art" / entry["folder"] / "result.json").read_text()
        )
    return run, by_name


def test_each_phase_ends_in_the_outcome_pytest_gives_it(pytester) -> None:
    outcome = run_quiet(pytester, PHASES, "--junitxml", "out.xml")
    outcome.assert_outcomes(passed=2, failed=2, errors=3, skipped=1, xfailed=1)
    run, tests = results(pytester)
    assert {name: t["outcome"] for name, t in tests.items()} == {
        "test_passes": "passed",
        "test_fails": "failed",
        "test_setup_errors": "error",
        "test_teardown_errors": "error",
        "test_fails_and_teardown_errors": "failed",
        "test_skips": "skipped",
        "test_expected_failure": "skipped",
    }
    assert run["counts"] == {"passed": 1, "failed": 2, "error": 2, "skipped": 2}
    assert run["outcome"] == "failed"
    assert tests["test_fails"]["message"] == "AssertionError: the device said two"
    assert tests["test_setup_errors"]["message"] == "RuntimeError: relay board not found"
    assert tests["test_teardown_errors"]["message"] == "RuntimeError: relay left on"
    both = tests["test_fails_and_teardown_errors"]
    assert both["message"] == "AssertionError: first the call"
    assert "--- call ---" in both["longrepr"] and "relay left on" in both["longrepr"]
    assert tests["test_skips"]["message"] == "needs a second modem"
    assert tests["test_passes"]["longrepr"] is None
    assert run["suites_revision"] is None and run["suites_dirty"] is None  # not a repository
    assert junit_properties(pytester.path / "out.xml")["hil.rig"] == "quiet"


def test_an_interrupted_run_says_so_and_keeps_what_ran(pytester) -> None:
    source = """
import pytest
pytestmark = pytest.mark.hil

def test_first():
    pass

def test_cut_short():
    raise KeyboardInterrupt

def test_never_reached():
    pass
"""
    outcome = run_quiet(pytester, source, no_reraise_ctrlc=True)
    assert outcome.ret == pytest.ExitCode.INTERRUPTED
    run, tests = results(pytester)
    assert run["outcome"] == "interrupted"
    assert list(tests) == ["test_first", "test_cut_short"]
    assert tests["test_cut_short"]["outcome"] == "error"
    assert tests["test_cut_short"]["message"].startswith("interrupted while running")


DEVICE_TESTS = """
import pytest
pytestmark = [pytest.mark.hil, pytest.mark.asyncio(loop_scope="session")]

@pytest.mark.parametrize("n", range(5))
async def test_recovers(dut, n):
    pass
"""


def test_tests_of_a_rig_that_never_came_up_each_have_a_folder_saying_why(pytester) -> None:
    outcome = run_quiet(pytester, DEVICE_TESTS)
    outcome.assert_outcomes(errors=5)
    run, tests = results(pytester)
    assert run["outcome"] == "error" and run["counts"]["error"] == 5
    assert set(run["device"].values()) == {None} and run["firmware"]["version"] is None
    assert len(tests) == 5
    for result in tests.values():
        assert result["outcome"] == "error"
        assert "RigDown" in result["message"], result["message"]
    first = tests["test_recovers[0]"]
    assert "/dev/hil-test-no-such-console" in first["longrepr"]


def test_the_firmware_a_run_wrote_is_recorded(pytester) -> None:
    pytester.makeconftest(
        """
from hil.firmware import FIRMWARE_KEY, FirmwareFacts

def pytest_collection_finish(session):
    session.config.stash[FIRMWARE_KEY] = FirmwareFacts(
        path="/builds/app.bin", version="2.1.0", sha256="ab" * 32, project="echo-fw",
        idf_version="v5.2.1", build_date="May  1 2024", build_time="12:00:00",
        method="serial", written=True,
    )
"""
    )
    run_quiet(pytester, ONE_TEST, "--junitxml", "out.xml")
    run, _ = results(pytester)
    assert run["firmware"] == {
        "path": "/builds/app.bin",
        "version": "2.1.0",
        "sha256": "ab" * 32,
        "project": "echo-fw",
        "idf_version": "v5.2.1",
        "build_date": "May  1 2024",
        "build_time": "12:00:00",
        "method": "serial",
        "written": True,
    }
    props = junit_properties(pytester.path / "out.xml")
    assert props["hil.firmware.project"] == "echo-fw"
    assert props["hil.firmware.build_time"] == "12:00:00"
    assert props["hil.firmware.written"] == "true"


def test_a_run_without_hil_tests_writes_no_run_folder(pytester) -> None:
    (pytester.path / "rig.toml").write_text(QUIET_RIG)
    pytester.makepyfile(test_unit="def test_unit():\n    pass\n")
    pytester.runpytest("--rig", "rig.toml", *QUICK).assert_outcomes(passed=1)
    pytester.makepyfile(test_unit=ONE_TEST)
    pytester.runpytest(*QUICK).assert_outcomes(passed=1)  # no rig file at all
    assert not (pytester.path / "hil-artifacts").exists()


def test_history_beside_the_run_folders_and_failures_there_leave_the_exit_status(pytester):
    (pytester.path / "rig.toml").write_text(QUIET_RIG)
    pytester.makepyfile(test_inner=ONE_TEST)
    pytester.runpytest("--rig", "rig.toml", *QUICK).assert_outcomes(passed=1)
    [run_dir] = [p for p in (pytester.path / "hil-artifacts").iterdir() if p.is_dir()]
    assert (run_dir / "run.json").is_file()
    assert (pytester.path / "hil-artifacts" / "history.sqlite").is_file()

    (pytester.path / "not-a-history").write_text("plain text")
    (pytester.path / "a-file").write_text("")
    outcome = pytester.runpytest(
        "--rig",
        "rig.toml",
        "--history",
        "not-a-history",
        "--metrics",
        "a-file/run.prom",
        QUICK[0],
        QUICK[1],
    )
    assert outcome.ret == pytest.ExitCode.OK
    outcome.assert_outcomes(passed=1)
    history = [line for line in outcome.outlines if line.startswith("hil: history not updated")]
    metrics = [line for line in outcome.outlines if line.startswith("hil: metrics not written")]
    assert len(history) == 1 and "not-a-history" in history[0], outcome.outlines[-8:]
    assert len(metrics) == 1, outcome.outlines[-8:]
    assert any(line.startswith("hil: report ") for line in outcome.outlines)
