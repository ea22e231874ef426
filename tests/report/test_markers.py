"""The suites' markers: `-m smoke` is one fast test per suite file, `-m "not slow"` a real subset.

Selections are read from pytest's own collection (`--collect-only`) and JUnit file, and the
smoke run really runs on the virtual rig, as merge CI does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from tests.core.conftest import needs_mosquitto

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
SUITES = ROOT / "test_suites"
SIM_RIG = ROOT / "rigs" / "sim.toml"

pytestmark = pytest.mark.repo_rig  # starts twins from the repository's rigs/sim.toml
HIL = "import sys; from hil.cli import main; sys.exit(main())"  # the `hil` console script


def hil_run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin"  # Debian's mosquitto, for the broker suite
    env["HIL_LOCK_DIR"] = str(cwd / "locks")
    return subprocess.run(
        [sys.executable, "-c", HIL, "run", "--rig", str(SIM_RIG), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def collected(pytester, *args: str) -> tuple[list[str], int]:
    """The suite tests pytest selects with `args`, and how many it collected in all."""
    result = pytester.runpytest(
        "--collect-only",
        "-q",
        "-p",
        "no:hypothesispytest",
        "--rig",
        str(SIM_RIG),
        str(SUITES),
        *args,
    )
    assert result.ret == 0, result.outlines[-20:]
    selected = [line for line in result.outlines if "::" in line]
    summary = next(line for line in reversed(result.outlines) if "collected" in line)
    return selected, int(summary.split()[0].split("/")[-1])


def test_smoke_selects_one_test_per_suite_file_and_not_slow_a_subset(pytester) -> None:
    suite_files = sorted(f"test_suites/{p.name}" for p in SUITES.glob("test_*.py"))
    smoke, total = collected(pytester, "-m", "smoke")
    assert sorted(Counter(node.split("::")[0] for node in smoke).items()) == [
        (name, 1) for name in suite_files
    ], smoke
    quick, _ = collected(pytester, "-m", "not slow")
    assert 0 < len(quick) < total
    assert set(smoke) <= set(quick)
    assert "test_suites/test_recovery.py::test_recovers_after_three_cuts_in_a_row" not in quick
    assert not (pytester.path / "hil-artifacts").exists()  # collecting is not a run


@needs_mosquitto
def test_smoke_run_passes_one_test_per_suite_file_on_the_virtual_rig(tmp_path) -> None:
    junit = tmp_path / "smoke.xml"
    done = hil_run(
        "-m", "smoke", "-q", "-p", "no:cacheprovider", "--junitxml", str(junit), cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout[-3000:]
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    files = Counter(case.get("classname") for case in cases)
    assert sorted(files.items()) == [
        (f"test_suites.{p.stem}", 1) for p in sorted(SUITES.glob("test_*.py"))
    ]
    verdicts = [child for case in cases for child in case if child.tag != "properties"]
    assert not {"failure", "error"} & {v.tag for v in verdicts}, done.stdout[-3000:]
    # rigs/sim.toml has no TLS: only a suite that needs what the rig lacks may skip, saying so
    skips = [v.get("message", "") for v in verdicts if v.tag == "skipped"]
    assert all("needs tls: rig 'virtual' lacks it" in m for m in skips), skips
    assert len(skips) <= 1, skips


def test_the_markers_are_known_to_a_lab_project_with_strict_markers(pytester) -> None:
    pytester.makepyfile(
        test_lab="""
import pytest

@pytest.mark.smoke
def test_quick():
    pass

@pytest.mark.slow
def test_long():
    pass
"""
    )
    result = pytester.runpytest("--strict-markers", "-m", "not slow", "-p", "no:hypothesispytest")
    result.assert_outcomes(passed=1, deselected=1)
    result = pytester.runpytest("--markers", "-p", "no:hypothesispytest")
    result.stdout.fnmatch_lines(["@pytest.mark.smoke: one fast test per suite*"])
    result.stdout.fnmatch_lines(["@pytest.mark.slow: *"])
