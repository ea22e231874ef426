"""The pool's options as pytest takes them: `--each-rig` names each test by its rig (in JUnit
too, under xdist), needs xdist's loadgroup, and `--rig-wait` takes seconds. None of these runs
opens a rig."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.pool.conftest import plain_rig

pytest_plugins = ["pytester"]

SUITE = "import pytest\n\n@pytest.mark.hil\ndef test_on_rig(rig):\n    pass\n"


@pytest.fixture
def benches(pytester: pytest.Pytester) -> Path:
    folder = pytester.path / "benches"
    folder.mkdir()
    for name in ("bench-a", "bench-b"):
        (folder / f"{name}.toml").write_text(plain_rig(name))
    pytester.makepyfile(test_suite=SUITE)
    return folder


def test_each_rig_runs_a_rig_test_once_per_rig_its_id_ending_in_the_rigs_name(
    benches, pytester
) -> None:
    result = pytester.runpytest("--rig", benches, "--each-rig", "--collect-only", "-q")

    assert result.ret == pytest.ExitCode.OK
    assert [line for line in result.outlines if "::" in line] == [
        "test_suite.py::test_on_rig[bench-a]",
        "test_suite.py::test_on_rig[bench-b]",
    ]


def test_under_xdist_junit_names_each_rig_test_by_its_id_the_rig_once(benches, pytester) -> None:
    pytester.makepyfile(test_named="def test_named(hil_rig):\n    pass\n")  # no bring-up
    xml = pytester.path / "junit.xml"
    result = pytester.runpytest_subprocess(
        "-n", "2", "--rig", benches, "--each-rig", "-p", "no:cacheprovider", "-v",
        "--hil-artifacts", pytester.path / "run", "--junitxml", xml, "test_named.py",
    )  # fmt: skip

    assert result.ret == pytest.ExitCode.OK, result.outlines
    cases = {
        case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
        for case in ET.parse(xml).getroot().iter("testcase")
    }
    assert sorted(cases) == ["test_named[bench-a]", "test_named[bench-b]"]  # no `@bench-a`
    for name, properties in cases.items():
        assert properties["hil.rig"] == name[-8:-1]
    passed = sorted(line.split()[-1] for line in result.outlines if " PASSED " in line)
    assert passed == ["test_named.py::test_named[bench-a]", "test_named.py::test_named[bench-b]"]


def test_each_rig_with_another_dist_mode_is_refused_naming_loadgroup(benches, pytester) -> None:
    result = pytester.runpytest("--rig", benches, "--each-rig", "-n", "2", "--dist", "load")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert any(
        "--each-rig runs each rig's tests on the one worker holding that rig, which needs "
        "--dist loadgroup (the default with -n), not --dist load" in line
        for line in result.errlines
    ), result.errlines


def test_a_negative_rig_wait_is_refused(benches, pytester) -> None:
    result = pytester.runpytest("--rig", benches, "--rig-wait", "-1")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert any(
        "hil: --rig-wait -1: give the seconds to wait, 0 or more" in line
        for line in result.errlines
    ), result.errlines
