"""A run's measurements and verdicts in OpenMetrics text, for a lab's Prometheus.

`write_openmetrics` reads a finished run folder and writes one exposition: every measurement
as `hil_measurement` (its unit a label, since one family holds seconds and kB/s alike),
each test's verdict, the run's counts and duration, and `hil_run_info` naming what ran. The
text is the `prometheus_client` library's, so names and label values are escaped by it. The
info family is a gauge of value 1 rather than OpenMetrics' `info` type, so the file also
reads as Prometheus text format (node_exporter's textfile collector, `promtool check
metrics`).
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.openmetrics.exposition import generate_latest

from hil.report.history import OUTCOMES, RecordedRun, read_run


def write_openmetrics(run_dir: Path, out: Path) -> Path:
    """Write the run in `run_dir` to `out` as OpenMetrics text (ending `# EOF`) and return `out`.

    The file is replaced in one step, so a scraper never reads half of it. A broken run
    folder raises `hil.report.history.HistoryError` naming the file, and `out` is untouched.
    """
    text = generate_latest(_registry(read_run(run_dir)))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        partial.write_bytes(text)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def _registry(run: RecordedRun) -> CollectorRegistry:
    """The run as gauges. A name measured twice in one test keeps its last value; skipped
    tests have no `hil_test_passed`."""
    registry = CollectorRegistry()
    firmware = run.firmware_version or ""
    measurement = Gauge(
        "hil_measurement",
        "A value a test measured, in the unit its label names",
        ["rig", "test", "measurement", "unit", "firmware_version"],
        registry=registry,
    )
    passed = Gauge(
        "hil_test_passed",
        "1 if the test passed, 0 if it failed or errored",
        ["rig", "test", "firmware_version"],
        registry=registry,
    )
    for test in run.tests:
        for m in test.measurements:
            measurement.labels(run.rig, test.nodeid, m.name, m.unit, firmware).set(m.value)
        if test.outcome != "skipped":
            passed.labels(run.rig, test.nodeid, firmware).set(1 if test.outcome == "passed" else 0)
    tests = Gauge(
        "hil_run_tests", "Tests of the run by outcome", ["rig", "outcome"], registry=registry
    )
    counts = run.counts
    for outcome in OUTCOMES:
        tests.labels(run.rig, outcome).set(counts[outcome])
    if run.ended_ts is not None:
        duration = Gauge(
            "hil_run_duration",
            "Wall time of the run",
            ["rig"],
            unit="seconds",
            registry=registry,
        )
        duration.labels(run.rig).set(run.ended_ts - run.started_ts)
    info = Gauge(
        "hil_run_info",
        "What the run tested, in its labels; always 1",
        [
            "rig",
            "rig_sha256",
            "profile",
            "hil_version",
            "firmware_version",
            "firmware_sha256",
            "outcome",
        ],
        registry=registry,
    )
    info.labels(
        run.rig,
        run.rig_sha256 or "",
        run.profile or "",
        run.hil_version or "",
        firmware,
        run.firmware_sha256 or "",
        run.outcome,
    ).set(1)
    return registry
