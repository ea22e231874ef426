"""`hil run`: which tests it hands pytest, from any folder, and that a run without hil tests fails.

The end-to-end cases run `hil run ... --co` in a subprocess: collect-only is fast and touches no
rig, and a separate process keeps the inner pytest apart from this one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hil
from hil import cli

ROOT = Path(__file__).resolve().parents[2]
SIM_RIG = ROOT / "rigs" / "sim.toml"
SUITES = ROOT / "test_suites"
HIL = "import sys; from hil.cli import main; sys.exit(main())"  # the `hil` console script


def hil_run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`hil run` in its own process, without this run's PYTEST_ADDOPTS or cache writes."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    return subprocess.run(
        [sys.executable, "-c", HIL, "run", *args, "-p", "no:cacheprovider"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def handed_to_pytest(monkeypatch, *argv: str) -> list[str]:
    """The arguments `hil run` gives pytest.main, without running it."""
    seen: list[list[str]] = []
    monkeypatch.setattr("pytest.main", lambda args, plugins=None: seen.append(args) or 0)
    assert cli.main(["run", *argv]) == 0
    return seen[0]


def adds_suites(args: list[str]) -> bool:
    return any(Path(a).name == "test_suites" for a in args)


@pytest.mark.parametrize(
    ("decoy", "extra", "suites_added"),
    [
        ("echo", ["-k", "echo"], True),
        ("out.xml", ["--junitxml", "out.xml"], True),
        ("out", ["--hil-artifacts", "out"], True),
        ("", ["-q", "-p", "no:cacheprovider", "-m", "not slow"], True),
        ("", [str(ROOT / "tests" / "core")], False),
        ("", [f"{SUITES}/test_echo.py::test_status_led_toggles_on_every_message"], False),
        # A path that does not exist is still a path: pytest says so, rather than run the suites.
        ("", ["missing_test.py"], False),
    ],
)
def test_only_pytests_positional_arguments_replace_the_suites(
    tmp_path, monkeypatch, decoy, extra, suites_added
) -> None:
    if decoy:
        (tmp_path / decoy).mkdir() if decoy == "out" else (tmp_path / decoy).touch()
    monkeypatch.chdir(tmp_path)
    args = handed_to_pytest(monkeypatch, "--rig", str(SIM_RIG), *extra)
    assert adds_suites(args) is suites_added
    assert args[:2] == ["--rig", str(SIM_RIG)]


def test_an_option_value_that_exists_on_disk_still_runs_the_suites(tmp_path) -> None:
    (tmp_path / "echo").touch()
    result = hil_run("--rig", str(SIM_RIG), "-k", "echo", "--co", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test_suites/test_echo.py::test_status_led_toggles_on_every_message" in result.stdout


def test_suites_are_found_from_the_rig_outside_the_repository_root(tmp_path) -> None:
    name = "test_device_connects_with_clean_session"
    result = hil_run("--rig", str(SIM_RIG), "-k", name, "--co", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"test_suites/test_broker_protocol.py::{name}_and_keepalive" in result.stdout


def test_suites_beside_the_installed_package_serve_a_rig_kept_elsewhere(
    tmp_path, monkeypatch
) -> None:
    rig = shutil.copy(SIM_RIG, tmp_path / "lab.toml")
    monkeypatch.chdir(tmp_path)
    assert str(SUITES) in handed_to_pytest(monkeypatch, "--rig", str(rig))


def test_no_suites_anywhere_is_an_error_naming_where_it_looked(
    tmp_path, monkeypatch, capsys
) -> None:
    rig = shutil.copy(SIM_RIG, tmp_path / "lab.toml")
    monkeypatch.setattr(hil, "__file__", str(tmp_path / "site" / "hil" / "__init__.py"))
    monkeypatch.setattr("pytest.main", lambda args, plugins=None: pytest.fail("pytest ran"))
    assert cli.main(["run", "--rig", str(rig)]) == pytest.ExitCode.USAGE_ERROR
    err = capsys.readouterr().err
    assert str(tmp_path) in err and str(tmp_path / "site" / "test_suites") in err
    assert "name the tests to run" in err


def test_a_run_of_tests_without_the_hil_marker_fails(tmp_path) -> None:
    result = hil_run(
        "--rig", str(SIM_RIG), str(ROOT / "tests/core/test_crypto.py"), "--co", "-q", cwd=tmp_path
    )
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "none of them marked hil" in result.stderr
    assert "tests/core/test_crypto.py::" in result.stderr


def test_a_missing_test_path_gets_pytests_own_error(tmp_path) -> None:
    result = hil_run("--rig", str(SIM_RIG), "missing_test.py", cwd=tmp_path)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "file or directory not found: missing_test.py" in result.stderr
    assert "hil run:" not in result.stderr


def test_a_run_that_deselects_every_test_fails(tmp_path) -> None:
    result = hil_run(
        "--rig", str(SIM_RIG), "-k", "nothing_matches_this", "--co", "-q", cwd=tmp_path
    )
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "no test selected" in result.stderr and "deselected" in result.stderr


def test_run_help_shows_its_own_options_then_pytests(tmp_path) -> None:
    result = hil_run("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.index("usage: hil run") < out.index("--rig") < out.index("-k EXPRESSION")
    assert "--hil-artifacts" in out
