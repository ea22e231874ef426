"""The record built from run folders: every verdict and measurement as the artifacts hold
them, and a release that passes only when every run passed on the same firmware and rig."""

from __future__ import annotations

import json
import math
from pathlib import Path

from hil.accept.record import Selection, summary
from tests.accept.conftest import (
    FIRMWARE_SHA,
    RIG,
    case,
    echo_latency,
    passing_tests,
    record_of,
    write_run,
)


def test_the_record_carries_every_verdict_and_measurement_of_every_run(
    passing_runs: list[Path],
) -> None:
    record = record_of(passing_runs)

    assert record["passed"] is True and record["reasons"] == []
    assert record["schema"] == 1 and record["repeat"] == 2 and record["profile"] == "reference"
    assert record["rig"] == {"name": RIG.name, "sha256": RIG.sha256, "kind": "hardware"}
    assert record["firmware"] == {
        "version": "1.2.0",
        "sha256": FIRMWARE_SHA,
        "project": "echo-fw",
        "idf_version": "v5.2.1",
        "build_date": "Jan  4 2026",
        "build_time": "17:02:11",
    }
    assert record["selection"] == {"full_suites": True, "pytest_args": [], "pytest_addopts": None}
    assert [run["folder"] for run in record["runs"]] == ["run-1", "run-2"]
    for folder, run in zip(passing_runs, record["runs"], strict=True):
        written = json.loads((folder / "run.json").read_text())
        assert run["outcome"] == "passed" and run["counts"] == written["counts"]
        assert [t["nodeid"] for t in run["tests"]] == [t["nodeid"] for t in written["tests"]]
        assert [t["duration_s"] for t in run["tests"]] == [0.25, 0.5, 0.75, 1.0]
        for test, entry in zip(run["tests"], written["tests"], strict=True):
            on_disk = folder / entry["folder"] / "measurements.json"
            expected = json.loads(on_disk.read_text()) if on_disk.exists() else []
            assert test["measurements"] == expected
    assert record["runs"][0]["tests"][2]["measurements"][0]["unit"] == "kB/s"
    assert record["runs"][0]["firmware"]["written"] is True
    assert record["runs"][0]["suites_revision"] == "0123abcd" * 5


def test_one_failed_run_fails_the_release_and_says_which(tmp_path: Path) -> None:
    failing = passing_tests()
    failing[1] = case(failing[1]["nodeid"], "failed", [echo_latency(7.5)])
    runs = [
        write_run(tmp_path / "run-1", passing_tests()),
        write_run(tmp_path / "run-2", failing),
        write_run(tmp_path / "run-3", passing_tests()),
    ]

    record = record_of(runs, statuses=[0, 1, 0])

    assert record["passed"] is False
    assert record["reasons"] == ["run 2 failed (3 passed, 1 failed, 0 error, 0 skipped)"]
    test = record["runs"][1]["tests"][1]
    assert test["outcome"] == "failed" and test["message"].startswith("AssertionError")
    assert test["measurements"][0]["value"] == 7.5 and test["measurements"][0]["passed"] is False
    assert "passed 2/3 runs" in summary(record)


def test_a_run_that_tested_nothing_fails_the_release(tmp_path: Path) -> None:
    skipped = [case("test_suites/test_recovery.py::test_cut", "skipped")]
    runs = [write_run(tmp_path / "run-1", passing_tests()), write_run(tmp_path / "run-2", skipped)]

    record = record_of(runs)

    assert record["passed"] is False
    assert record["reasons"] == ["run 2 ran no test"]


def test_runs_on_different_firmware_fail_the_release(tmp_path: Path) -> None:
    other = "9" * 64
    runs = [
        write_run(tmp_path / "run-1", passing_tests()),
        write_run(tmp_path / "run-2", passing_tests(), firmware_sha=other),
    ]

    record = record_of(runs)

    assert record["passed"] is False
    assert record["reasons"] == [
        f"the runs tested different firmware (run 1: 1.2.0 sha256 {FIRMWARE_SHA}, "
        f"run 2: 1.2.0 sha256 {other})"
    ]


def test_firmware_named_by_the_device_only_passes_without_firmware_given(tmp_path: Path) -> None:
    """Without --firmware the runs know the version the device reported, not an image hash;
    with --firmware, a run that recorded no hash did not test the image it was given."""
    runs = [write_run(tmp_path / f"run-{n}", passing_tests(), firmware_sha=None) for n in (1, 2)]

    assert record_of(runs, firmware_given=False)["passed"] is True
    given = record_of(runs, firmware_given=True)
    assert given["passed"] is False
    assert given["reasons"][0] == "run 1 recorded no firmware sha256, though --firmware was given"
    assert "firmware 1.2.0 sha256 unknown" in summary(given)

    moved = write_run(
        tmp_path / "run-3", passing_tests(), firmware_sha=None, firmware_version="1.3"
    )
    mixed = record_of([runs[0], moved], firmware_given=False)
    assert mixed["passed"] is False and "different firmware" in mixed["reasons"][0]


def test_a_run_without_run_json_and_a_changed_rig_file_fail_the_release(tmp_path: Path) -> None:
    crashed = tmp_path / "run-2"
    crashed.mkdir()
    runs = [
        write_run(tmp_path / "run-1", passing_tests(), rig_sha="f" * 64),
        crashed,
        write_run(tmp_path / "run-3", passing_tests(), outcome="interrupted"),
    ]

    record = record_of(runs, statuses=[0, 3, 2])

    assert record["passed"] is False
    assert record["reasons"] == [
        f"run 1 used a rig file with sha256 {'f' * 64}, not {RIG.sha256}: it changed during "
        "the acceptance",
        "run 2 left no run.json (hil run exited 3)",
        "run 3 interrupted (4 passed, 0 failed, 0 error, 0 skipped)",
    ]
    assert record["runs"][1]["outcome"] == "error" and record["runs"][1]["tests"] == []
    assert record["runs"][1]["started"] == "2026-01-05T10:00:00+01:00"  # the runner's clock


def test_values_json_cannot_carry_become_null(tmp_path: Path) -> None:
    """A throughput of inf (a zero-length transfer) must not make the record unsignable."""
    odd = [{"name": "throughput", "value": math.inf, "unit": "kB/s", "low": 1.0, "high": None,
            "passed": True}]  # fmt: skip
    folder = write_run(tmp_path / "run-1", [case("test_suites/test_ota.py::test_x", "passed")])
    (next(folder.glob("0001-*")) / "measurements.json").write_text(json.dumps(odd))

    record = record_of([folder])

    assert record["runs"][0]["tests"][0]["measurements"][0]["value"] is None
    json.dumps(record, allow_nan=False)  # raises on NaN or infinities


def test_the_selection_is_recorded() -> None:
    chosen = Selection(("-k", "echo"), "-m smoke")

    assert chosen.full_suites is False
    assert chosen.as_json() == {
        "full_suites": False,
        "pytest_args": ["-k", "echo"],
        "pytest_addopts": "-m smoke",
    }
    assert Selection((), "-m smoke").full_suites is False
