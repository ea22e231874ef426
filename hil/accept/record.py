"""The acceptance record: every run's verdicts and measurements, and whether the release passed.

It is built from the run folders `hil run` left (their `run.json`, and each test's
`measurements.json`), never from what the runs printed, so the record says exactly what the
artifacts say. A release passes only if every run passed having run at least one test, and
every run tested the same firmware on the same rig file; `reasons` says why when it did not.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = 1
RECORD_NAME = "acceptance.json"
RUN_JSON = "run.json"
MEASUREMENTS = "measurements.json"
FIRMWARE_FACTS = ("version", "sha256", "project", "idf_version", "build_date", "build_time")
COUNTS = ("passed", "failed", "error", "skipped")


@dataclass(frozen=True)
class RigFacts:
    """The rig file the acceptance was started with."""

    name: str
    sha256: str
    kind: str  # "virtual" or "hardware"

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "sha256": self.sha256, "kind": self.kind}


@dataclass(frozen=True)
class Selection:
    """Which tests the runs were asked for: the full suites, or what pytest was told."""

    pytest_args: tuple[str, ...]
    pytest_addopts: str | None  # PYTEST_ADDOPTS, which the runs see too

    @property
    def full_suites(self) -> bool:
        return not self.pytest_args and not self.pytest_addopts

    def as_json(self) -> dict[str, Any]:
        return {
            "full_suites": self.full_suites,
            "pytest_args": list(self.pytest_args),
            "pytest_addopts": self.pytest_addopts,
        }


@dataclass(frozen=True)
class RunResult:
    """One `hil run` as the runner saw it: its folder, exit status and wall-clock times."""

    index: int  # from 1
    folder: Path
    exit_status: int
    started: str
    ended: str


def read_run_json(folder: Path) -> dict[str, Any] | None:
    """The run's run.json, or None when the run wrote none (or an unreadable one)."""
    try:
        data = json.loads((folder / RUN_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_entry(result: RunResult, run: dict[str, Any] | None) -> dict[str, Any]:
    """What the record keeps of one run, from its folder and its run.json (None: it wrote none)."""
    entry: dict[str, Any] = {
        "folder": result.folder.name,
        "exit_status": result.exit_status,
        "run_json": run is not None,
    }
    if run is None:
        return entry | {
            "started": result.started,
            "ended": result.ended,
            "outcome": "error",
            "counts": dict.fromkeys(COUNTS, 0),
            "rig_sha256": None,
            "firmware": None,
            "device": None,
            "suites_revision": None,
            "suites_dirty": None,
            "tests": [],
        }
    firmware = run.get("firmware") or {}
    device = run.get("device") or {}
    counts = run.get("counts") or {}
    return entry | {
        "started": run.get("started"),
        "ended": run.get("ended"),
        "outcome": run.get("outcome"),
        "counts": {name: int(counts.get(name, 0)) for name in COUNTS},
        "rig_sha256": (run.get("rig") or {}).get("sha256"),
        "firmware": {name: firmware.get(name) for name in (*FIRMWARE_FACTS, "method", "written")},
        "device": {name: device.get(name) for name in ("online_version", "boot_reason")},
        "suites_revision": run.get("suites_revision"),
        "suites_dirty": run.get("suites_dirty"),
        "tests": [result_entry(result.folder, test) for test in run.get("tests") or []],
    }


def result_entry(root: Path, test: dict[str, Any]) -> dict[str, Any]:
    """One test's verdict and measurements; its folder is named relative to the run's root."""
    folder = test.get("folder")
    return {
        "nodeid": test.get("nodeid"),
        "outcome": test.get("outcome"),
        "duration_s": test.get("duration_s"),
        "message": test.get("message"),
        "measurements": read_measurements(root / folder) if folder else [],
    }


def read_measurements(folder: Path) -> list[dict[str, Any]]:
    """A test's measurements.json, values that JSON cannot carry (NaN, infinities) as null."""
    try:
        items = json.loads((folder / MEASUREMENTS).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        return [{"name": MEASUREMENTS, "error": f"unreadable: {exc}"}]
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        return [{"name": MEASUREMENTS, "error": "not a list of measurements"}]
    return [{key: _finite(value) for key, value in item.items()} for item in items]


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def verdict(
    runs: list[dict[str, Any]], rig: RigFacts, firmware_given: bool
) -> tuple[bool, list[str]]:
    """Whether the release passed, and every reason it did not."""
    reasons = []
    for n, run in enumerate(runs, 1):
        counts = run["counts"]
        if not run["run_json"]:
            reasons.append(f"run {n} left no run.json (hil run exited {run['exit_status']})")
            continue
        if run["outcome"] != "passed":
            tally = ", ".join(f"{counts[name]} {name}" for name in COUNTS)
            reasons.append(f"run {n} {run['outcome']} ({tally})")
        elif run["exit_status"] != 0:
            reasons.append(f"run {n}: hil run exited {run['exit_status']}")
        if counts["passed"] == 0 and run["outcome"] == "passed":
            reasons.append(f"run {n} ran no test")
        if run["rig_sha256"] != rig.sha256:
            reasons.append(
                f"run {n} used a rig file with sha256 {run['rig_sha256']}, not {rig.sha256}: it "
                "changed during the acceptance"
            )
        if firmware_given and not run["firmware"]["sha256"]:
            reasons.append(f"run {n} recorded no firmware sha256, though --firmware was given")
    tested = {
        (run["firmware"]["sha256"], run["firmware"]["version"]) for run in runs if run["run_json"]
    }
    if len(tested) > 1:
        shown = ", ".join(
            f"run {n}: {run['firmware']['version']} sha256 {run['firmware']['sha256']}"
            for n, run in enumerate(runs, 1)
            if run["run_json"]
        )
        reasons.append(f"the runs tested different firmware ({shown})")
    return not reasons, reasons


def build_record(
    results: list[RunResult],
    *,
    rig: RigFacts,
    selection: Selection,
    repeat: int,
    firmware_given: bool,
    created: str,
    hil_version: str,
) -> dict[str, Any]:
    """The unsigned record of `results`, the runs of one acceptance."""
    read = [read_run_json(result.folder) for result in results]
    runs = [run_entry(result, run) for result, run in zip(results, read, strict=True)]
    passed, reasons = verdict(runs, rig, firmware_given)
    first = next((run for run in read if run is not None), None) or {}
    firmware = first.get("firmware") or {}
    return {
        "schema": SCHEMA,
        "created": created,
        "hil_version": hil_version,
        "rig": rig.as_json(),
        "profile": first.get("profile"),
        "firmware": {name: firmware.get(name) for name in FIRMWARE_FACTS},
        "selection": selection.as_json(),
        "repeat": repeat,
        "runs": runs,
        "passed": passed,
        "reasons": reasons,
    }


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write `record` whole or not at all (a half-written record would read as tampered)."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, path)


def summary(record: dict[str, Any]) -> str:
    """One line: which firmware, on which rig, how many runs passed, who signed."""
    firmware = record.get("firmware") or {}
    version = firmware.get("version") or "(version unknown)"
    sha = firmware.get("sha256")
    rig = record.get("rig") or {}
    runs = record.get("runs") or []
    passed_runs = sum(1 for run in runs if run.get("outcome") == "passed")
    selection = record.get("selection") or {}
    tests = "the full suites" if selection.get("full_suites") else "a selection of the suites"
    signer = (record.get("signature") or {}).get("key_id")
    return (
        f"firmware {version} sha256 {sha[:16] + '…' if sha else 'unknown'} on "
        f"rig {rig.get('name')} ({rig.get('kind')}, rig file sha256 "
        f"{str(rig.get('sha256'))[:16]}…) passed {passed_runs}/{len(runs)} runs of {tests}"
        + (f", signed by key {signer}" if signer else "")
    )
