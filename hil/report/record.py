"""What a run tested and how it went: `run.json` at the run folder, `result.json` per test.

One `RunRecord` per run gathers the facts as they become known (the rig at the start, each
test's pytest reports as it ends, the firmware and the device's bring-up at the end) and
writes them in the run.json contract (schema 1). `junit_properties` gives the same facts as
JUnit testsuite properties, so CI and the report read one story. No secret is ever a fact:
the rig is named by its file's hash, never by its broker credentials.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from hil.bringup import Online
from hil.firmware import FirmwareFacts
from hil.rig import Rig

SCHEMA = 1
RUN_FILE = "run.json"
RESULT_FILE = "result.json"
OUTCOMES = ("passed", "failed", "error", "skipped")
GIT_TIMEOUT_S = 10.0
FIRMWARE_FIELDS = [f.name for f in dataclasses.fields(FirmwareFacts)]


def iso(timestamp: float) -> str:
    """A `time.time()` value as ISO 8601 in local time, with its offset."""
    return datetime.fromtimestamp(timestamp).astimezone().isoformat()


def outcome_of(reports: Sequence[pytest.TestReport]) -> str:
    """The test's one outcome from its phase reports, as pytest's summary counts it.

    A failed setup or teardown is an error, a failed call a failure (a rig error raised in the
    call is reported as setup by the hil plugin, so it is an error too); the first failing
    phase decides. A skip, or an expected failure, is skipped.
    """
    for report in reports:
        if report.failed:
            return "failed" if report.when == "call" else "error"
    return "skipped" if any(report.skipped for report in reports) else "passed"


def _first_line(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return report.longrepr[2].removeprefix("Skipped: ")  # (path, line, reason)
    crash = getattr(report.longrepr, "reprcrash", None)
    text = getattr(crash, "message", None) or report.longreprtext
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _failure_text(reports: Sequence[pytest.TestReport]) -> str | None:
    failed = [report for report in reports if report.failed]
    if len(failed) == 1:
        return failed[0].longreprtext
    texts = [f"--- {report.when} ---\n{report.longreprtext}" for report in failed]
    return "\n\n".join(texts) or None


def build_result(
    nodeid: str,
    suite: str,
    folder: str | None,
    reports: Sequence[pytest.TestReport],
    span: tuple[float, float],
    interrupted: str | None = None,
) -> dict[str, Any]:
    """A test's result.json: its run.json entry plus `longrepr`, the failure text in full.

    `span` is when pytest started and finished running the test; the reports' own times are
    used where they exist. An `interrupted` test (Ctrl-C, SIGTERM) is an error saying so.
    """
    started = reports[0].start if reports else span[0]
    ended = reports[-1].stop if reports else span[1]
    outcome = outcome_of(reports)
    shown = next((r for r in reports if r.failed), None) or next(
        (r for r in reports if r.skipped), None
    )
    message = _first_line(shown) if shown else None
    longrepr = _failure_text(reports)
    if interrupted:
        outcome, message = "error", interrupted
        longrepr = "\n\n".join(filter(None, [longrepr, interrupted]))
    return {
        "nodeid": nodeid,
        "suite": suite,
        "outcome": outcome,
        "duration_s": round(sum(r.duration for r in reports) if reports else ended - started, 3),
        "started": iso(started),
        "ended": iso(ended),
        "folder": folder,
        "message": message,
        "longrepr": longrepr,
    }


def file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def rig_facts(rig: Rig) -> dict[str, Any]:
    return {
        "name": rig.name,
        "file": str(rig.path),
        "sha256": file_sha256(rig.path),
        "kind": "virtual" if rig.sim else "hardware",
    }


def firmware_facts(facts: FirmwareFacts | None, online: Online | None) -> dict[str, Any]:
    """What `--firmware` put on the device; without it, only the version the device told."""
    if facts is not None:
        return dataclasses.asdict(facts)
    found = dict.fromkeys(FIRMWARE_FIELDS)
    found["version"] = online.version if online else None
    return found


def device_facts(online: Online | None) -> dict[str, Any]:
    if online is None:
        return {"online_version": None, "boot_reason": None, "means": None, "bringup_s": None}
    return {
        "online_version": online.version,
        "boot_reason": online.boot_reason,
        "means": online.means,
        "bringup_s": round(online.seconds, 3),
    }


def _git(folder: Path, *args: str) -> str | None:
    # No optional locks: a report must not take the index lock from someone working in the tree.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            env=env,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def suites_revision(folder: Path) -> tuple[str | None, bool | None]:
    """The commit the suites' repository is at, and whether its tree differs from it.

    (None, None) outside a repository, without git, or in one with no commit yet.
    """
    head = _git(folder, "rev-parse", "HEAD")
    if not head:
        return None, None
    status = _git(folder, "status", "--porcelain")
    return head.strip(), None if status is None else bool(status.strip())


def run_outcome(exitstatus: int, counts: dict[str, int]) -> str:
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        return "interrupted"
    if counts["failed"]:
        return "failed"
    if counts["error"] or exitstatus != pytest.ExitCode.OK:
        return "error"
    return "passed"


def hil_version() -> str | None:
    try:
        return metadata.version("hil")
    except metadata.PackageNotFoundError:
        return None


def write_json(path: Path, doc: Any) -> Path:
    """Write `doc` to `path` in one step, so a reader never sees half of it."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


class RunRecord:
    """One run's facts, gathered while it runs; `finish` writes run.json."""

    def __init__(self, root: Path, rig: Rig, suites: Path, started: float) -> None:
        self.root = root
        self.rig = rig_facts(rig)  # hashed now: the file that was loaded, not a later edit
        self.profile = rig.profile.name
        self.suites = suites
        self.started = started
        self.tests: list[dict[str, Any]] = []

    def add_test(self, result: dict[str, Any]) -> None:
        """Keep a finished test's result; write its result.json when it has a folder."""
        if result["folder"] is not None:
            write_json(self.root / result["folder"] / RESULT_FILE, result)
        self.tests.append({key: value for key, value in result.items() if key != "longrepr"})

    def counts(self) -> dict[str, int]:
        return {outcome: sum(t["outcome"] == outcome for t in self.tests) for outcome in OUTCOMES}

    def finish(
        self, exitstatus: int, firmware: FirmwareFacts | None, online: Online | None
    ) -> dict[str, Any]:
        """The run.json document, written to the run folder."""
        revision, dirty = suites_revision(self.suites)
        counts = self.counts()
        run = {
            "schema": SCHEMA,
            "rig": self.rig,
            "profile": self.profile,
            "hil_version": hil_version(),
            "firmware": firmware_facts(firmware, online),
            "device": device_facts(online),
            "host": socket.gethostname(),
            "started": iso(self.started),
            "ended": iso(time.time()),
            "suites_revision": revision,
            "suites_dirty": dirty,
            "outcome": run_outcome(exitstatus, counts),
            "counts": counts,
            "tests": self.tests,
        }
        write_json(self.root / RUN_FILE, run)
        return run


def junit_properties(run: dict[str, Any]) -> list[tuple[str, str]]:
    """run.json's facts as JUnit testsuite properties (`hil.rig`, `hil.firmware.version`, ...).

    Facts that are not known (null) are left out.
    """
    rig = run["rig"]
    pairs: Iterable[tuple[str, Any]] = [
        ("hil.rig", rig["name"]),
        ("hil.rig_file", rig["file"]),
        ("hil.rig_sha256", rig["sha256"]),
        ("hil.rig_kind", rig["kind"]),
        ("hil.profile", run["profile"]),
        ("hil.version", run["hil_version"]),
        *((f"hil.firmware.{key}", value) for key, value in run["firmware"].items()),
        *((f"hil.device.{key}", value) for key, value in run["device"].items()),
        ("hil.host", run["host"]),
        ("hil.started", run["started"]),
        ("hil.ended", run["ended"]),
        ("hil.suites_revision", run["suites_revision"]),
        ("hil.suites_dirty", run["suites_dirty"]),
        ("hil.outcome", run["outcome"]),
    ]
    return [(name, _property_text(value)) for name, value in pairs if value is not None]


def _property_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
